"""What a generated folder holds, read and checked: each config's `generation.json` (the record of
its files, with their sizes and sha256), its files against it, and loading a config from them.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import datasets
import pyarrow.parquet as pq

from ..builders import TASKS, Grammar, TaskParams
from ..builders.config import params_problem
from ..builders.shards import features_of
from ..errors import ParameterError, is_count, is_number

RECORD = "generation.json"
RECORD_FORMAT = "selectivbench-config/2"  # 2: each file's sha256 recorded
BUILD_PREFIX = ".selectivbench-build-"  # hidden siblings: configs being built, or old ones being removed
CEILING_SAMPLES = 1000  # the Bayes ceiling scores the first samples of each split
STATS_FIELDS = ("num_states", "num_edges", "mean_string_length", "topological_entropy")  # grammar_stats
CEILING_FIELDS = ("element_accuracy", "step_accuracy", "num_samples")  # build_config's ceiling rows


def check_outside_configs(path: str | Path, field: str) -> None:
    """Nothing is written inside a generated config folder (a folder named for a config, holding
    its generation.json): a file there that its record does not name makes the config refuse to
    load and to publish."""
    resolved = Path(path).resolve()
    for folder in (resolved, *resolved.parents):
        if folder.name in TASKS and (folder / RECORD).is_file():
            raise ParameterError(f"{field}={str(path)!r} is invalid: allowed a path outside a generated config "
                                 f"folder ({folder} holds the dataset config {folder.name!r}: a file written there "
                                 "would make it unloadable)")


def foreign_files(folder: Path, record: dict | None = None) -> list[str]:
    """Files in an existing config folder that its generation.json (`record`, read if not given)
    does not account for."""
    if not folder.exists():
        return []
    if not folder.is_dir():
        return [folder.name]
    try:
        record = record or read_record(folder.parent, folder.name)
        ours = {RECORD, "grammar.json", *(f["name"] for s in record["splits"].values() for f in s["files"])}
    except ParameterError:
        ours = set()
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if str(p.relative_to(folder)) not in ours
                  and not p.is_dir())


def read_record(folder: str | Path, config: str) -> dict:
    """The generation.json of a config folder; ParameterError naming the file (and the field) if
    absent, unreadable or not of the shape `build_config` writes."""
    path = Path(folder) / config / RECORD
    allowed = f"allowed the {RECORD} that `selectivbench generate` writes into each config folder"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        raise ParameterError(f"file={str(path)!r} is invalid: {allowed}") from None
    problem = _record_problem(record, config)
    if problem:
        raise ParameterError(f"file={str(path)!r} is invalid: {allowed} ({problem})")
    return record


def _is_sha256(value) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


_SHA256_SEEN: dict[tuple, str] = {}  # (path, inode, size, mtime_ns) -> sha256: each file hashed once per process


def file_sha256(path: Path) -> str:
    """The file's sha256, computed once per version of the file (a rewrite changes its mtime or size)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _SHA256_SEEN:
        with open(path, "rb") as f:
            _SHA256_SEEN[key] = hashlib.file_digest(f, "sha256").hexdigest()
    return _SHA256_SEEN[key]


def _record_problem(record, config: str) -> str | None:
    """What in a generation.json differs from what `build_config` writes, or None."""
    if not isinstance(record, dict):
        return "a JSON object"
    if record.get("format") != RECORD_FORMAT:
        return f"format: allowed {RECORD_FORMAT!r}"
    if record.get("config") != config:
        return f"config: allowed {config!r}, the folder's name"
    for field in ("description", "command"):
        if not isinstance(record.get(field), str):
            return f"{field}: allowed a string"
    if (why := params_problem(record.get("params"))) is not None:
        return f"params: {why}"
    sizes = record.get("sizes")
    if not isinstance(sizes, dict) or not all(is_count(n) for n in sizes.values()):
        return "sizes: allowed an object of split name -> number of samples"
    stats = record.get("stats")
    if not isinstance(stats, dict) or not all(is_number(stats.get(k)) for k in STATS_FIELDS):
        return f"stats: allowed an object of numbers {list(STATS_FIELDS)}"
    ceiling = record.get("ceiling")
    if not isinstance(ceiling, list) or not all(isinstance(c, dict) and isinstance(c.get("split"), str)
                                                and all(is_number(c.get(k)) for k in CEILING_FIELDS) for c in ceiling):
        return f"ceiling: allowed a list of objects with split and numbers {list(CEILING_FIELDS)}"
    if not _is_sha256(record.get("grammar_sha256")):
        return "grammar_sha256: allowed the sha256 of grammar.json (64 hex digits)"
    splits = record.get("splits")
    if not isinstance(splits, dict):
        return "splits: allowed an object of split name -> {num_examples, num_bytes, files}"
    for name, split in splits.items():
        if not (isinstance(split, dict) and is_count(split.get("num_examples")) and is_count(split.get("num_bytes"))
                and isinstance(split.get("files"), list)):
            return f"splits.{name}: allowed an object {{num_examples, num_bytes, files}} of counts and a list"
        for f in split["files"]:
            # A plain file name: the record must not point outside its config folder.
            if not (isinstance(f, dict) and isinstance(f.get("name"), str) and f["name"] == Path(f["name"]).name
                    and f["name"] not in ("", ".", "..") and is_count(f.get("bytes")) and is_count(f.get("rows"))
                    and _is_sha256(f.get("sha256"))):
                return (f"splits.{name}.files: allowed objects {{name, bytes, rows, sha256}} naming a file of the "
                        "config folder")
    return None


