"""A task's samples as Arrow tables, shard by shard, and the process pool that makes them.

A shard is a range of sample indices (`shard_ranges`: a pure function of the parameters, never of
the number of processes); `shard_table` turns the sampler's flat arrays into one Arrow table. The
`ShardPool` spreads shards over processes and hands them back in order, so the bytes written never
depend on the number of processes.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import multiprocessing
import os
import signal
from typing import Iterator

import datasets
import numpy as np
import pyarrow as pa

from ..errors import ParameterError, check_int
from .ceiling import ceiling_counts
from .config import TaskParams, gap_split
from .grammar import Grammar
from .grammar_draw import make_grammar
from .sampler import Sampler, split_gap_steps

SHARD_SAMPLES = 1000  # at most this many samples per shard (one parquet row group); num_proc splits shards
SHARD_STEPS = 1 << 22  # ... and at most about this many steps, so long gaps make smaller shards
MAX_STEPS = (1 << 31) - 1  # list offsets are int32 (datasets' List)
# Samples per split: beyond this the shard list alone outgrows memory before a sample is drawn, and
# even 2-step samples make a split of over 4e9 steps (the paper's largest split has 200,000).
MAX_SPLIT_SAMPLES = (1 << 31) - 1


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
