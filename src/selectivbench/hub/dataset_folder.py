"""A dataset repository folder in the Hub layout: parquet per config and split, grammar.json,
and a README.md card whose YAML lists the configs, so `load_dataset(DIR, config)` just works.

Generation streams shard by shard: each shard's Arrow table goes from the sampler straight into
the config's parquet files (one row group per shard), and the Bayes ceiling is scored in the same
pass on the first samples of each split. Each config is built in a hidden sibling folder and
swapped in when complete; its `generation.json` records what it holds (parameters, command,
files with their sizes), and the card is rebuilt from those records, so the card always
describes what the folder actually holds.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import tempfile
import threading
from importlib import resources
from pathlib import Path

import datasets
import pyarrow.parquet as pq
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData

from ..files import (UMASK, atomic_write_text, is_ours, read_record as read_owned_record, remove_owned, swap_in,
                     write_owned)
from ..errors import ParameterError, check_choice, is_count, is_number
from ..builders import (TASKS, Grammar, Sampler, SelectivBench, TaskParams,
                       make_grammar)
from ..builders.builder import CITATION, SelectivBenchBuilderConfig
from ..builders.shards import (ShardPool, exit_if_orphaned, features_of, max_steps_per_sample, sampler_for, shard_job,
                               shard_ranges)
from ..builders.config import params_problem, task_description

CARD_TEMPLATE = resources.files("selectivbench.hub") / "dataset_card.md"
CARD_MARKER = "<!-- selectivbench-card: written by `selectivbench generate`"
RECORD = "generation.json"
RECORD_FORMAT = "selectivbench-config/2"  # 2: each file's sha256 recorded
BUILD_PREFIX = ".selectivbench-build-"  # hidden siblings: configs being built, or old ones being removed
CEILING_SAMPLES = 1000  # the Bayes ceiling scores the first samples of each split
STATS_FIELDS = ("num_states", "num_edges", "mean_string_length", "topological_entropy")  # grammar_stats
CEILING_FIELDS = ("element_accuracy", "step_accuracy", "num_samples")  # build_config's ceiling rows
FILE_STEPS = 1 << 25  # steps per parquet file at most (~400 MB of Arrow at the largest gaps, ~40 MB of parquet)


def make_builder(config: str, cache_dir=None, **kwargs) -> SelectivBench:
    _check_config(config)
    return SelectivBench(config_name=config, cache_dir=cache_dir,
                         **{k: v for k, v in kwargs.items() if v is not None})


def _check_config(config: str) -> None:
    check_choice("config", config, TASKS)


def grammar_stats(sampler: Sampler) -> dict:
    # One BLAS thread: on a loaded 2-core machine, threaded OpenBLAS spins and the dense
    # eigenvalues of the topological entropy take 10x longer.
    from threadpoolctl import threadpool_limits

    g = sampler.grammar
    with threadpool_limits(1):
        return {"num_states": g.num_states, "num_edges": g.num_edges,
                "mean_string_length": sampler.law.mean_length(), "topological_entropy": g.topological_entropy()}


def _stats_job(p: TaskParams) -> dict:
    return grammar_stats(sampler_for(p))


def example_split(splits) -> str:
    """The split a card's example is drawn from: validation, else the first split the config has."""
    return "validation" if "validation" in splits else next(iter(splits))


def render_sample(sampler, split="validation", steps=24) -> str:
    """Two aligned lines: what the model sees, and the hidden states it must report."""
    g, p = sampler.grammar, sampler.params
    row = sampler.sample(split, 0)
    ids, labels, elem = (row[k][:steps].tolist() for k in ("input_ids", "labels", "element_index"))
    inputs, states = [], []
    for t, (x, y, e) in enumerate(zip(ids, labels, elem)):
        first = t == 0 or elem[t - 1] != e
        inputs.append(g.symbols[x] if first else "_" if x == p.gap_id else f"[{g.symbols[x]}]")
        states.append(g.states[y] if first else "·")
    width = max(len(s) for s in inputs + states) + 1
    return "\n".join((head + "".join(s.ljust(width) for s in cells)).rstrip()
                     for head, cells in (("input: ", inputs), ("label: ", states)))


def _gap_law_text(p) -> str:
    if p.gap_law == "fixed":
        return f"fixed {p.gap_duration}"
    if p.gap_law == "uniform":
        return f"uniform({p.gap_low}, {p.gap_high})"
    return f"lognormal({p.gap_mean}, {p.gap_sigma})"


