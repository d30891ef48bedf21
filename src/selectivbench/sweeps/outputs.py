"""A sweep folder's records and outputs: the rows of results.jsonl and failures.jsonl, and the
tables, summary and plots made from them, which replace only files this command wrote there
(`check_outputs`, with the sha256 record outputs.json)."""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

from ..errors import ParameterError
from ..evaluation.tables import FIELDS
from ..files import atomic_write_text, check_writable, read_record, replaced, sha256, write_record
from ..hub.dataset_records import check_outside_configs
from .report import plot, select_on_validation, summary_markdown

# the keys of a results.jsonl row that the driver reads (a row missing one was a KeyError, naming no file)
ROW_KEYS = ("run", "split", "mixer", "sweep", "axis", "d_model", "lr", "warmup", "train_seed", "element_accuracy",
            "bayes_element_accuracy", "parameters")


def read_rows(path: Path, repair: bool = False, keys: tuple = ("run",)) -> list[dict]:
    """The rows of a JSON-lines file, each an object with `keys`; a last line cut short by a killed
    writer is dropped (and its run is then redone). `repair` (the driver, before it appends) also
    trims it from the file, so that the next append starts on a fresh line."""
    if not path.exists():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    if repair and path.stat().st_size != len(text.encode()):
        atomic_write_text(path, text)
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line:
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            row = err
        missing = [k for k in keys if k not in row] if isinstance(row, dict) else None
        if missing != []:  # a corrupt line, or a file of another kind
            why = (row.msg if isinstance(row, json.JSONDecodeError) else "not an object with a 'run' key"
                   if missing is None or "run" in missing else f"no {', '.join(repr(k) for k in missing)}")
            what = "a 'run' key" if keys == ("run",) else f"the keys ({', '.join(keys)})"
            raise ParameterError(f"file={str(path)!r} is invalid: allowed one JSON object with {what} per "
                                 f"line (line {number}: {why}; fix or remove that line)")
        rows.append(row)
    return rows


def append_lines(path: Path, records: list[dict]) -> None:
    """All of a run's rows in one write, flushed to disk before the run counts as done."""
    with open(path, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


OUTPUTS_RECORD = "outputs.json"  # sha256 of every table, summary and plot this command wrote in a sweep folder
RECORD_WRITER = "selectivbench reproduce"


def is_output(name: str) -> bool:
    """A name the sweep's outputs may take: its tables, its summary, its plots (`views`' accuracy_*.png)."""
    return name in ("results.csv", "selection.csv", "summary.md") or (name.startswith("accuracy_")
                                                                       and name.endswith(".png"))


def check_out_folder(out: str, folder: Path) -> None:
    """`out` and the sweep folder in it are folders, or can be made: the nearest existing one is a
    writable folder."""
    for path in (Path(out), folder):
        if path.exists() and not path.is_dir():
            raise ParameterError(f"out={str(out)!r} is invalid: allowed a folder ({path} is a file)")
    check_outside_configs(folder, "out")
    check_writable(folder, "out", out)


def check_outputs(folder: Path, out: str, is_ours=is_output, writer: str = RECORD_WRITER) -> dict[str, list[str]]:
    """The rule that keeps a user's files: a file in the sweep folder with an output's name
    (results.csv, selection.csv, summary.md, accuracy_*.png) is replaced only when its bytes are those this
    command wrote there, as its record `outputs.json` holds (sha256). Anything else there (a
    user's table or notes, or an output edited since, or one of a folder without the record) is one
    error naming it, before any work. `is_ours` and `writer`: another command's output names and record (score).
    Returns the record: {name: [accepted sha256, ...]}."""
    record_path = folder / OUTPUTS_RECORD
    record = read_record(record_path, writer, f"out={str(out)!r} is invalid: allowed a sweep folder whose "
                                                     f"{OUTPUTS_RECORD} is this command's record") or {}
    if not folder.is_dir():
        return record
    for path in sorted(folder.iterdir()):
        if is_ours(path.name) and (not path.is_file() or sha256(path.read_bytes()) not in record.get(path.name, ())):
            raise ParameterError(f"out={str(out)!r} is invalid: allowed a sweep folder whose tables, summary and "
                                 f"plots this command wrote ({path} was not written by it, or was changed since; "
                                 "move it away: it is never replaced)")
    return record


def write_outputs(task: str, folder: Path, rows: list[dict], out: str | None = None, missing: int = 0) -> None:
    """results.csv (every row), selection.csv (the validation choice), summary.md and the plots;
    `missing`: planned runs without results (the summary says so). Made in memory, then (after
    `check_outputs` once more: a file may have appeared during the runs) the record is widened to
    the new bytes, each file is written to a temporary name and renamed, outputs of an earlier call
    that this one does not make (a plot of a view that has split since) are removed when their bytes
    are still the recorded ones, and the record is narrowed to the new files: a crash anywhere
    leaves every output recorded."""
    record = check_outputs(folder, str(out if out is not None else folder.parent))
    rows = list({(r["run"], r["split"]): r for r in rows}.values())  # a (run, split) counts once: the newest
    chosen, selection = select_on_validation(rows)
    files = {"results.csv": _csv_text(["run", "cell", "sweep", "axis", "d_model", "train_seed", "lr", "warmup"]
                                      + FIELDS, rows).encode()}
    if selection:
        files["selection.csv"] = _csv_text(list(selection[0]), selection).encode()
    files["summary.md"] = summary_markdown(task, chosen, missing).encode()
    files.update(plot(task, chosen))
    replace_outputs(folder, files, record)


def replace_outputs(folder: Path, files: dict[str, bytes], record: dict, writer: str = RECORD_WRITER) -> None:
    """Write `files` ({name: bytes}) in `folder` over the outputs `record` holds (as `check_outputs`
    returned it): the record is widened to the new bytes, each file written to a temporary name and
    renamed, recorded outputs this call does not make are removed where their bytes are still the
    recorded ones, and the record is narrowed to the new files, so a crash anywhere leaves every
    output recorded."""
    new = {name: sha256(data) for name, data in files.items()}
    _write_record(folder, {**record, **{n: sorted({*record.get(n, ()), h}) for n, h in new.items()}}, writer)
    for name, data in files.items():
        with replaced(folder / name) as tmp:
            tmp.write_bytes(data)
    for name in set(record) - set(files):
        path = folder / name
        if path.is_file() and sha256(path.read_bytes()) in record[name]:
            path.unlink()
    _write_record(folder, {n: [h] for n, h in new.items()}, writer)


def _write_record(folder: Path, files: dict[str, list[str]], writer: str = RECORD_WRITER) -> None:
    write_record(folder / OUTPUTS_RECORD, writer, files)


def _csv_text(fields: list[str], rows: list[dict]) -> str:
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return text.getvalue()
