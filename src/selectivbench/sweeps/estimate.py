"""The dry run: how many runs a sweep has, how many are done, and the GPU-hours of the others."""
from __future__ import annotations

from pathlib import Path

import torch

from ..builders import TaskParams, task_params
from ..builders.builder import PAPER_SIZES
from ..models import SelectivBenchConfig, SelectivBenchForTokenClassification
from .arguments import check_arguments
from .outputs import ROW_KEYS, check_outputs, read_rows
from .plan import Run, complete_runs, plan
from .scales import SCALES, Scale

ASSUMED_TFLOPS = 50.0  # sustained model FLOP/s of one GPU (bf16/tf32 on an A100/H100-class card)
ATTENTION_MIXERS = ("transformer", "fox")  # cost grows with the sequence length


def estimate(task: str, scale: str, mixers=None, out: str = "results", launcher: str = "local",
             address: str | None = None, gpus_per_run: float | None = None, cpus_per_run: float | None = None) -> dict:
    """Runs, runs already done, and GPU-hours of the missing ones: 6 x parameters FLOPs per training
    token (forward + backward), + 6 x layers x steps x d_model per token for attention mixers,
    + 2 x parameters per evaluated token, at ASSUMED_TFLOPS. Parameters are counted exactly (meta
    device); a sequence's steps are its elements plus their expected gap steps. Recurrent scans run
    below that throughput, so read it as an order of magnitude. The arguments are checked as
    `reproduce` checks them, so a dry run fails where the real one would."""
    check_arguments(task, scale, mixers, launcher, gpus_per_run, cpus_per_run, address, out)
    s = SCALES[scale].for_task(task)
    runs = plan(task, scale, mixers)
    folder = Path(out) / f"{task}_{scale}"
    done, _ = complete_runs(read_rows(folder / "results.jsonl", keys=ROW_KEYS), s, runs)
    check_outputs(folder, out)
    todo = [r for r in runs if r.key not in done]
    flops = sum(run_flops(task, s, r) for r in todo)
    return {"runs": len(runs), "done": len(runs) - len(todo), "todo": len(todo),
            "gpu_hours": flops / (ASSUMED_TFLOPS * 1e12) / 3600,
            "assumption": f"6 x parameters FLOPs per training token (+ attention), 2 x per evaluated token, "
                          f"at {ASSUMED_TFLOPS:g} TFLOP/s sustained per GPU"}


def run_flops(task: str, s: Scale, run: Run) -> float:
    p = task_params(task, **{k: v for k, v in {**s.data, **run.overrides}.items() if k not in PAPER_SIZES})
    sizes = {**PAPER_SIZES, **{k: v for k, v in s.data.items() if k in PAPER_SIZES}}
    steps = mean_steps_per_sequence(p)
    n_layers, batch = s.train.get("n_layers", 2), s.train.get("batch_size", 64)
    train_sequences = sizes["num_train"] * s.train["epochs"] if s.train.get("epochs") \
        else s.train.get("max_steps", 1000) * batch
    eval_sequences = sizes["num_test"] * (1 + len(p.test_gaps)) + (sizes["num_validation"] if s.selects else 0)
    shape = {k: v for k, v in run.model.items() if k in ("n_heads", "d_state", "num_householder")}
    params = parameter_count(run.mixer, p, run.d_model, n_layers, **{**{"n_heads": s.train.get("n_heads", 4),
                             "d_state": s.train.get("d_state", 16)}, **shape})
    per_token = 6 * params + (6 * n_layers * steps * run.d_model if run.mixer in ATTENTION_MIXERS else 0)
    return per_token * train_sequences * steps + 2 * params * eval_sequences * steps


def mean_steps_per_sequence(p: TaskParams) -> float:
    """Elements plus the expected gap steps that follow them."""
    gap = p.duration_law.mean_steps()
    gapped_elements = max(0, p.seq_len - p.gap_start) * p.gap_prob
    return p.seq_len + gapped_elements * gap


_PARAMETERS: dict = {}


def parameter_count(mixer: str, p: TaskParams, d_model: int, n_layers: int, n_heads: int, d_state: int,
                    num_householder: int = 2) -> int:
    """Exact parameter count of the model a run trains (the config's other fields at their
    defaults, as training leaves them), built on the meta device (no memory, no time)."""
    labels = (p.vocab_size - 1 - p.ambiguities) + p.ambiguities * p.ambiguity_depth + 1  # states, '#' included
    key = (mixer, p.vocab_size, labels, d_model, n_layers, n_heads, d_state, num_householder)
    if key not in _PARAMETERS:
        config = SelectivBenchConfig(mixer=mixer, vocab_size=p.vocab_size, num_labels=labels, d_model=d_model,
                                     n_layers=n_layers, n_heads=n_heads, d_state=d_state,
                                     num_householder=num_householder)
        with torch.device("meta"):
            _PARAMETERS[key] = sum(x.numel() for x in SelectivBenchForTokenClassification(config).parameters())
    return _PARAMETERS[key]