def _size_category(n: int) -> str:
    for bound, name in [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")]:
        if n < bound:
            return name
    return "10M<n<100M"


# ---------------------------------------------------------------- writing one config


def file_ranges(p: TaskParams, split: str, n: int) -> list[list[tuple[int, int]]]:
    """The shards of each parquet file of a split: consecutive shards up to FILE_STEPS steps (at the
    split's largest gaps), so files are known before generation and each is written by one process."""
    files, steps = [], FILE_STEPS
    for lo, hi in shard_ranges(p, split, n):
        shard_steps = (hi - lo) * max_steps_per_sample(p, split)
        if steps + shard_steps > FILE_STEPS:
            files.append([])
            steps = 0
        files[-1].append((lo, hi))
        steps += shard_steps
    return files


def write_parquet_file(p: TaskParams, split: str, shards: list[tuple[int, int]], path: str,
                       ceiling_upto: int) -> dict:
    """A worker's job: one parquet file of a split, one row group per shard, and the Bayes ceiling
    counts of its samples below ceiling_upto. zstd without dictionaries: measured the smallest files
    for the cost (docs/data-and-storage.md, "How a folder is written")."""
    exit_if_orphaned()
    schema = features_of(p, sampler_for(p).grammar).arrow_schema  # carries the features (state names)
    rows = num_bytes = 0
    counts = None
    with pq.ParquetWriter(path, schema, compression="zstd", use_dictionary=False, write_page_index=True) as writer:
        for lo, hi in shards:
            table, shard_counts = shard_job(p, split, lo, hi, schema, ceiling_upto)
            writer.write_table(table, row_group_size=len(table))
            rows, num_bytes = rows + len(table), num_bytes + table.nbytes
            if shard_counts is not None:
                counts = shard_counts if counts is None else {k: counts[k] + v for k, v in shard_counts.items()}
    return {"rows": rows, "num_bytes": num_bytes, "counts": counts}


def write_split(pool: ShardPool, p: TaskParams, split: str, n: int, folder: Path) -> tuple[dict, dict]:
    """Write a split as folder/<split>-<i>-of-<n>.parquet (5 digits each), files in parallel. Returns its record and
    the Bayes ceiling counts of its first CEILING_SAMPLES samples."""
    groups = file_ranges(p, split, n)
    names = [f"{split}-{i:05d}-of-{len(groups):05d}.parquet" for i in range(len(groups))]
    jobs = [(p, split, shards, str(folder / name), min(n, CEILING_SAMPLES)) for shards, name in zip(groups, names)]
    files, num_bytes, counts = [], 0, None
    for name, done in zip(names, pool.imap(write_parquet_file, jobs)):
        files.append({"name": name, "bytes": (folder / name).stat().st_size, "rows": done["rows"],
                      "sha256": file_sha256(folder / name)})
        num_bytes += done["num_bytes"]
        if done["counts"] is not None:
            counts = done["counts"] if counts is None else {k: counts[k] + v for k, v in done["counts"].items()}
    return {"num_examples": n, "num_bytes": num_bytes, "files": files}, counts


def build_config(config: SelectivBenchBuilderConfig, folder: Path, pool: ShardPool, command: str) -> dict:
    """Write every non-empty split of a config, its grammar.json and its generation.json into folder."""
    p = config.params
    stats = pool.submit(_stats_job, p)  # runs beside the shards
    splits, ceiling = {}, []
    for split, n in config.split_sizes.items():
        if n == 0:
            continue  # an empty split is left out of the folder (and of the card), which still loads
        splits[split], c = write_split(pool, p, split, n, folder)
        ceiling.append({"split": split, "element_accuracy": c["element_correct"] / c["elements"],
                        "step_accuracy": c["step_correct"] / c["steps"], "num_samples": min(n, CEILING_SAMPLES)})
    atomic_write_text(folder / "grammar.json", make_grammar(p).to_json())
    record = {"format": RECORD_FORMAT, "config": config.name, "description": config.description,
              "command": command, "params": p.to_dict(), "sizes": config.split_sizes, "stats": stats.get(),
              "ceiling": ceiling, "splits": splits, "grammar_sha256": file_sha256(folder / "grammar.json")}
    _write_atomic(folder / RECORD, json.dumps(record, indent=1))
    return record


# ---------------------------------------------------------------- the folder


def generate_folder(configs: list[str], out: str | Path, num_proc: int | None = None,
                    repo_id: str = "selectivbench", command: str = "", **kwargs) -> dict:
    """Generate every config into `out`, then rebuild its card. Returns the new configs' numbers.

    Each config is built in a hidden sibling and swapped in once every config is complete; a
    folder is never left with a config that mixes runs or a card that describes other data.
    """
    if not str(out).strip():  # Path("") is the current folder: the card and configs would land there
        raise _out_error(out, "a folder path (not empty)")
    out = Path(out)
    check_repo_id(repo_id, org=False)  # it goes into the card's load_dataset line
    plans = [_plan(c, kwargs) for c in configs]  # validates every parameter before any work
    if len(set(configs)) != len(configs):
        raise ParameterError(f"configs={configs!r} is invalid: allowed distinct config names")
    _prepare_out(out, configs)
    builds: dict[str, Path] = {}
    with _sigterm_as_exit():
        try:
            with ShardPool(num_proc) as pool:
                for plan in plans:
                    builds[plan.name] = Path(tempfile.mkdtemp(prefix=f"{BUILD_PREFIX}{plan.name}-{os.getpid()}-",
                                                              dir=out))
                    builds[plan.name].chmod(0o777 & ~UMASK)  # mkdtemp makes it private
                    build_config(plan, builds[plan.name], pool, command)
            # While configs are swapped, the card leaves them out: a config killed mid-swap does not load.
            write_card(out, repo_id, leave_out=set(builds))
            for name in list(builds):
                swap_in(builds.pop(name), out / name,
                        out / f"{BUILD_PREFIX}old-{name}-{os.getpid()}-{secrets.token_hex(4)}")
        finally:
            for build in builds.values():
                shutil.rmtree(build, ignore_errors=True)
    card = write_card(out, repo_id)
    summary = {r["config"]: r for r in folder_records(out)}
    return {"card": str(card), "configs": [_summary(summary[c]) for c in configs]}


def _plan(config: str, kwargs: dict) -> SelectivBenchBuilderConfig:
    _check_config(config)
    plan = SelectivBenchBuilderConfig(name=config, task=config, **{k: v for k, v in kwargs.items() if v is not None})
    if not any(plan.split_sizes.values()):  # (split_sizes validates the parameters and sizes)
        raise ParameterError(f"num_train={plan.num_train!r} is invalid: allowed at least one sample in num_train, "
                             "num_validation or num_test (a config without any would not load)")
    plan.description = task_description(config, plan.params)
    sampler_for(plan.params)  # the grammar drawn and its law sized now, before the folder is touched (cached)
    return plan


def _summary(record: dict) -> dict:
    return {"name": record["config"], "description": record["description"], "p": TaskParams.from_dict(record["params"]),
            "sizes": record["sizes"], "stats": record["stats"], "ceiling": record["ceiling"],
            "command": record["command"]}


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


def _out_error(out: Path, allowed: str) -> ParameterError:
    return ParameterError(f"out={str(out)!r} is invalid: allowed {allowed}")


def _prepare_out(out: Path, configs: list[str]) -> None:
    """Refuse, before any work, an `out` that is a file, is not writable, or holds files of others."""
    if out.exists() and not out.is_dir():
        raise _out_error(out, "a folder (it is an existing file)")
    check_outside_configs(out, "out")
    if out.is_dir():
        if any(p.suffix == ".py" for p in out.glob("*")):
            raise _out_error(out, "a folder without Python files")
        card_record(out, "out", "a new folder or one written by `selectivbench generate`")
        for name in configs:
            if (out / name).is_symlink():  # the swap would rename the link, not the folder: refused after the build
                raise _out_error(out, f"a folder whose {name} is a folder, not a link ({out / name} is a link: "
                                      "generate into the folder it points to)")
            foreign = _foreign_files(out / name)
            if foreign:
                raise _out_error(out, f"a folder whose {name}/ was written by `selectivbench generate` "
                                      f"(it holds files selectivbench did not write: {foreign[:5]})")
        folder_records(out, leave_out=configs)  # the card reads the other configs' records: readable now
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f"{BUILD_PREFIX}probe-{os.getpid()}-", dir=out)
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise _out_error(out, f"a writable folder ({err.strerror})") from None
    _remove_stale_builds(out)


