"""Generation speed and memory at the paper's task-2 setting (V=41, k=d=40, seq_len 200, gaps 1-10 steps).

Figures, each printed per repetition and as min / median / max:
- engine: the sampler alone on `--num-proc` processes (one sampler per process, as the builder);
- dataset: a loadable `datasets` train split written by the builder (engine + Arrow + cache files),
  projected to the paper's 200,000 samples (`projected_train_200k_s`, and its CPU seconds, which
  a loaded shared machine inflates less than the wall time);
- ceiling: the Bayes ceiling of the first 1,000 samples of one split (what `generate` scores per split);
- generate (with `--generate`): `selectivbench generate gapped` as a subprocess at each `--samples`
  training size (validation and test 1,000 each): wall and CPU seconds, and the peak memory of its
  process tree (RSS summed, which counts pages shared by the forked workers once per process, and
  PSS, which splits them).

    python scripts/benchmark_generation.py [--samples 20000] [--num-proc 2] [--repeats 3]
    python scripts/benchmark_generation.py --generate --samples 20000 100000 200000 --repeats 1
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import psutil

from selectivbench.builders import SelectivBench, task_params
from selectivbench.builders.shards import ShardPool, sampler_for, shard_ranges
from selectivbench.builders.ceiling import bayes_ceiling
from selectivbench.hub.dataset_records import CEILING_SAMPLES

PARAMS = task_params("gapped")


def _engine_shard(lo, hi):
    b = sampler_for(PARAMS).generate("train", np.arange(lo, hi))
    return int(b.num_elements.sum()), len(b.labels)


def cpu_s():
    """CPU seconds of this process and of its reaped children (pool workers once joined)."""
    return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for f in ("ru_utime", "ru_stime"))


def engine_s(n, procs):
    """Wall and CPU seconds of the sampler alone (CPU includes building each process's sampler)."""
    cpu0 = cpu_s()
    with ShardPool(procs) as pool:
        list(pool.imap(_engine_shard, [(0, 10)] * max(procs, 1)))  # build each process's sampler first
        t0 = time.perf_counter()
        parts = list(pool.imap(_engine_shard, shard_ranges(PARAMS, "train", n)))
        wall = time.perf_counter() - t0
    return wall, cpu_s() - cpu0, sum(p[1] for p in parts)


def dataset_s(n, procs):
    """Wall and CPU seconds of writing a loadable train split with the builder."""
    with tempfile.TemporaryDirectory() as cache:
        builder = SelectivBench(config_name="gapped", cache_dir=cache, num_train=n, num_validation=0, num_test=0)
        cpu0, t0 = cpu_s(), time.perf_counter()
        builder.download_and_prepare(num_proc=procs if procs > 1 else None)
        wall, cpu = time.perf_counter() - t0, cpu_s() - cpu0
        assert builder.as_dataset("train").num_rows == n
        return wall, cpu


def ceiling_s():
    sampler = sampler_for(PARAMS)
    t0 = time.perf_counter()
    bayes_ceiling(sampler, "validation", CEILING_SAMPLES)
    return time.perf_counter() - t0


def generate_run(n, procs):
    """Wall s, CPU s, peak RSS and PSS (GB) of `selectivbench generate gapped` at n training samples."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "selectivbench", "generate", "gapped", "--out", f"{out}/data",
               "--num-proc", str(procs), "--num-train", str(n)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        root, rss, pss = psutil.Process(proc.pid), 0, 0
        while proc.poll() is None:
            try:
                tree = [root] + root.children(recursive=True)
                mem = [p.memory_full_info() for p in tree]
                rss, pss = max(rss, sum(m.rss for m in mem)), max(pss, sum(m.pss for m in mem))
            except psutil.Error:
                pass
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.read().decode())
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        return wall, cpu, rss / 2**30, pss / 2**30


def spread(values, fmt="{:.1f}"):
    return "min " + fmt.format(min(values)) + " median " + fmt.format(statistics.median(values)) + \
        " max " + fmt.format(max(values))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, nargs="+", default=[20_000])
    ap.add_argument("--num-proc", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--generate", action="store_true", help="also time `selectivbench generate` at each size")
    args = ap.parse_args()
    procs = args.num_proc
    print(f"task-2 setting: V={PARAMS.vocab_size} k=d={PARAMS.ambiguities} seq_len={PARAMS.seq_len} "
          f"gaps uniform({PARAMS.gap_low}, {PARAMS.gap_high}); {procs} process(es); load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for n in args.samples:
        engine, dataset, dataset_cpu = [], [], []
        for _ in range(args.repeats):
            seconds, cpu, steps = engine_s(n, procs)
            engine.append(seconds)
            wall, wcpu = dataset_s(n, procs)
            dataset.append(wall)
            dataset_cpu.append(wcpu)
            print(f"n={n}: engine {seconds:6.2f} s ({n / seconds:7.0f} samples/s, {steps / seconds:10.0f} steps/s, "
                  f"{cpu:6.2f} CPU s)  dataset {wall:6.2f} s ({n / wall:7.0f} samples/s, {wcpu:6.2f} CPU s)  "
                  f"load {os.getloadavg()[0]:.1f}")
        scale = 200_000 / n
        print(f"projected_engine_200k_s={min(engine) * scale:.1f} ({spread([e * scale for e in engine])})")
        print(f"projected_train_200k_s={min(dataset) * scale:.1f} ({spread([d * scale for d in dataset])})")
        print(f"projected_train_200k_cpu_s={min(dataset_cpu) * scale:.1f} ({spread([c * scale for c in dataset_cpu])})")
    ceil = [ceiling_s() for _ in range(args.repeats)]
    print(f"ceiling_s_per_split={min(ceil):.2f} ({CEILING_SAMPLES} samples, one process; {spread(ceil, '{:.2f}')})")
    if args.generate:
        for n in args.samples:
            for _ in range(args.repeats):
                wall, cpu, rss, pss = generate_run(n, procs)
                print(f"generate gapped --num-train {n}: wall_s={wall:.1f} cpu_s={cpu:.1f} "
                      f"peak_rss_sum_gb={rss:.2f} peak_pss_gb={pss:.2f}")


if __name__ == "__main__":
    main()