def folder_records(out: str | Path, leave_out=()) -> list[dict]:
    """Records of the complete configs the folder holds, in TASKS order."""
    return [read_record(out, name) for name in TASKS
            if name not in leave_out and (Path(out) / name / RECORD).exists()]


def check_config_folder(folder: str | Path, config: str) -> dict:
    """Validate a generated config folder: every file of its record present and complete. Returns the record."""
    record = read_record(folder, config)
    base = Path(folder) / config
    for split in record["splits"].values():
        for f in split["files"]:
            path = base / f["name"]
            allowed = (f"a complete parquet file of {f['bytes']} bytes and {f['rows']} rows, as written by "
                       f"`selectivbench generate`")
            try:
                size = path.stat().st_size
                rows = pq.ParquetFile(path).metadata.num_rows if size == f["bytes"] else None
                same = size == f["bytes"] and rows == f["rows"] and file_sha256(path) == f["sha256"]
            except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
                raise ParameterError(f"file={str(path)!r} is invalid: allowed {allowed} ({err})") from None
            if not same:  # a file of the same size and rows but other content: another split's, say
                raise ParameterError(f"file={str(path)!r} is invalid: allowed {allowed}, sha256 {f['sha256']} "
                                     f"(found {size} bytes{'' if size != f['bytes'] or rows != f['rows'] else ', another sha256'})")
    check_grammar_file(base, record)
    foreign = foreign_files(base, record)
    if foreign:  # the card's {config}/{split}-* patterns would load them as rows of the split
        raise ParameterError(f"folder={str(base)!r} is invalid: allowed only the files `selectivbench generate` "
                             f"wrote there (it also holds {foreign[:5]})")
    return record


def check_grammar_file(base: Path, record: dict) -> None:
    """grammar.json is the one generation.json records: its params agree with the record's field by
    field (generation.json is authoritative: the task is built from it), and its bytes are the recorded ones."""
    path = base / "grammar.json"
    allowed = f"allowed the grammar.json that {RECORD} records"
    try:
        params = json.loads(path.read_bytes()).get("params")
    except (OSError, ValueError, AttributeError) as err:
        raise ParameterError(f"file={str(path)!r} is invalid: {allowed} ({type(err).__name__})") from None
    if not isinstance(params, dict):
        raise ParameterError(f"file={str(path)!r} is invalid: {allowed} (params: allowed an object)")
    differs = [f"{k}={params.get(k, 'absent')!r} ({RECORD}: {record['params'].get(k, 'absent')!r})"
               for k in sorted(set(params) | set(record["params"])) if params.get(k) != record["params"].get(k)]
    if differs:
        raise ParameterError(f"file={str(path)!r} is invalid: {allowed}, whose params disagree with {RECORD} "
                             f"({'; '.join(differs)})")
    if file_sha256(path) != record["grammar_sha256"]:
        raise ParameterError(f"file={str(path)!r} is invalid: {allowed} (sha256 {record['grammar_sha256']}; "
                             "this one was changed)")


def load_config_folder(folder: str | Path, config: str, split: str | None = None, cache_dir=None):
    """Load a config of a generated folder after checking its files (ParameterError naming a bad file).

    With `split`, only that split's parquet files are read (a `datasets.Dataset`); without, every
    split (a `DatasetDict`, as `load_dataset(folder, config)`). Either way the files are those that
    generation.json records (the card's YAML, a user's to edit, does not choose them).
    """
    record = check_config_folder(folder, config)
    if split is None:
        return datasets.DatasetDict({s: load_config_folder(folder, config, s, cache_dir) for s in record["splits"]})
    if split not in record["splits"]:
        raise ParameterError(f"split={split!r} is invalid: allowed one of {sorted(record['splits'])}")
    p = TaskParams.from_dict(record["params"])
    features = features_of(p, Grammar.load(Path(folder) / config / "grammar.json"))
    files = [str(Path(folder) / config / f["name"]) for f in record["splits"][split]["files"]]
    return datasets.load_dataset("parquet", data_files={split: files}, features=features, split=split,
                                 cache_dir=cache_dir)
