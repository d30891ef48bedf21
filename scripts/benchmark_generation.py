"""Generation speed at the paper's task-2 setting (V=41, k=d=40, seq_len 200, gaps 1-10 steps).

Two figures: the sampling engine alone (numpy, sharded over processes), and the full write of a
`datasets` split (engine + Arrow encoding + cache files) with the builder's num_proc. The last
line projects the write of the 200,000-sample training set.

    python scripts/benchmark_generation.py [--samples 20000] [--num-proc 2]
"""
import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from selectivbench.builders import Sampler, SelectivBench, make_grammar, task_params
from selectivbench.builders.builder import shard_ranges

PARAMS = task_params("gapped")


def _engine_shard(bounds):
    lo, hi = bounds
    s = Sampler(PARAMS, make_grammar(PARAMS))
    b = s.generate("train", np.arange(lo, hi))
    return int(b.num_elements.sum()), len(b.labels)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=20_000)
    ap.add_argument("--num-proc", type=int, default=os.cpu_count())
    args = ap.parse_args()
    n, procs = args.samples, args.num_proc
    print(f"task-2 setting: V={PARAMS.vocab_size} k=d={PARAMS.ambiguities} seq_len={PARAMS.seq_len} "
          f"gaps uniform({PARAMS.gap_low}, {PARAMS.gap_high}); {n} samples, {procs} process(es)")

    t0 = time.perf_counter()
    with ProcessPoolExecutor(procs) as pool:
        parts = list(pool.map(_engine_shard, shard_ranges(n)))
    engine_s = time.perf_counter() - t0
    elements = sum(p[0] for p in parts)
    steps = sum(p[1] for p in parts)
    print(f"engine : {engine_s:7.2f} s  {n / engine_s:9.0f} samples/s  {elements / engine_s:12.0f} symbols/s  "
          f"{steps / engine_s:12.0f} steps/s")

    with tempfile.TemporaryDirectory() as cache:
        builder = SelectivBench(config_name="gapped", cache_dir=cache, num_train=n, num_validation=0, num_test=0)
        t0 = time.perf_counter()
        builder.download_and_prepare(num_proc=procs if procs > 1 else None)
        write_s = time.perf_counter() - t0
    print(f"dataset: {write_s:7.2f} s  {n / write_s:9.0f} samples/s  {elements / write_s:12.0f} symbols/s  "
          f"(grammar, Arrow encoding and cache files included)")
    print(f"projected_engine_200k_s={engine_s * 200_000 / n:.1f}")
    print(f"projected_train_200k_s={write_s * 200_000 / n:.1f}")


if __name__ == "__main__":
    main()
