"""GPU check: the fast path of each mixer against the pure-PyTorch reference.

Needs CUDA and `fla-core` (pip install flash-linear-attention) and/or `mamba-ssm`; mixers whose
library is missing are listed and skipped. fla runs on half precision, so every mixer runs under
bf16 autocast with use_fast_kernels=False (reference, computed in float32 inside the kernels) and
True (fla / mamba-ssm) on the same weights: logits and gradients must agree to bf16 precision, and
forward+backward tokens/s of both are printed. Then every mixer's chunked form on CUDA (fast path
on) is checked against its step-by-step recurrent form, and against the same sequence fed in
pieces of 1, 7, 64 and the rest steps with the carried state (the kernels' initial_state /
output_final_state; mamba-ssm's kernel starts from zero and the glue adds the entering state).

    python scripts/check_fast_kernels.py [--batch 8 --seq 1024]
"""
import argparse
import importlib
import importlib.util
import time

import torch

from selectivbench.models import MIXERS, SelectivBenchConfig, SelectivBenchForTokenClassification

FAST_MIXERS = {"fla": ("retnet", "mamba2", "gla", "deltanet", "gated_deltanet", "gated_deltaproduct"),
               "mamba_ssm": ("mamba",)}
SIZE = dict(vocab_size=41, num_labels=1601, d_model=128, n_layers=2, n_heads=4, d_state=16)


def build(mixer, fast, device):
    torch.manual_seed(0)
    cfg = SelectivBenchConfig(mixer=mixer, use_fast_kernels=fast, **SIZE)
    return SelectivBenchForTokenClassification(cfg).to(device)


def run(model, ids, labels):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(ids, labels=labels)
    out.loss.backward()
    return out.logits.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def tokens_per_s(model, ids, labels, reps=5):
    run(model, ids, labels)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        run(model, ids, labels)
    torch.cuda.synchronize()
    return ids.numel() * reps / (time.perf_counter() - t0)


def rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("check_fast_kernels.py compares the CUDA kernels with the reference: it needs a CUDA device")
    dev = torch.device("cuda")
    found = [lib for lib in FAST_MIXERS if importlib.util.find_spec(lib) is not None]
    versions = ", ".join(f"{lib} {getattr(importlib.import_module(lib), '__version__', '?')}" for lib in found)
    print(f"torch {torch.__version__}, {versions or 'no fast kernel library'}, {torch.cuda.get_device_name()}")
    for lib in set(FAST_MIXERS) - set(found):
        print(f"{lib} not installed: skipping {', '.join(FAST_MIXERS[lib])}")
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 42, (args.batch, args.seq), generator=g).to(dev)
    labels = torch.randint(0, 1601, (args.batch, args.seq), generator=g).to(dev)
    print("| mixer | logits rel err | worst grad rel err | reference tok/s | fast tok/s |")
    print("|---|---|---|---|---|")
    worst = 0.0
    for m in (m for lib in found for m in FAST_MIXERS[lib]):
        ref, fast = build(m, False, dev), build(m, True, dev)
        lr, gr = run(ref, ids, labels)
        lf, gf = run(fast, ids, labels)
        g_err = max(rel(gf[n], gr[n]) for n in gr)
        worst = max(worst, rel(lf, lr), g_err)
        print(f"| `{m}` | {rel(lf, lr):.2e} | {g_err:.2e} | {tokens_per_s(ref, ids, labels):,.0f} | "
              f"{tokens_per_s(fast, ids, labels):,.0f} |", flush=True)
    short = ids[:2, :96]
    recurrent_worst = stream_worst = 0.0
    for m in MIXERS:
        model = build(m, True, dev).eval()
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            a, b = model(short).logits.float(), model(short, recurrent=True).logits.float()
            state, pieces = None, []
            for start, stop in ((0, 1), (1, 8), (8, 72), (72, 96)):
                out = model(short[:, start:stop], state=state, use_cache=True)
                state, pieces = out.state, pieces + [out.logits.float()]
            streamed = torch.cat(pieces, 1)
        recurrent_worst, stream_worst = max(recurrent_worst, rel(a, b)), max(stream_worst, rel(streamed, a))
        print(f"cuda chunked vs recurrent `{m}`: {rel(a, b):.2e}; streamed in pieces vs one pass: {rel(streamed, a):.2e}")
    print(f"worst_fast_vs_reference={worst:.2e} worst_chunked_vs_recurrent_cuda={recurrent_worst:.2e} "
          f"worst_streamed_vs_one_pass_cuda={stream_worst:.2e}")


if __name__ == "__main__":
    main()
