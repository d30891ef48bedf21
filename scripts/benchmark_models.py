"""Speed and memory of every token mixer on this CPU.

1. forward+backward tokens/s, B=8, T=256, d_model=128, 2 layers, 1601 classes (chunked forms);
2. chunked vs step-by-step forward at T=1024 (B=8), the speed-up of the chunked form;
3. peak memory of streaming inference (B=1, fed 256 tokens at a time with the carried state)
   at T = 1k, 4k, 16k: growth of the peak resident memory, sampled after every piece (glibc told
   to mmap blocks over 64 KiB, so freed memory is returned and RSS follows live memory), and the
   exact bytes of the state carried between steps;
4. mamba against transformers' own MambaModel (its torch path) at equal size, forward+backward.

Last line: min_chunked_speedup_T1024=<x over the recurrent mixers> mamba_vs_transformers=<y>.

    python scripts/benchmark_models.py [--mixers gla,mamba] [--stream-max 16384]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

from selectivbench.models import MIXERS, SelectivBenchConfig, SelectivBenchForTokenClassification, SelectivBenchModel

ATTENTION = ("transformer", "fox")
SIZE = dict(vocab_size=41, num_labels=1601, d_model=128, n_layers=2, n_heads=4, d_state=16)


def model_for(mixer):
    torch.manual_seed(0)
    return SelectivBenchForTokenClassification(SelectivBenchConfig(mixer=mixer, **SIZE))


def timed(fn, reps):
    """Seconds per call: the fastest of `reps` calls after a warm-up (timeit's advice: slower calls
    measure the other load on the machine, not the code)."""
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def train_tokens_per_s(model, B=8, T=256, reps=3):
    ids = torch.randint(0, 42, (B, T))
    labels = torch.randint(0, model.config.num_labels, (B, T)) if hasattr(model.config, "num_labels") else None

    def step():
        model.zero_grad(set_to_none=True)
        out = model(ids, labels=labels) if labels is not None else model(ids)
        loss = out.loss if getattr(out, "loss", None) is not None else out.last_hidden_state.square().mean()
        loss.backward()

    return B * T / timed(step, reps)


@torch.no_grad()
def chunked_speedup(model, B=8, T=1024):
    """Mixer stack only (the base model): the classifier costs both forms the same."""
    model = model.model
    ids = torch.randint(0, 42, (B, T))
    chunked = timed(lambda: model(ids), 5)
    stepwise = timed(lambda: model(ids, recurrent=True), 2)
    return stepwise / chunked, B * T / chunked, B * T / stepwise


def rss_mb():
    """Current resident set size. Not ru_maxrss: Linux keeps that across fork+exec, so a child of
    a big parent would start at the parent's high-water mark."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


@torch.no_grad()
def stream_memory(mixer, t_max):
    """Run in a child process: RSS high-water mark at 1k, 4k, 16k streamed tokens."""
    model = model_for(mixer).eval()
    ids = torch.randint(0, 42, (1, t_max))
    out = model(ids[:, :8], use_cache=True)  # baseline after the first steps
    base = peak = rss_mb()
    state, marks, t = out.state, {}, 8
    while t < t_max:
        n = min(256 - t % 256, t_max - t)
        state = model(ids[:, t:t + n], state=state).state
        t += n
        peak = max(peak, rss_mb())
        if t in (1024, 4096, 16384) or t == t_max:
            nbytes = sum(x.numel() * x.element_size() for layer in state for x in _tensors(layer))
            marks[t] = {"rss_growth_mb": round(peak - base, 1), "state_mb": round(nbytes / 2**20, 3)}
    return marks


def _tensors(obj):
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif hasattr(obj, "tensors"):  # a KV cache: count what it holds, not its spare capacity
        yield from obj.tensors()


def transformers_mamba_tokens_per_s():
    from transformers import MambaConfig, MambaModel

    torch.manual_seed(0)
    cfg = MambaConfig(vocab_size=42, hidden_size=SIZE["d_model"], state_size=SIZE["d_state"], expand=2,
                      conv_kernel=4, num_hidden_layers=SIZE["n_layers"], use_cache=False)
    return train_tokens_per_s(MambaModel(cfg))


def ours_mamba_base_tokens_per_s():
    torch.manual_seed(0)
    return train_tokens_per_s(SelectivBenchModel(SelectivBenchConfig(mixer="mamba", **SIZE)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mixers", default=",".join(MIXERS))
    ap.add_argument("--stream-max", type=int, default=16384)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(stream_memory(args.child, args.stream_max)))
        return
    torch.set_num_threads(torch.get_num_threads())
    mixers = args.mixers.split(",")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; size {SIZE}")
    print("| mixer | train tok/s (T=256) | chunked tok/s (T=1024) | step tok/s (T=1024) | speed-up | "
          "stream RSS growth MB 1k/4k/16k | state MB 1k/4k/16k |")
    print("|---|---|---|---|---|---|---|")
    speedups = {}
    for m in mixers:
        model = model_for(m)
        train = train_tokens_per_s(model.train())
        speed, chunk_tps, step_tps = chunked_speedup(model.eval())
        speedups[m] = speed
        # big blocks mmapped (returned on free), so the RSS high-water mark follows live memory
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        child = subprocess.run([sys.executable, __file__, "--child", m, "--stream-max", str(args.stream_max)],
                               capture_output=True, text=True, check=True, env=env)
        marks = json.loads(child.stdout)
        rss = "/".join(str(v["rss_growth_mb"]) for v in marks.values())
        state = "/".join(str(v["state_mb"]) for v in marks.values())
        print(f"| `{m}` | {train:,.0f} | {chunk_tps:,.0f} | {step_tps:,.0f} | {speed:.1f}x | {rss} | {state} |",
              flush=True)
    theirs = transformers_mamba_tokens_per_s()
    ours = ours_mamba_base_tokens_per_s()
    print(f"mamba forward+backward (base model, B=8, T=256): selectivbench {ours:,.0f} tok/s, "
          f"transformers MambaModel (torch path) {theirs:,.0f} tok/s")
    recurrent = [speedups[m] for m in mixers if m not in ATTENTION]
    print(f"min_chunked_speedup_T1024={min(recurrent):.2f} mamba_vs_transformers={ours / theirs:.2f}")


if __name__ == "__main__":
    main()
