"""The results tables of `selectivbench evaluate`: rows appended to `<out>.jsonl` and `<out>.csv`,
each file replaced whole, under a lock. An existing table is appended to only while it is as this
command wrote it: its sha256 is in the folder's `selectivbench_tables.json` (files.py's ownership
rule); a table edited since, or any other file, is left alone and the command refuses, naming it.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from ..errors import ParameterError
from ..files import check_writable, file_lock, is_ours, read_record, write_all_owned
from ..hub.dataset_records import check_outside_configs

FIELDS = ["model", "mixer", "config", "split", "seed", "noise_seed", "samples", "element_accuracy", "step_accuracy",
          "loss", "bayes_element_accuracy", "bayes_step_accuracy", "parameters", "elements", "steps"]
TABLES_RECORD = "selectivbench_tables.json"  # the sha256 of each table as written (files.py), beside them
TABLES_WRITER = "selectivbench evaluate"


def check_table_path(out: str) -> dict[str, list[str]]:
    """`out` names a table this command may write: `<out>.jsonl` and `<out>.csv` each new, or as this
    command wrote it (recorded). Any other file is a user's and is never appended to. Returns the
    record of the tables' folder: {name: [accepted sha256, ...]}."""
    check_table_location(out)
    parent = Path(out).parent
    refusal = f"out={os.fspath(out)!r} is invalid: allowed a new table or one written by `selectivbench evaluate`"
    record = read_record(parent / TABLES_RECORD, TABLES_WRITER, f"{refusal}, beside {TABLES_RECORD}, its record") or {}
    for path in table_paths(out):
        if path.exists() and not path.is_file():
            raise ParameterError(f"out={os.fspath(out)!r} is invalid: allowed a table path ({path} is not a file)")
        if not is_ours(path, record):
            raise ParameterError(f"{refusal} ({path} has other content than it wrote: a file of yours, or a table "
                                 "edited since, is never appended to)")
    return record


def check_table_location(out: str) -> None:
    """`out` is a table path in a folder that can be written, outside a generated config."""
    out = os.fspath(out)
    if out.replace(os.sep, "/").rsplit("/", 1)[-1] in ("", ".", ".."):  # as typed: Path("runs/.") is "runs"
        raise ParameterError(f"out={out!r} is invalid: allowed a table path ending in a file name (<out>.csv and "
                             "<out>.jsonl are written)")
    parent = Path(out).parent
    if parent.exists() and not parent.is_dir():
        raise ParameterError(f"out={out!r} is invalid: allowed a path in a folder ({parent} is a file)")
    check_outside_configs(parent, "out")
    check_writable(parent, "out", out)


def table_paths(out: str) -> tuple[Path, Path]:
    """`<out>.jsonl` and `<out>.csv`, the suffix added to the name as given (`eval.v2` gives
    `eval.v2.jsonl`, where Path.with_suffix would give `eval.jsonl`); a given .jsonl or .csv is replaced."""
    base = Path(out)
    if base.suffix in (".jsonl", ".csv"):
        base = base.with_suffix("")
    return base.parent / f"{base.name}.jsonl", base.parent / f"{base.name}.csv"


def append_rows(out: str, rows: list[dict]) -> None:
    """Rows added to both tables, each file replaced whole (old content + new rows) by a rename, so
    that it is the old table or the new one, never half; checked again first, since a file may have
    appeared while the models were scored. Under a lock on the tables' folder: two evaluations
    appending to one table at once would each read the old table, and the second rename would drop
    the first one's rows."""
    check_table_location(out)
    jsonl, csv_path = table_paths(out)
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(jsonl.parent, what="append to one table at a time"):  # the folder: no lock file beside the tables
        record = check_table_path(out)
        _append_unlocked(jsonl, csv_path, rows, record)


def _append_unlocked(jsonl: Path, csv_path: Path, rows: list[dict], record: dict[str, list[str]]) -> None:
    lines = io.StringIO()
    w = csv.DictWriter(lines, fieldnames=FIELDS, extrasaction="ignore")
    if not csv_path.exists():
        w.writeheader()
    w.writerows(rows)
    # both new versions written in full before either is renamed: a full disk leaves both tables as they were
    added = {jsonl: "".join(json.dumps(r) + "\n" for r in rows), csv_path: lines.getvalue()}
    write_all_owned({path: (path.read_bytes() if path.exists() else b"") + text.encode() for path, text in added.items()},
                    jsonl.parent / TABLES_RECORD, TABLES_WRITER, record)
