"""The results tables of `selectivbench evaluate`: rows appended to `<out>.jsonl` and `<out>.csv`,
each file replaced whole, under a lock. An existing table is appended to only when this command
wrote it (`check_table_path`); any other file is left alone.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from ..errors import ParameterError
from ..files import check_writable, file_lock, replaced
from ..hub.dataset_records import check_outside_configs

FIELDS = ["model", "mixer", "config", "split", "seed", "noise_seed", "samples", "element_accuracy", "step_accuracy",
          "loss", "bayes_element_accuracy", "bayes_step_accuracy", "parameters", "elements", "steps"]


def check_table_path(out: str) -> None:
    """`out` names a table this command may write: `<out>.jsonl` and `<out>.csv` each new, or a
    table this command wrote (csv: its header is exactly FIELDS; jsonl: one or more lines, each a
    JSON object with exactly the FIELDS keys). Any other file is a user's and is never appended to."""
    out = os.fspath(out)
    base = Path(out)
    if out.replace(os.sep, "/").rsplit("/", 1)[-1] in ("", ".", ".."):  # as typed: Path("runs/.") is "runs"
        raise ParameterError(f"out={out!r} is invalid: allowed a table path ending in a file name (<out>.csv and "
                             "<out>.jsonl are written)")
    parent = base.parent
    if parent.exists() and not parent.is_dir():
        raise ParameterError(f"out={out!r} is invalid: allowed a path in a folder ({parent} is a file)")
    check_outside_configs(parent, "out")
    check_writable(parent, "out", out)
    for path, ours in zip(table_paths(out), (_our_jsonl, _our_csv)):
        if path.exists() and not path.is_file():
            raise ParameterError(f"out={out!r} is invalid: allowed a table path ({path} is not a file)")
        if path.exists() and not ours(path):
            raise ParameterError(f"out={out!r} is invalid: allowed a new table or one written by `selectivbench "
                                 f"evaluate` ({path} has other content: a file of yours is never appended to)")


def table_paths(out: str) -> tuple[Path, Path]:
    """`<out>.jsonl` and `<out>.csv`, the suffix added to the name as given (`eval.v2` gives
    `eval.v2.jsonl`, where Path.with_suffix would give `eval.jsonl`); a given .jsonl or .csv is replaced."""
    base = Path(out)
    if base.suffix in (".jsonl", ".csv"):
        base = base.with_suffix("")
    return base.parent / f"{base.name}.jsonl", base.parent / f"{base.name}.csv"


def _our_csv(path: Path) -> bool:
    with open(path, newline="", errors="replace") as f:
        return next(csv.reader(f), None) == FIELDS


def _our_jsonl(path: Path) -> bool:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    try:
        rows = [json.loads(line) for line in lines]
    except ValueError:
        return False
    return bool(rows) and all(isinstance(r, dict) and sorted(r) == sorted(FIELDS) for r in rows)


def append_rows(out: str, rows: list[dict]) -> None:
    """Rows added to both tables, each file replaced whole (old content + new rows) by a rename, so
    that it is the old table or the new one, never half; checked again first, since a file may have
    appeared while the models were scored. Under a lock on the tables' folder: two evaluations
    appending to one table at once would each read the old table, and the second rename would drop
    the first one's rows."""
    check_table_path(out)
    jsonl, csv_path = table_paths(out)
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(jsonl.parent, what="append to one table at a time"):  # the folder: no lock file beside the tables
        check_table_path(out)
        _append_unlocked(jsonl, csv_path, rows)


def _append_unlocked(jsonl: Path, csv_path: Path, rows: list[dict]) -> None:
    lines = io.StringIO()
    w = csv.DictWriter(lines, fieldnames=FIELDS, extrasaction="ignore")
    if not csv_path.exists():
        w.writeheader()
    w.writerows(rows)
    # both new versions written in full before either is renamed: a full disk leaves both tables as they were
    with replaced(jsonl) as new_jsonl, replaced(csv_path) as new_csv:
        for path, tmp, text in ((jsonl, new_jsonl, "".join(json.dumps(r) + "\n" for r in rows)),
                                (csv_path, new_csv, lines.getvalue())):
            tmp.write_bytes((path.read_bytes() if path.exists() else b"") + text.encode())
