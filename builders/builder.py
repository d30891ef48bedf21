"""The Hugging Face `datasets` builder: one BuilderConfig per paper task (SPEC §4).

Every TaskParams field is also a BuilderConfig field (None: the task's default), so any SPEC
parameter can be overridden as a config kwarg and datasets keys the cache by it:

    SelectivBench(config_name="complexity", ambiguities=20, ambiguity_depth=20)

Rows go from the sampler's numpy arrays straight into Arrow tables, one table per shard
(`shard_table`): the ragged per-step arrays become list columns from their offsets, with no
per-row Python objects. `build_split` writes one split alone; `ShardPool` spreads the shards over
processes and hands them back in order, so the bytes never depend on the number of processes.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import hashlib
import json
import multiprocessing
import os
import signal
import tempfile
from functools import cached_property
from pathlib import Path
from typing import Iterator, Optional

import datasets
import numpy as np
import pyarrow as pa

from .ceiling import ceiling_counts
from ..errors import ParameterError, check_int
from .config import (TASK_DESCRIPTIONS, TASKS, TaskParams, gap_of_split, gap_split, task_description,
                     task_params)
from .grammar import Grammar, make_grammar
from .sampler import Sampler, split_code, split_gap_steps

SHARD_SAMPLES = 1000  # at most this many samples per shard (one parquet row group); num_proc splits shards
SHARD_STEPS = 1 << 22  # ... and at most about this many steps, so long gaps make smaller shards
MAX_STEPS = (1 << 31) - 1  # list offsets are int32 (datasets' List)
# Samples per split: beyond this the shard list alone outgrows memory before a sample is drawn, and
# even 2-step samples make a split of over 4e9 steps (the paper's largest split has 200,000).
MAX_SPLIT_SAMPLES = (1 << 31) - 1
PAPER_SIZES = {"num_train": 200_000, "num_validation": 1_000, "num_test": 1_000}
_PARAM_FIELDS = [f.name for f in dataclasses.fields(TaskParams)]
# in every named config too (datasets reads the cache folder's version from the config, not VERSION),
# so that a new version never reads an older cache. 1.1.0: test gaps by numpy's rounding (some
# non-default gap durations, e.g. 0.45, gave a test gap one step longer than training's before)
BUILDER_VERSION = datasets.Version("1.1.0")


@dataclasses.dataclass
class SelectivBenchBuilderConfig(datasets.BuilderConfig):
    """BuilderConfig of a SelectivBench task: its `task`, split sizes, then every TaskParams field
    (None: the task's default). datasets keys the cache by all of them."""

    task: str = "complexity"
    num_train: int = PAPER_SIZES["num_train"]
    num_validation: int = PAPER_SIZES["num_validation"]
    num_test: int = PAPER_SIZES["num_test"]
    # TaskParams overrides (see builders/config.py for what each one means)
    vocab_size: Optional[int] = None
    ambiguities: Optional[int] = None
    ambiguity_depth: Optional[int] = None
    density: Optional[float] = None
    start_states: Optional[int] = None
    min_string_length: Optional[int] = None
    seed: Optional[int] = None
    grammar_rng: Optional[str] = None
    seq_len: Optional[int] = None
    seq_len_min: Optional[int] = None
    gap_start: Optional[int] = None
    gap_prob: Optional[float] = None
    gap_law: Optional[str] = None
    gap_duration: Optional[float] = None
    gap_low: Optional[float] = None
    gap_high: Optional[float] = None
    gap_mean: Optional[float] = None
    gap_sigma: Optional[float] = None
    timestep: Optional[float] = None
    gap_content: Optional[str] = None
    noise: Optional[float] = None
    test_gaps: Optional[tuple] = None

    @property
    def params(self) -> TaskParams:
        overrides = {k: getattr(self, k) for k in _PARAM_FIELDS if getattr(self, k) is not None}
        return task_params(self.task, **overrides)

    @property
    def split_sizes(self) -> dict[str, int]:
        for k in PAPER_SIZES:
            check_size(k, getattr(self, k))
        p = self.params
        check_storage(p)
        sizes = {"train": self.num_train, "validation": self.num_validation, "test": self.num_test}
        sizes.update({gap_split(g): self.num_test for g in p.test_gaps})
        return sizes


class SelectivBench(datasets.ArrowBasedBuilder):
    """SelectivBench: artificial-grammar sequences with gaps, noise and distractors."""

    VERSION = BUILDER_VERSION
    BUILDER_CONFIG_CLASS = SelectivBenchBuilderConfig
    BUILDER_CONFIGS = [SelectivBenchBuilderConfig(name=t, task=t, description=TASK_DESCRIPTIONS[t],
                                                  version=BUILDER_VERSION) for t in TASKS]
    DEFAULT_CONFIG_NAME = "complexity"

    def __init__(self, *args, dataset_name: str = "selectivbench", **kwargs):
        # datasets names the cache folder after the builder's module ("builder") unless told
        super().__init__(*args, dataset_name=dataset_name, **kwargs)

    @cached_property
    def grammar(self) -> Grammar:
        return make_grammar(self.config.params)

    @cached_property
    def sampler(self) -> Sampler:
        return sampler_for(self.config.params)

    def _info(self) -> datasets.DatasetInfo:
        self.config.split_sizes  # validates every parameter (and the sizes) before any work
        return datasets.DatasetInfo(
            description=task_description(self.config.task, self.config.params),
            features=features_of(self.config.params, self.grammar),
            homepage="https://arxiv.org/abs/2601.12598",
            citation=CITATION,
            license="apache-2.0",
            config_name=self.config.name,
            version=self.VERSION,
        )

    def _split_generators(self, dl_manager):
        p = self.config.params
        # a split of 0 samples is left out, as in a generated folder: datasets cannot read an empty split
        return [datasets.SplitGenerator(name=split, gen_kwargs={"split": split, "shards": shard_ranges(p, split, n)})
                for split, n in self.config.split_sizes.items() if n > 0]

    def _generate_tables(self, split: str, shards: list[tuple[int, int]]):
        schema = self.info.features.arrow_schema
        for lo, hi in shards:
            yield lo, shard_table(self.sampler, split, lo, hi, schema)


def check_size(name: str, value) -> None:
    check_int(name, value, 0, MAX_SPLIT_SAMPLES,
              f"an integer in [0, {MAX_SPLIT_SAMPLES}] (at most 2**31 - 1 samples per split)")


def check_storage(p: TaskParams) -> None:
    """Reject, before any work, a task whose samples cannot be stored (int32 element index and offsets)."""
    if p.seq_len > MAX_STEPS:
        raise ParameterError(f"seq_len={p.seq_len!r} is invalid: allowed [2, {MAX_STEPS}]")
    for split in ("train", *(gap_split(g) for g in p.test_gaps)):
        if max_steps_per_sample(p, split) > MAX_STEPS:
            raise ParameterError(f"seq_len={p.seq_len!r} is invalid: allowed a length whose samples, with gaps of "
                                 f"up to {_gap_bound(p, split)} steps, have at most {MAX_STEPS} steps")


def element_index_dtype(p: TaskParams) -> str:
    """int16 while every element index fits (seq_len <= 32768), else int32: decided from the parameters."""
    return "int16" if p.seq_len - 1 <= np.iinfo(np.int16).max else "int32"


def _gap_bound(p: TaskParams, split: str) -> int:
    fixed = split_gap_steps(p, split)
    return fixed if fixed is not None else p.train_max_gap_steps


def max_steps_per_sample(p: TaskParams, split: str) -> int:
    """Steps of a sample whose every element has the split's largest gap (lognormal: its 99th percentile)."""
    return p.seq_len * (1 + _gap_bound(p, split))


def shard_ranges(p: TaskParams, split: str, n: int) -> list[tuple[int, int]]:
    """Sample ranges of the shards of a split: a pure function of the parameters, never of num_proc."""
    size = max(1, min(SHARD_SAMPLES, SHARD_STEPS // max_steps_per_sample(p, split)))
    return [(lo, min(lo + size, n)) for lo in range(0, n, size)]


def features_of(p: TaskParams, grammar: Grammar) -> datasets.Features:
    return datasets.Features({
        "index": datasets.Value("int64"),
        "input_ids": datasets.List(datasets.Value("int16")),
        "labels": datasets.List(datasets.ClassLabel(names=grammar.states)),
        "element_index": datasets.List(datasets.Value(element_index_dtype(p))),
        "num_elements": datasets.Value("int32"),
    })


@functools.lru_cache(maxsize=8)
def sampler_for(p: TaskParams) -> Sampler:
    """One sampler per parameter set and process (its string law takes a tenth of a second to build)."""
    return Sampler(p, make_grammar(p))


def shard_table(sampler: Sampler, split: str, lo: int, hi: int, schema: pa.Schema) -> pa.Table:
    """Samples lo..hi-1 of a split as one Arrow table, built from the engine's flat arrays."""
    batch = sampler.generate(split, np.arange(lo, hi))
    if batch.offsets[-1] > MAX_STEPS:
        raise ParameterError(f"seq_len={sampler.params.seq_len!r} is invalid: allowed a length whose "
                             f"{hi - lo} samples per shard have at most {MAX_STEPS} steps")
    offsets = pa.array(batch.offsets.astype(np.int32))

    def steps(name, values):
        kind = schema.field(name).type
        return pa.ListArray.from_arrays(offsets, pa.array(values.astype(kind.value_type.to_pandas_dtype(),
                                                                        copy=False)), type=kind)

    columns = [pa.array(batch.indices, pa.int64()), steps("input_ids", batch.input_ids),
               steps("labels", batch.labels), steps("element_index", batch.element_index),
               pa.array(batch.num_elements.astype(np.int32))]
    return pa.Table.from_arrays(columns, schema=schema)


def shard_job(p: TaskParams, split: str, lo: int, hi: int, schema: pa.Schema, ceiling_upto: int):
    """A worker's task: the shard's table, and the Bayes ceiling counts of its samples below ceiling_upto."""
    exit_if_orphaned()
    sampler = sampler_for(p)
    table = shard_table(sampler, split, lo, hi, schema)
    counts = None
    if lo < ceiling_upto:
        batch = sampler.generate(split, np.arange(lo, min(hi, ceiling_upto)))
        counts = ceiling_counts(sampler, split, batch.rows())
    return table, counts


_PARENT_PID = None  # set in pool workers


def _worker_init(parent_pid: int):
    # The parent handles Ctrl-C and SIGTERM and terminates the pool: workers just stop.
    global _PARENT_PID
    _PARENT_PID = parent_pid
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def exit_if_orphaned() -> None:
    """A worker whose parent was killed (SIGKILL) stops before its next shard instead of writing on."""
    if _PARENT_PID is not None and os.getppid() != _PARENT_PID:
        os._exit(1)


class ShardPool:
    """Runs jobs on `num_proc` processes (or here when <= 1), yielding results in job order.

    At most 2 x num_proc jobs are in flight, so memory stays flat in the split size.
    """

    def __init__(self, num_proc: int | None = None):
        self.num_proc = num_proc or 1
        self._pool = None
        if self.num_proc > 1:
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            self._pool = multiprocessing.get_context(method).Pool(self.num_proc, initializer=_worker_init,
                                                                     initargs=(os.getpid(),))

    def imap(self, fn, jobs) -> Iterator:
        """fn(*job) for each job, in job order."""
        if self._pool is None:
            yield from (fn(*job) for job in jobs)
            return
        pending = collections.deque()
        for job in jobs:
            pending.append(self._pool.apply_async(fn, job))
            if len(pending) >= 2 * self.num_proc:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def shards(self, p: TaskParams, split: str, n: int, schema: pa.Schema,
               ceiling_samples: int = 0) -> Iterator[tuple[pa.Table, dict | None]]:
        jobs = [(p, split, lo, hi, schema, ceiling_samples) for lo, hi in shard_ranges(p, split, n)]
        return self.imap(shard_job, jobs)

    def submit(self, fn, *args):
        """Run fn(*args) beside the shards; `.get()` its result."""
        if self._pool is None:
            return _Done(fn(*args))
        return self._pool.apply_async(fn, args)

    def close(self, terminate: bool = False):
        if self._pool is not None:
            (self._pool.terminate if terminate else self._pool.close)()
            self._pool.join()
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, kind, err, tb):
        self.close(terminate=kind is not None)


@dataclasses.dataclass
class _Done:
    value: object

    def get(self):
        return self.value


def build_split(params: TaskParams, split: str, num: int, cache_dir: str | None = None,
                num_proc: int | None = None) -> datasets.Dataset:
    """One split of a task as a `datasets.Dataset`, without building the others.

    Same rows, columns and features as `SelectivBench(...).as_dataset(split)`. The Arrow file is
    cached under cache_dir (default: datasets' cache) keyed by (parameters, split, num), written
    atomically, and memory-mapped.
    """
    split_code(split)
    check_size("num", num)
    check_storage(params)
    if gap_of_split(split) is not None and gap_of_split(split) not in params.test_gaps:
        raise ParameterError(f"split={split!r} is invalid: allowed train, validation, test"
                             f"{''.join(', ' + gap_split(g) for g in params.test_gaps)}")
    features = features_of(params, sampler_for(params).grammar)
    key = json.dumps({"params": params.to_dict(), "split": split, "num": num,
                      "version": str(SelectivBench.VERSION)}, sort_keys=True)
    folder = Path(cache_dir or datasets.config.HF_DATASETS_CACHE) / "selectivbench_splits"
    path = folder / f"{split}-{hashlib.sha256(key.encode()).hexdigest()[:20]}.arrow"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".building-", suffix=".arrow")
        os.close(fd)
        try:
            with ShardPool(num_proc) as pool:
                writer = datasets.arrow_writer.ArrowWriter(features=features, path=tmp)
                for table, _ in pool.shards(params, split, num, features.arrow_schema):
                    writer.write_table(table)
                writer.finalize()
                writer.close()
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    info = datasets.DatasetInfo(features=features, description=key)
    return datasets.Dataset.from_file(str(path), info=info, split=split)


CITATION = """@article{selectivbench2026,
  title   = {Dissecting Linear Recurrent Models: How Different Gating Strategies Drive Selectivity and Generalization},
  journal = {arXiv preprint arXiv:2601.12598},
  year    = {2026},
  url     = {https://arxiv.org/abs/2601.12598}
}"""