def _foreign_files(folder: Path, record: dict | None = None) -> list[str]:
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


def _remove_stale_builds(out: Path) -> None:
    """Build folders left by a killed run (their process is gone) are ours to remove."""
    for build in out.glob(f"{BUILD_PREFIX}*"):
        pid = build.name[len(BUILD_PREFIX):].split("-")[-2]
        if pid.isdigit() and not _alive(int(pid)):  # a link (an old version swapped one aside) is removed, not followed
            (shutil.rmtree if build.is_dir() and not build.is_symlink() else os.remove)(build)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _sigterm_as_exit():
    """SIGTERM unwinds like Ctrl-C, so build folders are removed and the pool is stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_now(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_now)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _write_atomic(path: Path, text: str) -> None:
    """Named like the build folders, so that a later run removes what a killed one left."""
    atomic_write_text(path, text, prefix=f"{BUILD_PREFIX}file-{os.getpid()}-")


# ---------------------------------------------------------------- reading a folder


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
    foreign = _foreign_files(base, record)
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


# ---------------------------------------------------------------- the card


CARD_RECORD = "selectivbench_card.json"  # the sha256 of the card as written (files.py); never uploaded
CARD_WRITER = "selectivbench generate"


def card_record(out: Path, field: str, allowed: str) -> dict[str, list[str]]:
    """The record of the folder's card, after checking that its README.md is the card this package
    wrote, unchanged since (or absent): a card the user edited, or their own README, is never replaced
    (ParameterError naming `field`)."""
    readme = Path(out) / "README.md"
    refusal = f"{field}={str(out)!r} is invalid: allowed {allowed}"
    record = read_owned_record(Path(out) / CARD_RECORD, CARD_WRITER,
                               f"{refusal}, whose {CARD_RECORD} is the card's record") or {}
    if not is_ours(readme, record):
        raise ParameterError(f"{refusal} (its README.md was not written by selectivbench, or was edited since: it "
                             f"is never replaced; move {readme} away)")
    return record


def write_card(out: Path, repo_id: str, leave_out=()) -> Path:
    """Rebuild README.md from the config records the folder holds (atomically), only over the card
    this package wrote (checked again now: the user may have edited it while configs were built)."""
    records = folder_records(out, leave_out)
    path = Path(out) / "README.md"
    record = card_record(out, "out", "a folder whose card `selectivbench generate` wrote")
    prefix = f"{BUILD_PREFIX}file-{os.getpid()}-"  # a later run removes what a killed one left
    if not records:
        if path.exists():
            remove_owned(path, Path(out) / CARD_RECORD, CARD_WRITER, record, prefix)
        return path
    write_owned(path, str(render_card(out, records, repo_id)).encode(), Path(out) / CARD_RECORD, CARD_WRITER, record,
                prefix=prefix)
    return path


def _info(out: Path, record: dict, grammar: Grammar) -> datasets.DatasetInfo:
    p = TaskParams.from_dict(record["params"])
    splits = datasets.SplitDict()
    for name, s in record["splits"].items():
        splits.add(datasets.SplitInfo(name=name, num_bytes=s["num_bytes"], num_examples=s["num_examples"]))
    return datasets.DatasetInfo(
        description=record["description"], features=features_of(p, grammar), splits=splits,
        download_size=sum(f["bytes"] for s in record["splits"].values() for f in s["files"]),
        dataset_size=sum(s["num_bytes"] for s in record["splits"].values()), config_name=record["config"])


def _share_equal_lists(node, seen: dict):
    """Make equal state-name tables one object, so the YAML writes them once (an anchor) and aliases them."""
    if isinstance(node, dict):
        if "names" in node and isinstance(node["names"], (list, dict)):
            key = json.dumps(node["names"], sort_keys=True)
            node["names"] = seen.setdefault(key, node["names"])
        for v in node.values():
            _share_equal_lists(v, seen)
    elif isinstance(node, list):
        for v in node:
            _share_equal_lists(v, seen)


def render_card(out: Path, records: list[dict], repo_id: str) -> DatasetCard:
    grammars = {r["config"]: Grammar.load(Path(out) / r["config"] / "grammar.json") for r in records}
    infos, meta = DatasetInfosDict(), MetadataConfigs()
    for r in records:
        name = r["config"]
        infos[name] = _info(out, r, grammars[name])
        meta[name] = {"data_files": [{"split": s, "path": f"{name}/{s}-*"} for s in r["splits"]],
                      **({"default": True} if name == records[0]["config"] else {})}
    total = sum(s["num_examples"] for r in records for s in r["splits"].values())
    data = DatasetCardData(
        license="apache-2.0", pretty_name="SelectivBench",
        task_categories=["token-classification"], size_categories=[_size_category(total)],
        tags=["synthetic", "formal-languages", "selectivity", "linear-recurrent-models", "state-space-models"],
        annotations_creators=["machine-generated"], source_datasets=["original"],
    )
    meta.to_dataset_card_data(data)
    infos.to_dataset_card_data(data)
    _share_equal_lists(data.dataset_info, {})
    configs = []
    for r in records:
        p = TaskParams.from_dict(r["params"])
        configs.append({"name": r["config"], "p": p, "description": r["description"], "stats": r["stats"],
                        "ceiling": r["ceiling"], "gap_law": _gap_law_text(p), "command": r["command"] or
                        "selectivbench generate", "elements": (f"{p.seq_len_min}-{p.seq_len}" if p.seq_len_min
                                                               else p.seq_len),
                        "sizes": ", ".join(f"{k} {v:,}" for k, v in r["sizes"].items())})
    first = records[0]
    sampler = Sampler(TaskParams.from_dict(first["params"]), grammars[first["config"]])
    split = example_split(first["splits"])
    example = {"config": first["config"], "split": split, "steps": 24, "text": render_sample(sampler, split)}
    return DatasetCard.from_template(data, template_path=str(CARD_TEMPLATE), configs=configs, example=example,
                                     repo_id=repo_id, citation=CITATION, marker=CARD_MARKER)


# ---------------------------------------------------------------- publishing


def check_repo_id(repo_id, field: str = "repo_id", what: str = "", org: bool = True) -> None:
    """ORG/NAME (org=False: also NAME alone) as the Hub accepts it (huggingface_hub's own validator),
    before any work."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    form = "ORG/NAME" if org else "NAME or ORG/NAME"
    allowed = f"allowed {form}{what} (letters, digits, '-', '_', '.'; no '--' or '..')"
    if not isinstance(repo_id, str) or repo_id.count("/") not in ((1,) if org else (0, 1)):
        raise ParameterError(f"{field}={repo_id!r} is invalid: {allowed}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise ParameterError(f"{field}={repo_id!r} is invalid: {allowed}") from None


def check_can_upload(repo_id: str) -> None:
    """An upload in offline mode would fail only at its first request: refuse it before any work."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise ParameterError(f"dry_run=False is invalid in offline mode (HF_HUB_OFFLINE=1): allowed --dry-run, "
                             f"or HF_HUB_OFFLINE unset to upload to {repo_id}")


def publish_folder(folder: str | Path, repo_id: str, dry_run: bool = False, private: bool = False) -> list[str]:
    """Check every config's files, rewrite the card's load snippet to repo_id, then upload the folder
    (with dry_run: only list it). Nothing is written unless every check passes."""
    folder = Path(folder)
    readme = folder / "README.md"
    if not readme.exists() or not (folder / CARD_RECORD).exists():
        raise ParameterError(f"folder={str(folder)!r} is invalid: allowed a folder made by `selectivbench generate`")
    card_record(folder, "folder", "a folder whose card `selectivbench generate` wrote")  # an edited card stays
    check_repo_id(repo_id)
    if not dry_run:
        check_can_upload(repo_id)
    # every file whole, as its generation.json records it (a config without one is refused)
    records = [check_config_folder(folder, name) for name in TASKS if (folder / name).exists()]
    if not records:
        raise ParameterError(f"folder={str(folder)!r} is invalid: allowed a folder with at least one generated config "
                             f"(it has none of {TASKS})")
    write_card(folder, repo_id)
    # exactly the dataset: the card and each config's recorded files, nothing else the folder holds (a
    # user's notes, an .env, an old copy); the remote files of these configs that are not among them
    # (a split of another size, sharded differently) are deleted in the same commit
    files = ["README.md"] + sorted(f"{r['config']}/{name}" for r in records for name in
                                   [RECORD, "grammar.json", *(f["name"] for s in r["splits"].values() for f in s["files"])])
    if not dry_run:
        from huggingface_hub import HfApi
        api = HfApi()
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset",
                          commit_message="Upload SelectivBench data", allow_patterns=files,
                          delete_patterns=[f"{r['config']}/*" for r in records])
    return files
