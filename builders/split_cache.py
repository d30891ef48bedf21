"""The private cache of single splits: `build_split` makes one split of a task as a memory-mapped
`datasets.Dataset` without building the others (training and evaluation on the fly)."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import datasets

from ..errors import ParameterError
from .builder import SelectivBench
from .config import TaskParams, gap_of_split, gap_split
from .sampler import split_code
from .shards import ShardPool, check_size, check_storage, features_of, sampler_for


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
