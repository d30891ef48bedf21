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
import json
import os
import secrets
import shutil
import signal
import tempfile
import threading
from pathlib import Path

import pyarrow.parquet as pq
from threadpoolctl import threadpool_limits

from ..builders import TASKS, Sampler, SelectivBench, TaskParams, make_grammar
from ..builders.builder import SelectivBenchBuilderConfig
from ..builders.config import task_description
from ..builders.shards import (ShardPool, exit_if_orphaned, features_of, max_steps_per_sample, sampler_for, shard_job,
                               shard_ranges)
from ..errors import ParameterError, check_choice
from ..files import UMASK, atomic_write_text, check_writable, swap_in
from .dataset_card import card_record, write_card
from .dataset_records import (BUILD_PREFIX, CEILING_SAMPLES, RECORD, RECORD_FORMAT, check_outside_configs,
                              file_sha256, folder_records, foreign_files)
from .upload import check_repo_id

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
    g = sampler.grammar
    with threadpool_limits(1):
        return {"num_states": g.num_states, "num_edges": g.num_edges,
                "mean_string_length": sampler.law.mean_length(), "topological_entropy": g.topological_entropy()}


def _stats_job(p: TaskParams) -> dict:
    return grammar_stats(sampler_for(p))


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


def build_config(builder_config: SelectivBenchBuilderConfig, folder: Path, pool: ShardPool, command: str) -> dict:
    """Write every non-empty split of a config, its grammar.json and its generation.json into folder."""
    p = builder_config.params
    stats = pool.submit(_stats_job, p)  # runs beside the shards
    splits, ceiling = {}, []
    for split, n in builder_config.split_sizes.items():
        if n == 0:
            continue  # an empty split is left out of the folder (and of the card), which still loads
        splits[split], c = write_split(pool, p, split, n, folder)
        ceiling.append({"split": split, "element_accuracy": c["element_correct"] / c["elements"],
                        "step_accuracy": c["step_correct"] / c["steps"], "num_samples": min(n, CEILING_SAMPLES)})
    atomic_write_text(folder / "grammar.json", make_grammar(p).to_json())
    record = {"format": RECORD_FORMAT, "config": builder_config.name, "description": builder_config.description,
              "command": command, "params": p.to_dict(), "sizes": builder_config.split_sizes, "stats": stats.get(),
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


def _plan(task: str, kwargs: dict) -> SelectivBenchBuilderConfig:
    _check_config(task)
    plan = SelectivBenchBuilderConfig(name=task, task=task, **{k: v for k, v in kwargs.items() if v is not None})
    if not any(plan.split_sizes.values()):  # (split_sizes validates the parameters and sizes)
        raise ParameterError(f"num_train={plan.num_train!r} is invalid: allowed at least one sample in num_train, "
                             "num_validation or num_test (a config without any would not load)")
    plan.description = task_description(task, plan.params)
    sampler_for(plan.params)  # the grammar drawn and its law sized now, before the folder is touched (cached)
    return plan


def _summary(record: dict) -> dict:
    return {"name": record["config"], "description": record["description"], "p": TaskParams.from_dict(record["params"]),
            "sizes": record["sizes"], "stats": record["stats"], "ceiling": record["ceiling"],
            "command": record["command"]}


def _out_error(out: Path, allowed: str) -> ParameterError:
    return ParameterError(f"out={str(out)!r} is invalid: allowed {allowed}")


def _prepare_out(out: Path, configs: list[str]) -> None:
    """Refuse, before any work, an `out` that is a file, is not writable, or holds files of others."""
    if out.exists() and not out.is_dir():
        raise _out_error(out, "a folder (it is an existing file)")
    check_outside_configs(out, "out")
    check_writable(out, "out")  # names the folder that is not; the probe below catches what access() cannot see
    if out.is_dir():
        if any(p.suffix == ".py" for p in out.glob("*")):
            raise _out_error(out, "a folder without Python files")
        card_record(out, "out", "a new folder or one written by `selectivbench generate`")
        for name in configs:
            if (out / name).is_symlink():  # the swap would rename the link, not the folder: refused after the build
                raise _out_error(out, f"a folder whose {name} is a folder, not a link ({out / name} is a link: "
                                      "generate into the folder it points to)")
            foreign = foreign_files(out / name)
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
