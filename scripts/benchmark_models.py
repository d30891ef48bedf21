"""Speed and memory of every token mixer on this CPU.

1. forward+backward tokens/s, B=8, T=256, d_model=128, 2 layers, 1601 classes (chunked forms);
2. chunked vs step-by-step forward at T=1024 (B=8), the speed-up of the chunked form;
   and streaming: the same 1,024 steps fed in four pieces of 256 with the carried state (chunked
   form), its tokens/s and its ratio to one chunked pass;
3. peak memory of streaming inference (B=1, fed 256 tokens at a time with the carried state)
   at T = 1k, 4k, 16k: growth of the peak resident memory, sampled after every piece (glibc told
   to mmap blocks over 64 KiB, so freed memory is returned and RSS follows live memory), and the
   exact bytes of the state carried between steps;
4. against the peers a CPU user would pick, transformers' own torch paths of the same layers at
   equal size (B=8, T=256, d_model=128, 2 layers, forward+backward of the base models):
   MambaModel, Mamba2Model, and a stack of Qwen3-Next's GatedDeltaNet layers (embedding, then
   layer -> residual -> LayerNorm, as our blocks), each configured as our block (and the paper's):
   Mamba2 with 2 x n_heads heads of d_model / n_heads, GatedDeltaNet with values of 2 x d_head and
   its short conv; the parameter counts per layer are equal.

Timings are the fastest of a few repetitions; with --runs N every timing is repeated N times
(the machine may be shared: the spread says how far to trust one run) and the summary takes
the medians. Last lines: the per-run values, then
min_chunked_speedup_T1024=<x> mamba_vs_transformers=<y> min_stream_over_chunked=<z> min_vs_transformers=<w>
(x, z over the recurrent mixers; w over mamba, mamba2, gated_deltanet).

    python scripts/benchmark_models.py [--mixers gla,mamba] [--stream-max 16384] [--runs 3]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

from selectivbench.allocator import keep_freed_memory
from selectivbench.models import MIXERS, SelectivBenchConfig, SelectivBenchForTokenClassification, SelectivBenchModel

ATTENTION = ("transformer", "fox")
SIZE = dict(vocab_size=41, num_labels=1601, d_model=128, n_layers=2, n_heads=4, d_state=16)
EXPAND_V = 2  # our delta-rule blocks' value width (the config default, the paper's fla setting)


def model_for(mixer):
    torch.manual_seed(0)
    return SelectivBenchForTokenClassification(SelectivBenchConfig(mixer=mixer, **SIZE))


CLOCK = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCK["wall"]


def timed(fn, reps):
    """Seconds per call: the fastest of `reps` calls after a warm-up (timeit's advice: slower calls
    measure the other load on the machine, not the code). With --clock cpu, the process's CPU
    seconds (all its threads): steadier than wall time on a machine shared with other jobs."""
    fn()
    times = []
    for _ in range(reps):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return min(times)


def train_tokens_per_s(model, B=8, T=256, reps=3):
    ids = torch.randint(0, 42, (B, T))
    labels = torch.randint(0, model.config.num_labels, (B, T)) if hasattr(model, "classifier") else None

    def step():
        model.zero_grad(set_to_none=True)
        out = model(ids, labels=labels) if labels is not None else model(ids)
        loss = out.loss if getattr(out, "loss", None) is not None else out.last_hidden_state.square().mean()
        loss.backward()

    return B * T / timed(step, reps)


@torch.no_grad()
def chunked_stepwise_streamed(model, B=8, T=1024, piece=256):
    """Seconds of one chunked pass, of the per-token loop, and of the stream fed in pieces with
    the carried state. Mixer stack only (the base model): the classifier costs all three the same."""
    model = model.model
    ids = torch.randint(0, 42, (B, T))

    def streamed():
        state = None
        for start in range(0, T, piece):
            state = model(ids[:, start:start + piece], state=state, use_cache=True).state

    return timed(lambda: model(ids), 5), timed(lambda: model(ids, recurrent=True), 2), timed(streamed, 5)


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
            marks[t] = {"rss_growth_mb": round(peak - base, 1), "state_mb": round(state.nbytes() / 2**20, 3)}
    return marks


class _Hidden:
    def __init__(self, last_hidden_state):
        self.last_hidden_state = last_hidden_state


class QwenGatedDeltaNetStack(torch.nn.Module):
    """Qwen3-Next's GatedDeltaNet layer (its torch path) in our block layout: embedding, then
    n_layers x (layer -> residual -> LayerNorm). Heads and head sizes as our gated_deltanet."""

    def __init__(self):
        super().__init__()
        from transformers import Qwen3NextConfig
        from transformers.models.qwen3_next.modeling_qwen3_next import Qwen3NextGatedDeltaNet

        D, H, L = SIZE["d_model"], SIZE["n_heads"], SIZE["n_layers"]
        cfg = Qwen3NextConfig(vocab_size=42, hidden_size=D, num_hidden_layers=L, layer_types=["linear_attention"] * L,
                              linear_num_key_heads=H, linear_num_value_heads=H, linear_key_head_dim=D // H,
                              linear_value_head_dim=EXPAND_V * D // H, linear_conv_kernel_dim=4, num_attention_heads=H,
                              num_key_value_heads=H)
        self.embed = torch.nn.Embedding(42, D)
        self.layers = torch.nn.ModuleList(Qwen3NextGatedDeltaNet(cfg, i) for i in range(L))
        self.norms = torch.nn.ModuleList(torch.nn.LayerNorm(D) for _ in range(L))

    def forward(self, ids):
        x = self.embed(ids)
        for layer, norm in zip(self.layers, self.norms):
            x = norm(x + layer(x))
        return _Hidden(x)


def transformers_peer(mixer):
    """transformers' own model of the same layer, at our size (its torch path on CPU)."""
    from transformers import Mamba2Config, Mamba2Model, MambaConfig, MambaModel

    torch.manual_seed(0)
    D, H, N, L = SIZE["d_model"], SIZE["n_heads"], SIZE["d_state"], SIZE["n_layers"]
    if mixer == "mamba":
        return MambaModel(MambaConfig(vocab_size=42, hidden_size=D, state_size=N, expand=2, conv_kernel=4,
                                      num_hidden_layers=L, use_cache=False))
    if mixer == "mamba2":
        return Mamba2Model(Mamba2Config(vocab_size=42, hidden_size=D, num_heads=2 * H, head_dim=D // H, expand=2,
                                        state_size=N, n_groups=1, conv_kernel=4, num_hidden_layers=L,
                                        use_cache=False))
    return QwenGatedDeltaNetStack()


PEERS = {"mamba": "MambaModel", "mamba2": "Mamba2Model", "gated_deltanet": "Qwen3-Next GatedDeltaNet"}


def ours_base(mixer):
    torch.manual_seed(0)
    return SelectivBenchModel(SelectivBenchConfig(mixer=mixer, **SIZE))


def median(values):
    return statistics.median(values)


def spread(values, fmt="{:.2f}"):
    return "[" + ", ".join(fmt.format(v) for v in values) + "]"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mixers", default=",".join(MIXERS))
    ap.add_argument("--stream-max", type=int, default=16384)
    ap.add_argument("--runs", type=int, default=1, help="repeat every timing this many times; report medians")
    ap.add_argument("--clock", choices=tuple(CLOCK), default="wall", help="cpu: process CPU time (shared machines)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--malloc", choices=("keep", "default"), default="keep",
                    help="keep: glibc keeps freed memory for reuse (selectivbench.allocator; the train and "
                         "evaluate commands do the same); default: glibc's own thresholds")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        torch.set_num_threads(args.threads)
        print(json.dumps(stream_memory(args.child, args.stream_max)))
        return
    global clock
    clock = CLOCK[args.clock]
    if args.malloc == "keep":  # ours and the peers alike; the memory child measures with the default
        keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    mixers = args.mixers.split(",")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.clock} clock; size {SIZE}; "
          f"{args.runs} run(s), medians")
    print("| mixer | train tok/s (T=256) | chunked tok/s (T=1024) | step tok/s (T=1024) | speed-up | "
          "stream tok/s (4 x 256) | stream / chunked | stream RSS growth MB 1k/4k/16k | state MB 1k/4k/16k |")
    print("|---|---|---|---|---|---|---|---|---|")
    speedups, stream_ratios = {}, {}
    for m in mixers:
        model = model_for(m)
        train, chunked, stepwise, streamed = [], [], [], []
        for _ in range(args.runs):
            train.append(train_tokens_per_s(model.train()))
            c, s, st = chunked_stepwise_streamed(model.eval())
            chunked, stepwise, streamed = chunked + [c], stepwise + [s], streamed + [st]
        speedups[m] = [s / c for s, c in zip(stepwise, chunked)]
        stream_ratios[m] = [c / st for c, st in zip(chunked, streamed)]
        # big blocks mmapped (returned on free), so the RSS high-water mark follows live memory
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        child = subprocess.run([sys.executable, __file__, "--child", m, "--stream-max", str(args.stream_max),
                                "--threads", str(torch.get_num_threads())],
                               capture_output=True, text=True, check=True, env=env)
        marks = json.loads(child.stdout)
        rss = "/".join(str(v["rss_growth_mb"]) for v in marks.values())
        state = "/".join(str(v["state_mb"]) for v in marks.values())
        tokens = 8 * 1024
        print(f"| `{m}` | {median(train):,.0f} | {tokens / median(chunked):,.0f} | {tokens / median(stepwise):,.0f} | "
              f"{median(speedups[m]):.1f}x | {tokens / median(streamed):,.0f} | {median(stream_ratios[m]):.2f} | "
              f"{rss} | {state} |", flush=True)
    print("| ours (base model) | tok/s | transformers' torch path | tok/s | ratio |")
    print("|---|---|---|---|---|")
    peer_ratios = {}
    for m, peer_name in PEERS.items():
        ours_model, peer = ours_base(m), transformers_peer(m)
        ours, theirs = [], []
        for _ in range(args.runs):
            ours.append(train_tokens_per_s(ours_model))
            theirs.append(train_tokens_per_s(peer))
        peer_ratios[m] = [a / b for a, b in zip(ours, theirs)]
        print(f"| `{m}` | {median(ours):,.0f} | {peer_name} | {median(theirs):,.0f} | {median(peer_ratios[m]):.2f}x |",
              flush=True)
    recurrent = [m for m in mixers if m not in ATTENTION]
    per_run = list(zip(*(speedups[m] for m in recurrent)))
    x_runs = [min(r) for r in per_run]
    z_runs = [min(r) for r in zip(*(stream_ratios[m] for m in recurrent))]
    w_runs = [min(r) for r in zip(*peer_ratios.values())]
    print(f"runs: min_chunked_speedup_T1024={spread(x_runs)} (argmin {[recurrent[r.index(min(r))] for r in per_run]}) "
          f"mamba_vs_transformers={spread(peer_ratios['mamba'], '{:.1f}')} min_stream_over_chunked={spread(z_runs)} "
          f"min_vs_transformers={spread(w_runs)}")
    print(f"min_chunked_speedup_T1024={median(x_runs):.2f} mamba_vs_transformers={median(peer_ratios['mamba']):.2f} "
          f"min_stream_over_chunked={median(z_runs):.2f} min_vs_transformers={median(w_runs):.2f}")


if __name__ == "__main__":
    main()
