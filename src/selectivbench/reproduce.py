"""`selectivbench reproduce`: the paper's sweeps, train + evaluate, resumable, with tables and plots.

    complexity      mixers x ambiguities (k = d) x widths; the size view is the largest k
    gapped          mixers x widths (gaps of 1-10 silent steps, noise 0.2)
    distractor      mixers x widths (one forbidden symbol after 10% of the elements from element 50)
    generalization  mixers x widths trained as gapped, tested with longer fixed gaps

Scales: `paper` is the paper's grids (docs/reproducing.md: 8 layers, widths 256-1296, seeds 1-4 tying
the task and the training seed, lr x warm-up, one Adam pass over 200,000 sequences, cosine to 0
as the paper's code does, though its text says 0.1 lr); `small` is sized for a 2-core CPU;
`smoke` is a handful of tiny runs that exercise the whole machinery (tests). Where a scale has
several lr / warm-up values, the best of them per (mixer, axis value, width, seed) is chosen on the
validation split (the paper chose on test), and tables report the test accuracy of the chosen
runs, mean ± std over seeds, beside the Bayes ceiling.

Runs go through a launcher: `local` (one after the other, in this process) or `ray` (every run a
Ray task with its own resources). Either way only this driver writes: a finished run's rows are
appended to `<out>/<task>_<scale>/results.jsonl` in one write, a failed run gets a line in
`failures.jsonl` and is tried again on the next call, and a run with a row of each of its splits is skipped,
so an interrupted sweep continues where it stopped. The tables, summary and plots made from them
replace only files this command wrote (`check_outputs`).
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import io
import json
import math
import os
import socket
import statistics
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .files import atomic_write_text, file_lock, read_record, replaced, sha256, write_record
from .builders import TaskParams, task_params
from .errors import ParameterError, check_choice, is_number
from .builders.builder import PAPER_SIZES
from .builders.config import TASKS, gap_of_split, gap_split
from .evaluation.tables import FIELDS
from .models import MIXERS
from .training.args import TrainArgs, check_train_args

LAUNCHERS = ("local", "ray")
CLUSTER_EXTRA = "pip install -e '.[cluster]' (or pip install 'selectivbench[cluster]')"

# --- the paper's rules (docs/reproducing.md) --------------------------------------------------------
PAPER_MIXERS = ("mamba2", "mamba", "transformer", "deltanet", "gated_deltanet", "gated_deltaproduct", "gla")
PAPER_WIDTHS = (256, 384, 512, 648, 768, 960, 1024, 1152, 1296)
# The paper's transformer avoids widths whose head size is odd (its rotary embedding needs pairs);
# retnet, the other rotary mixer here, has the same constraint, so it follows the same map.
ROTARY_MIXERS = ("transformer", "retnet")
ROTARY_WIDTH_MAP = {648: 768, 1296: 1280, 960: None}
PAPER_HOUSEHOLDER = 4  # gated_deltaproduct's num_householder in the paper's models/ssm_models.py


def paper_heads(d_model: int, max_head_size: int = 128) -> int:
    """4 heads while d_model / 128 <= 4, else the smallest power of two >= 4 with head size <= 128."""
    heads = 4
    while d_model / heads > max_head_size:
        heads *= 2
    return heads


def paper_d_state(mixer: str, task: str) -> int:
    """128, but 64 for mamba and for every mixer on task 3 (distractor)."""
    return 64 if mixer == "mamba" or task == "distractor" else 128


PAPER_ROPE_BASE = 1000  # the paper's train.py --rope_base default, which no sweep overrides
PAPER_BF16 = ("deltanet", "gated_deltanet", "gated_deltaproduct")  # train.py runs these in bfloat16


def paper_model(mixer: str, task: str, d_model: int) -> dict:
    """The per-mixer fields the paper's rules set for a run: heads, d_state, gated_deltaproduct's
    4 Householder reflections per token (its fla layer is built with num_householder=4), the
    transformer's rotary base, and bfloat16 for the delta rules (the paper casts those whole models
    to bfloat16, fla's kernels wanting half precision; here bf16 autocast, float32 weights)."""
    model = {"n_heads": paper_heads(d_model), "d_state": paper_d_state(mixer, task)}
    if mixer == "gated_deltaproduct":
        model["num_householder"] = PAPER_HOUSEHOLDER
    if mixer == "transformer":
        model["rope_theta"] = PAPER_ROPE_BASE
    if mixer in PAPER_BF16:
        model["mixed_precision"] = "bf16"
    return model


def paper_width(mixer: str, d_model: int) -> int | None:
    """The width a mixer really trains at for a grid width; None: the paper skips it."""
    return ROTARY_WIDTH_MAP.get(d_model, d_model) if mixer in ROTARY_MIXERS else d_model


# --- scales ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scale:
    """One sweep size. `train` holds TrainArgs fields shared by every run; `per_task` replaces fields
    of this scale for one task (the paper's task 3 and 4 grids differ from the others)."""

    mixers: tuple
    seeds: tuple
    widths: tuple  # d_model of every run (complexity: of every k)
    ambiguities: tuple = ()  # complexity: k = d values
    sizes: tuple = ()  # complexity: widths run at the largest k only (the size sweep), besides `widths`
    generalization_k: int = 40
    test_gaps: tuple = ()  # generalization: fixed gaps (steps) of the extra test splits
    lrs: tuple = (1e-3,)
    warmups: tuple = (100,)
    data: dict = field(default_factory=dict)  # task overrides of every run
    train: dict = field(default_factory=dict)
    seed_is_task_seed: bool = False  # the paper's same_seed: the seed draws the grammar too
    vocab_is_k_plus_1: bool = False  # the paper's task 1 ("grammar_scale"): V = k + 1
    paper_rules: bool = False  # heads, d_state and rotary widths by the rules above
    per_task: dict = field(default_factory=dict)

    def for_task(self, task: str) -> "Scale":
        return dataclasses.replace(self, **self.per_task.get(task, {}))

    @property
    def selects(self) -> bool:
        """Several lr / warm-up values: each run is evaluated on validation to choose among them."""
        return len(self.lrs) * len(self.warmups) > 1


def _grammar_rng(name: str) -> dict:
    """Pin a scale's grammar generator where TaskParams offers the choice: `small` was run with this
    project's own, `paper` needs the paper's (its seeds 1-4 then draw the paper's very grammars)."""
    return {"grammar_rng": name} if "grammar_rng" in TaskParams.__dataclass_fields__ else {}


# min_lr_ratio 0: the paper's default scheduler (cosine_schedule_with_warmup) decays to 0; linear_init
# 'torch': its layers are built bare, so PyTorch's own nn.Linear init is all they get
PAPER_TRAIN = dict(n_layers=8, batch_size=64, epochs=1, optimizer="adam", weight_decay=0.0, min_lr_ratio=0.0,
                   dropout=0.2, norm="layernorm", linear_init="torch", eval_every=10**9, save_every=500)
SCALES: dict[str, Scale] = {
    "small": Scale(
        mixers=MIXERS, seeds=(0, 1), widths=(32,), sizes=(16, 32, 64), ambiguities=(2, 4, 6, 8),
        generalization_k=4, test_gaps=(20, 50, 100), lrs=(3e-3,), warmups=(40,),
        data=dict(vocab_size=9, seq_len=40, num_train=2000, num_validation=100, num_test=100, seed=1,
                  **_grammar_rng("selectivbench")),  # the task seed the committed results were run with
        train=dict(n_layers=2, batch_size=32, max_steps=400, eval_every=400, save_every=100)),
    "paper": Scale(
        mixers=PAPER_MIXERS, seeds=(1, 2, 3, 4), widths=PAPER_WIDTHS, ambiguities=(20, 24, 26, 30, 34, 38, 40),
        generalization_k=40, test_gaps=(10, 20, 50, 100), lrs=(5e-4, 1e-3, 2e-3), warmups=(476, 1000),
        data=dict(vocab_size=41, seq_len=200, **_grammar_rng("symseq")), train=PAPER_TRAIN, seed_is_task_seed=True,
        vocab_is_k_plus_1=True, paper_rules=True,
        per_task={"distractor": dict(widths=PAPER_WIDTHS[:-1]),
                  "generalization": dict(widths=(256, 384), lrs=(5e-4, 1e-3))}),
    "smoke": Scale(
        mixers=("gla",), seeds=(1, 2), widths=(8,), sizes=(16,), ambiguities=(2, 3), generalization_k=2,
        test_gaps=(20,), lrs=(3e-3, 1e-2), warmups=(2,),
        data=dict(seq_len=12, num_train=64, num_validation=16, num_test=16),
        train=dict(n_layers=1, batch_size=16, epochs=1, optimizer="adam", min_lr_ratio=0.1, eval_every=10**9,
                   save_every=10**9, n_heads=2, d_state=4),
        seed_is_task_seed=True, vocab_is_k_plus_1=True),
}


# --- the plan --------------------------------------------------------------------------------------
@dataclass
class Run:
    mixer: str
    seed: int  # training seed (and task seed where the scale ties them)
    d_model: int
    lr: float
    warmup: int
    overrides: dict = field(default_factory=dict)  # task parameters of this run
    model: dict = field(default_factory=dict)  # TrainArgs fields a per-mixer rule sets (`paper_model`)
    sweep: str = "mixers"  # which view the run belongs to
    axis: float | None = None  # its x value there (ambiguities)
    tag_recipe: bool = False  # the key names lr and warm-up (several are swept)

    @property
    def cell(self) -> str:
        """The key without lr / warm-up: the runs among which validation chooses."""
        k = self.overrides.get("ambiguities")
        return "-".join(x for x in (mixer_label(self.mixer), f"d{self.d_model}", f"ambiguities{k}" if k is not None else "",
                                    f"seed{self.seed}") if x)

    @property
    def key(self) -> str:
        if not self.tag_recipe:
            return self.cell
        head, seed = self.cell.rsplit("-", 1)
        return f"{head}-lr{self.lr:g}-wu{self.warmup}-{seed}"


def absolute_spec(spec: str) -> str:
    from .models.plugins import absolute_spec as absolute

    return absolute(spec)


def mixer_label(spec: str) -> str:
    """A run's mixer as its folder and table name it: a plugin's name, not its PATH.py:CLASS."""
    from .models import resolve_mixer

    return spec if spec in MIXERS else resolve_mixer(spec).name


def plan(task: str, scale: str | Scale, mixers=None) -> list[Run]:
    """Every run of a sweep, in a fixed order, without duplicates (rotary width maps can merge two)."""
    s = (SCALES[scale] if isinstance(scale, str) else scale).for_task(task)
    cells = []  # (sweep, axis, task overrides, widths)
    if task == "complexity":
        for k in s.ambiguities:
            over = {"ambiguities": k, "ambiguity_depth": k, **({"vocab_size": k + 1} if s.vocab_is_k_plus_1 else {})}
            widths = s.widths + (s.sizes if k == max(s.ambiguities) else ())
            cells.append(("ambiguities", k, over, widths))
    elif task == "generalization":
        k = s.generalization_k
        cells.append(("mixers", None, {"ambiguities": k, "ambiguity_depth": k, "test_gaps": tuple(s.test_gaps)},
                      s.widths))
    else:
        cells.append(("mixers", None, {}, s.widths))
    runs, seen = [], set()
    for sweep, axis, over, widths in cells:
        for width in dict.fromkeys(widths):
            for mixer in mixers or s.mixers:
                d_model = paper_width(mixer, width) if s.paper_rules else width
                if d_model is None:
                    continue
                model = paper_model(mixer, task, d_model) if s.paper_rules else {}
                for seed in s.seeds:
                    task_seed = {"seed": seed} if s.seed_is_task_seed else {}
                    for lr in s.lrs:
                        for warmup in s.warmups:
                            run = Run(mixer, seed, d_model, lr, warmup, {**over, **task_seed}, model, sweep, axis,
                                      s.selects)
                            if run.key not in seen:
                                seen.add(run.key)
                                runs.append(run)
    return runs


def run_splits(s: Scale, run: Run) -> list[str]:
    """The splits a run is evaluated on: it is done when its results hold a row of each."""
    gaps = {**s.data, **run.overrides}.get("test_gaps", ())
    return (["validation"] if s.selects else []) + ["test"] + [gap_split(g) for g in gaps]


def complete_runs(rows: list[dict], s: Scale, runs: list[Run]) -> tuple[set, set]:
    """(keys of the planned runs with a row for every split, keys of those with only some): a write
    cut short (a full disk) can leave a run's first rows without the others."""
    recorded = defaultdict(set)
    for r in rows:
        recorded[r["run"]].add(r["split"])
    complete, partial = set(), set()
    for run in runs:
        if run.key in recorded:
            (complete if recorded[run.key] >= set(run_splits(s, run)) else partial).add(run.key)
    return complete, partial


def run_spec(task: str, s: Scale, run: Run, folder: Path, cpu: bool) -> dict:
    """Everything a worker needs for one run, as plain data (it travels to Ray workers)."""
    data = {**s.data, **run.overrides}
    splits = run_splits(s, run)
    train = {**s.train, **run.model, "config": task, "output_dir": str(folder / "runs" / run.key),
             "mixer": run.mixer, "d_model": run.d_model, "lr": run.lr, "warmup_steps": run.warmup,
             "train_seed": run.seed, "resume": True, "cpu": cpu, "quiet": True, "task_overrides": data}
    row = {"run": run.key, "cell": run.cell, "sweep": run.sweep, "axis": run.axis, "train_seed": run.seed,
           "d_model": run.d_model, "lr": run.lr, "warmup": run.warmup}
    return {"key": run.key, "task": task, "train": train, "splits": splits, "data": data, "row": row}


def execute(spec: dict) -> list[dict]:
    """Train one run (resuming its checkpoint if any) and return its evaluation rows. Writes only
    inside the run's own folder; the driver records the rows. Each row also carries the run's
    training throughput: `train_tokens` (optimizer steps x batch x the mean sequence length of the
    training split, padding not counted) and `train_seconds` (wall time of the training alone, the
    data built before the clock starts), None for a run resumed from a checkpoint (only part of it
    trained in this call), and `run_seconds`, the wall time of the whole run."""
    from .data.task import load_task
    from .evaluation.evaluate import evaluate
    from .training.loop import total_steps, train

    started = time.perf_counter()
    args = TrainArgs(**spec["train"])
    check_train_args(args)
    resumed = (Path(args.output_dir) / "state").exists()
    task = load_task(args.config, args.data_dir, **args.task_overrides)
    trained = time.perf_counter()
    train(args, task)  # resumes the run's newest intact checkpoint, if any
    train_seconds = None if resumed else time.perf_counter() - trained
    train_tokens = total_steps(args, len(task.data["train"])) * args.batch_size * mean_length(task.data["train"])
    rows = evaluate([str(Path(args.output_dir) / "model")], [spec["task"]], None, splits=spec["splits"],
                    cpu=args.cpu, **spec["data"])
    timing = {"train_tokens": train_tokens, "train_seconds": train_seconds,
              "run_seconds": time.perf_counter() - started}
    return [{**r, **spec["row"], **timing} for r in rows]


def mean_length(dataset) -> float:
    """Mean steps per sequence of a split (its input_ids' lengths, read from Arrow without decoding)."""
    import pyarrow.compute as pc

    lengths = pc.list_value_length(dataset.data.column("input_ids"))
    return pc.sum(lengths).as_py() / max(len(dataset), 1)


# --- the dry run ----------------------------------------------------------------------------------
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
    import torch

    from .models import SelectivBenchConfig, SelectivBenchForTokenClassification

    labels = (p.vocab_size - 1 - p.ambiguities) + p.ambiguities * p.ambiguity_depth + 1  # states, '#' included
    key = (mixer, p.vocab_size, labels, d_model, n_layers, n_heads, d_state, num_householder)
    if key not in _PARAMETERS:
        config = SelectivBenchConfig(mixer=mixer, vocab_size=p.vocab_size, num_labels=labels, d_model=d_model,
                                     n_layers=n_layers, n_heads=n_heads, d_state=d_state,
                                     num_householder=num_householder)
        with torch.device("meta"):
            _PARAMETERS[key] = sum(x.numel() for x in SelectivBenchForTokenClassification(config).parameters())
    return _PARAMETERS[key]


class SweepIncomplete(Exception):
    """Some runs of a sweep failed (their errors are in failures.jsonl); the next call retries them."""


# --- the driver ------------------------------------------------------------------------------------
@dataclass
class Outcome:
    folder: Path
    planned: int
    ran: list = field(default_factory=list)  # keys finished by this call
    failed: list = field(default_factory=list)  # keys that failed in this call


def check_arguments(task, scale, mixers, launcher, gpus_per_run=None, cpus_per_run=None, address=None,
                    out: str | None = None) -> None:
    """Every bad argument is one ParameterError, before any work. `address`, `gpus_per_run` and
    `cpus_per_run` are Ray's: None (not given) unless launcher='ray'."""
    check_choice("task", task, TASKS)
    if scale not in SCALES:
        raise ParameterError(f"scale={scale!r} is invalid: allowed one of {tuple(SCALES)}")
    if mixers is not None and not mixers:
        raise ParameterError(f"mixers={list(mixers)!r} is invalid: allowed one or more of {MIXERS} or plugins")
    for m in mixers or ():
        if m not in MIXERS:  # a plugin: it must import and run, before any run starts
            from .training.args import check_mixer_spec

            try:
                check_mixer_spec(m)
            except ParameterError as err:
                raise ParameterError(f"mixers={list(mixers)!r} is invalid: allowed one or more of {MIXERS} or "
                                     f"plugins ({err})") from None
    check_launcher(launcher, gpus_per_run, cpus_per_run, address, check_ray=False)
    if out is not None:
        if not out:
            raise ParameterError("out='' is invalid: allowed a folder path (not empty)")
        check_out_folder(out, Path(out) / f"{task}_{scale}")
    if launcher == "ray":
        check_ray_installed()


def check_launcher(launcher, gpus_per_run=None, cpus_per_run=None, address=None, check_ray: bool = True) -> None:
    """The launcher and Ray's resource arguments (None: not given, as they must be unless launcher='ray')."""
    if launcher not in LAUNCHERS:
        raise ParameterError(f"launcher={launcher!r} is invalid: allowed one of {LAUNCHERS}")
    for name, value in (("address", address), ("gpus_per_run", gpus_per_run), ("cpus_per_run", cpus_per_run)):
        if value is not None and launcher != "ray":  # it would be ignored: say so rather than run without it
            raise ParameterError(f"{name}={value!r} is invalid: allowed only with --launcher ray (launcher='ray')")
    if gpus_per_run is not None and not (is_number(gpus_per_run) and gpus_per_run >= 0):
        raise ParameterError(f"gpus_per_run={gpus_per_run!r} is invalid: allowed a number >= 0")
    if cpus_per_run is not None and not (is_number(cpus_per_run) and cpus_per_run > 0):
        raise ParameterError(f"cpus_per_run={cpus_per_run!r} is invalid: allowed a number > 0")
    if launcher == "ray" and check_ray:
        check_ray_installed()


def check_ray_installed() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ParameterError(f"launcher='ray' is invalid: allowed only with Ray installed: {CLUSTER_EXTRA}") from None


def reproduce(task: str, scale: str, out: str = "results", mixers: list[str] | None = None,
              launcher: str = "local", address: str | None = None, gpus_per_run: float | None = None,
              cpus_per_run: float | None = None, ray_init: dict | None = None) -> Outcome:
    """Run the sweep's missing runs, then write its table, summary and plots. Ray's arguments:
    `address` (default: start Ray here), `gpus_per_run` (default 0: train on CPU), `cpus_per_run`
    (default 1); `ray_init`: extra `ray.init` arguments when Ray starts here (tests pass num_cpus)."""
    check_arguments(task, scale, mixers, launcher, gpus_per_run, cpus_per_run, address, out)
    if launcher == "ray" and address is not None:
        check_ray_address(address)
    gpus_per_run = gpus_per_run or 0
    cpus_per_run = 1 if cpus_per_run is None else cpus_per_run
    folder = Path(out) / f"{task}_{scale}"
    read_rows(folder / "failures.jsonl")  # both records readable before anything is written
    read_rows(folder / "results.jsonl", keys=ROW_KEYS)
    check_outputs(folder, out)
    folder.mkdir(parents=True, exist_ok=True)
    with sweep_lock(folder, out):
        s = SCALES[scale].for_task(task)
        table = folder / "results.jsonl"
        runs = plan(task, scale, mixers and [absolute_spec(m) for m in mixers])
        rows = read_rows(table, repair=True, keys=ROW_KEYS)
        done, partial = complete_runs(rows, s, runs)
        if partial:  # their rows go, and the runs are redone whole
            atomic_write_text(table, "".join(json.dumps(r) + "\n" for r in rows if r["run"] not in partial))
        read_rows(folder / "failures.jsonl", repair=True)
        # local runs use a GPU when there is one; a Ray run only when it was given one
        cpu = launcher == "ray" and not gpus_per_run
        specs = [run_spec(task, s, r, folder, cpu) for r in runs if r.key not in done]
        from .training.run_folder import check_output_dir

        for spec in specs:  # a bad combination, or a run folder holding a user's files, is one error now,
            args = TrainArgs(**spec["train"])  # not a failure per run after the others trained
            check_train_args(args)
            check_output_dir(Path(args.output_dir), args)
        outcome = Outcome(folder, len(runs))
        with ray_cluster(address, ray_init or {}) if launcher == "ray" else contextlib.nullcontext() as ray:
            if ray is not None and specs:  # before the progress bar: a refusal is then the only line
                # fixed: a Ray started here (no address), which no node will join
                check_ray_resources(ray, gpus_per_run, cpus_per_run, fixed=address is None)
            launch = (functools.partial(launch_ray, ray, specs, gpus_per_run=gpus_per_run, cpus_per_run=cpus_per_run)
                      if ray is not None else functools.partial(launch_local, specs))
            _run_all(specs, outcome, folder, f"reproduce {task} ({scale})", launch)
        rows = read_rows(table, keys=ROW_KEYS)
        complete, _ = complete_runs(rows, s, runs)
        write_outputs(task, folder, rows, out, missing=len(runs) - len(complete))
        return outcome


def _run_all(specs, outcome: Outcome, folder: Path, desc: str, launch) -> None:
    """Launch the runs; each finished run's rows are appended to results.jsonl, each failure to failures.jsonl."""
    table = folder / "results.jsonl"
    bar = tqdm(total=outcome.planned, initial=outcome.planned - len(specs), desc=desc)

    def finished(spec, rows):  # a spec's `record_to`: the folder of its task's records (score's four tasks)
        append_lines(Path(spec["record_to"]) / "results.jsonl" if "record_to" in spec else table, rows)
        outcome.ran.append(spec["key"])
        _advance(bar, outcome, len(specs))

    def failed(spec, error: BaseException, trace: str | None = None):
        message = " ".join(f"{type(error).__name__}: {error}".split())[:500]
        append_lines(Path(spec.get("record_to", folder)) / "failures.jsonl", [{
            "run": spec["key"], "error": message, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "traceback": (trace or "".join(traceback.format_exception(error)))[-4000:]}])
        outcome.failed.append(spec["key"])
        _advance(bar, outcome, len(specs))

    try:
        launch(finished, failed)
    finally:
        bar.close()


LOCK_FILE = ".reproduce.lock"


def sweep_lock(folder: Path, out: str, command: str = "reproduce", lock_file: str = LOCK_FILE):
    """One driver per sweep folder: a second one (a batch job resubmitted while the first runs) would
    train the same runs into the same folders and record their rows twice."""
    return file_lock(folder / lock_file, busy=f"out={str(out)!r} is invalid: allowed a sweep folder no other "
                     f"`selectivbench {command}` is running in ({folder} is in use: wait for that driver or stop it)",
                     what="run one driver at a time")


def check_ray_address(address: str, timeout: float = 10.0) -> None:
    """A HOST:PORT that nothing answers on: Ray would retry for many minutes in silence."""
    if address == "auto" or address.startswith("ray://"):
        return  # Ray itself fails fast on these
    host, _, port = address.rpartition(":")
    allowed = "'auto', 'ray://HOST:PORT', or the HOST:PORT of a Ray head reachable from here"
    if not host or not port.isdigit():
        raise ParameterError(f"address={address!r} is invalid: allowed {allowed}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise ParameterError(f"address={address!r} is invalid: allowed {allowed} (connecting failed: "
                             f"{err.strerror or err})") from None


def _advance(bar, outcome: Outcome, todo: int) -> None:
    bar.update(1)
    bar.set_postfix(done=len(outcome.ran), failed=len(outcome.failed),
                    left=todo - len(outcome.ran) - len(outcome.failed))


def launch_local(specs, finished, failed, worker=None) -> None:
    """One run after the other in this process; `worker` (default `execute`) trains and evaluates one."""
    for spec in specs:
        try:
            rows = (worker or execute)(spec)
        except Exception as error:  # recorded and retried next call; Ctrl-C still stops the sweep
            failed(spec, error)
        else:
            finished(spec, rows)


def check_ray_resources(ray, gpus_per_run: float, cpus_per_run: float, fixed: bool) -> None:
    """A run asking for more than any node has would wait forever, in silence. On a Ray started here
    (`fixed`: no node will join) that is one error; on a cluster, which may grow (an autoscaler), a
    warning."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(n.get("GPU", 0) >= gpus_per_run and n.get("CPU", 0) >= cpus_per_run for n in nodes):
        return
    have = ", ".join(f"{n.get('CPU', 0):g} CPUs and {n.get('GPU', 0):g} GPUs" for n in nodes) or "no node"
    field_, value = ("gpus_per_run", gpus_per_run) if not any(n.get("GPU", 0) >= gpus_per_run for n in nodes) \
        else ("cpus_per_run", cpus_per_run)
    if fixed:
        raise ParameterError(f"{field_}={value!r} is invalid: allowed at most what one Ray node has ({have})")
    tqdm.write(f"warning: no Ray node has {gpus_per_run:g} GPUs and {cpus_per_run:g} CPUs for a run now "
               f"({have}); the runs wait until one joins")


@contextlib.contextmanager
def ray_cluster(address, init: dict):
    """Ray, started here (address None) or joined ("auto", "host:port", "ray://host:port"), and
    shut down at the end when this driver started or joined it."""
    import ray

    connect_here = not ray.is_initialized()
    if connect_here:
        if address is None:  # the embedded default: a fresh Ray on this machine, even if one runs
            ray.init(address="local", include_dashboard=False, log_to_driver=False, **init)
        else:
            ray.init(address=address, log_to_driver=False)
    try:
        yield ray
    finally:
        if connect_here:
            ray.shutdown()


def launch_ray(ray, specs, finished, failed, gpus_per_run, cpus_per_run, worker=None) -> None:
    """Every run a Ray task with its resources; results come back here, the only writer."""
    pending = {}
    try:
        task = ray.remote(worker or execute).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)
        pending = {task.remote(spec): spec for spec in specs}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            spec = pending.pop(ready[0])
            try:
                rows = ray.get(ready[0])
            except ray.exceptions.RayTaskError as error:  # the run raised: its own exception, the remote stack
                failed(spec, error.cause if isinstance(error.cause, BaseException) else error, trace=str(error))
            except ray.exceptions.RayError as error:  # the worker died (out of memory, node lost)
                failed(spec, error)
            else:
                finished(spec, rows)
    finally:
        for ref in pending:  # an interrupted driver leaves no orphan training behind
            ray.cancel(ref, force=True)


# --- result files ------------------------------------------------------------------------------------
# the keys of a results.jsonl row that the driver reads (a row missing one was a KeyError, naming no file)
ROW_KEYS = ("run", "split", "mixer", "sweep", "axis", "d_model", "lr", "warmup", "train_seed", "element_accuracy",
            "bayes_element_accuracy", "parameters")


def read_rows(path: Path, repair: bool = False, keys: tuple = ("run",)) -> list[dict]:
    """The rows of a JSON-lines file, each an object with `keys`; a last line cut short by a killed
    writer is dropped (and its run is then redone). `repair` (the driver, before it appends) also
    trims it from the file, so that the next append starts on a fresh line."""
    if not path.exists():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    if repair and path.stat().st_size != len(text.encode()):
        atomic_write_text(path, text)
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line:
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            row = err
        missing = [k for k in keys if k not in row] if isinstance(row, dict) else None
        if missing != []:  # a corrupt line, or a file of another kind
            why = (row.msg if isinstance(row, json.JSONDecodeError) else "not an object with a 'run' key"
                   if missing is None or "run" in missing else f"no {', '.join(repr(k) for k in missing)}")
            what = "a 'run' key" if keys == ("run",) else f"the keys ({', '.join(keys)})"
            raise ParameterError(f"file={str(path)!r} is invalid: allowed one JSON object with {what} per "
                                 f"line (line {number}: {why}; fix or remove that line)")
        rows.append(row)
    return rows


def append_lines(path: Path, records: list[dict]) -> None:
    """All of a run's rows in one write, flushed to disk before the run counts as done."""
    with open(path, "a") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


OUTPUTS_RECORD = "outputs.json"  # sha256 of every table, summary and plot this command wrote in a sweep folder
RECORD_WRITER = "selectivbench reproduce"


def is_output(name: str) -> bool:
    """A name the sweep's outputs may take: its tables, its summary, its plots (`views`' accuracy_*.png)."""
    return name in ("results.csv", "selection.csv", "summary.md") or (name.startswith("accuracy_")
                                                                       and name.endswith(".png"))


def check_out_folder(out: str, folder: Path) -> None:
    """`out` and the sweep folder in it are folders, or can be made: the nearest existing one is a
    writable folder."""
    for path in (Path(out), folder):
        if path.exists() and not path.is_dir():
            raise ParameterError(f"out={str(out)!r} is invalid: allowed a folder ({path} is a file)")
    from .hub.dataset_records import check_outside_configs

    check_outside_configs(folder, "out")
    existing = next(p for p in (folder, *folder.parents) if p.exists())  # "." or "/" at the latest
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ParameterError(f"out={str(out)!r} is invalid: allowed a folder that can be made and written "
                             f"({existing} is {'not a folder' if not existing.is_dir() else 'not writable'})")


def check_outputs(folder: Path, out: str, is_ours=is_output, writer: str = RECORD_WRITER) -> dict[str, list[str]]:
    """The rule that keeps a user's files: a file in the sweep folder with an output's name
    (results.csv, selection.csv, summary.md, accuracy_*.png) is replaced only when its bytes are those this
    command wrote there, as its record `outputs.json` holds (sha256). Anything else there (a
    user's table or notes, or an output edited since) is one error naming it, before any work. A
    sweep folder without the record but with its results.jsonl was made by an earlier version: its
    outputs are replaced. `is_ours` and `writer`: another command's output names and record (score).
    Returns the record: {name: [accepted sha256, ...]}."""
    record_path = folder / OUTPUTS_RECORD
    record = read_record(record_path, writer, f"out={str(out)!r} is invalid: allowed a sweep folder whose "
                                                     f"{OUTPUTS_RECORD} is this command's record") or {}
    if not folder.is_dir():
        return record
    if not record_path.exists() and (folder / "results.jsonl").exists():
        # a sweep folder of a version before the record: its outputs are this command's, as they are now
        return {p.name: [sha256(p.read_bytes())] for p in folder.iterdir() if is_ours(p.name) and p.is_file()}
    for path in sorted(folder.iterdir()):
        if is_ours(path.name) and (not path.is_file() or sha256(path.read_bytes()) not in record.get(path.name, ())):
            raise ParameterError(f"out={str(out)!r} is invalid: allowed a sweep folder whose tables, summary and "
                                 f"plots this command wrote ({path} was not written by it, or was changed since; "
                                 "move it away: it is never replaced)")
    return record


def write_outputs(task: str, folder: Path, rows: list[dict], out: str | None = None, missing: int = 0) -> None:
    """results.csv (every row), selection.csv (the validation choice), summary.md and the plots;
    `missing`: planned runs without results (the summary says so). Made in memory, then (after
    `check_outputs` once more: a file may have appeared during the runs) the record is widened to
    the new bytes, each file is written to a temporary name and renamed, outputs of an earlier call
    that this one does not make (a plot of a view that has split since) are removed when their bytes
    are still the recorded ones, and the record is narrowed to the new files: a crash anywhere
    leaves every output recorded."""
    record = check_outputs(folder, str(out if out is not None else folder.parent))
    rows = list({(r["run"], r["split"]): r for r in rows}.values())  # a (run, split) counts once: the newest
    chosen, selection = select_on_validation(rows)
    files = {"results.csv": _csv_text(["run", "cell", "sweep", "axis", "d_model", "train_seed", "lr", "warmup"]
                                      + FIELDS, rows).encode()}
    if selection:
        files["selection.csv"] = _csv_text(list(selection[0]), selection).encode()
    files["summary.md"] = summary_markdown(task, chosen, missing).encode()
    files.update(plot(task, chosen))
    replace_outputs(folder, files, record)


def replace_outputs(folder: Path, files: dict[str, bytes], record: dict, writer: str = RECORD_WRITER) -> None:
    """Write `files` ({name: bytes}) in `folder` over the outputs `record` holds (as `check_outputs`
    returned it): the record is widened to the new bytes, each file written to a temporary name and
    renamed, recorded outputs this call does not make are removed where their bytes are still the
    recorded ones, and the record is narrowed to the new files, so a crash anywhere leaves every
    output recorded."""
    new = {name: sha256(data) for name, data in files.items()}
    _write_record(folder, {**record, **{n: sorted({*record.get(n, ()), h}) for n, h in new.items()}}, writer)
    for name, data in files.items():
        with replaced(folder / name) as tmp:
            tmp.write_bytes(data)
    for name in set(record) - set(files):
        path = folder / name
        if path.is_file() and sha256(path.read_bytes()) in record[name]:
            path.unlink()
    _write_record(folder, {n: [h] for n, h in new.items()}, writer)


def _write_record(folder: Path, files: dict[str, list[str]], writer: str = RECORD_WRITER) -> None:
    write_record(folder / OUTPUTS_RECORD, writer, files)


def _csv_text(fields: list[str], rows: list[dict]) -> str:
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return text.getvalue()


# --- selection, tables, plots ----------------------------------------------------------------------
def select_on_validation(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Per cell (mixer, axis value, width, seed), the run with the best validation element accuracy
    (on ties the smallest lr, then the shortest warm-up: the first in the plan's order, whatever
    order the runs finished in); its non-validation rows, and one line per choice where there was a
    choice. A cell of one run (no lr / warm-up grid) keeps it without a validation row."""
    cells = defaultdict(lambda: defaultdict(list))
    for r in rows:
        cells[r.get("cell", r["run"])][r["run"]].append(r)
    chosen, selection = [], []
    for cell, runs in cells.items():
        def validation(run_rows):
            return next((r["element_accuracy"] for r in run_rows if r["split"] == "validation"), -math.inf)

        def recipe(run):
            return runs[run][0].get("lr") or 0.0, runs[run][0].get("warmup") or 0

        best = max(sorted(runs, key=recipe), key=lambda run: validation(runs[run]))  # max keeps the first of ties
        chosen += [r for r in runs[best] if r["split"] != "validation"]
        if len(runs) > 1:
            first = runs[best][0]
            selection.append({"cell": cell, "run": best, "lr": first.get("lr"), "warmup": first.get("warmup"),
                              "validation_element_accuracy": validation(runs[best]), "candidates": len(runs)})
    return chosen, selection


def views(task: str, rows: list[dict]) -> list[tuple[str, str, list[dict], callable, bool]]:
    """(name, x label, rows, x of a row, log x) of each table and plot of a task."""
    if task == "complexity":
        amb = [r for r in rows if r["sweep"] == "ambiguities"]
        k_max = max((r["axis"] for r in amb), default=None)
        size = [r for r in rows if r["sweep"] == "size" or (r["sweep"] == "ambiguities" and r["axis"] == k_max)]
        # the k sweep at each width it has more than one k for (small: one width; paper: all nine)
        ks_at = defaultdict(set)
        for r in amb:
            ks_at[r["d_model"]].add(r["axis"])
        widths = sorted(w for w, ks in ks_at.items() if len(ks) > 1)
        by_k = [(f"accuracy_vs_ambiguities{f'_d{w}' if len(widths) > 1 else ''}",
                 f"ambiguities k = d{f' (d_model {w})' if len(widths) > 1 else ''}",
                 [r for r in amb if r["d_model"] == w], lambda r: r["axis"], False) for w in widths]
        if not widths:  # rows of the older layout: one width, no per-width split needed
            by_k = [("accuracy_vs_ambiguities", "ambiguities k = d", amb, lambda r: r["axis"], False)]
        return by_k + [("accuracy_vs_parameters", "parameters", size, lambda r: r["parameters"], True)]
    if task == "generalization":
        # `test` has the training law's gaps (up to 10 steps); it stands for 10 where no fixed-10 split exists
        fixed10 = any(r["split"] == gap_split(10) for r in rows)
        kept = [r for r in rows if not (fixed10 and r["split"] == "test")]
        widths = sorted({r["d_model"] for r in kept})  # one view per width (the paper's has two): seeds only in a cell
        return [(f"accuracy_vs_test_gap{f'_d{w}' if len(widths) > 1 else ''}",
                 f"test gap (silent steps after every element){f', d_model {w}' if len(widths) > 1 else ''}",
                 [r for r in kept if r["d_model"] == w],
                 lambda r: 10 if r["split"] == "test" else gap_of_split(r["split"]), True) for w in widths]
    return [(f"accuracy_{task}", "d_model", rows, lambda r: r["d_model"], False)]


def pivot(rows, x_of, metric="element_accuracy") -> dict:
    """{mixer: {x: [the metric of every seed]}}"""
    acc = defaultdict(lambda: defaultdict(list))
    for r in rows:
        acc[r["mixer"]][x_of(r)].append(r[metric])
    return acc


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def mean_cell(values: list[float], seeds: int) -> str:
    """mean ± std; with fewer values than seeds (runs missing) it says how many, and one has no std."""
    if len(values) == 1 and seeds > 1:
        return f"{values[0]:.3f} (n=1)"
    text = "{:.3f} ± {:.3f}".format(*mean_std(values))
    return text if len(values) >= seeds else f"{text} (n={len(values)})"


def summary_markdown(task: str, rows: list[dict], missing: int = 0) -> str:
    seeds = sorted({r.get("train_seed") for r in rows})
    sections = [f"Test element accuracy, mean ± std over {len(seeds)} seed(s) {seeds}; where several lr / "
                f"warm-up values were run, each (mixer, value, seed) keeps the best on validation."]
    if missing:
        sections.append(f"**Incomplete:** {missing} planned run(s) have no results (failed, or not run yet): a cell "
                        "marked n= averages fewer seeds, and a choice on validation saw fewer candidates. The "
                        "same command runs only the missing ones.")
    for name, xlabel, part, x_of, _ in views(task, rows):
        if not part:
            continue
        if name == "accuracy_vs_parameters":  # counts differ per mixer: tabulate by width instead
            xlabel, x_of = "d_model", (lambda r: r["d_model"])
        acc = pivot(part, x_of)
        xs = sorted({x_of(r) for r in part})
        ceiling = defaultdict(list)
        for r in part:
            ceiling[x_of(r)].append(r["bayes_element_accuracy"])
        lines = [f"### {task}: element accuracy (test) by {xlabel}", "",
                 "| mixer | " + " | ".join(str(x) for x in xs) + " |", "|---|" + "---|" * len(xs)]
        for m in sorted(acc):
            cells = (mean_cell(acc[m][x], len(seeds)) if x in acc[m] else "–" for x in xs)
            lines.append(f"| `{m}` | " + " | ".join(cells) + " |")
        lines.append("| *Bayes ceiling* | " + " | ".join(f"{statistics.fmean(ceiling[x]):.3f}" for x in xs) + " |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


def plot(task: str, rows: list[dict]) -> dict[str, bytes]:
    """{file name: PNG bytes} of the task's plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = {}
    for name, xlabel, part, x_of, logx in views(task, rows):
        if not part:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        # 11 mixers outnumber the 10 default colours: cycle colours and markers apart
        markers = "osD^v<>ph*X"
        for i, (m, points) in enumerate(sorted(pivot(part, x_of).items())):
            xs = sorted(points)
            means, stds = zip(*(mean_std(points[x]) for x in xs))
            ax.errorbar(xs, means, yerr=stds, marker=markers[i % len(markers)], capsize=3, label=m,
                        color=plt.get_cmap("tab20")(i % 20))
        ceiling = pivot([{**r, "mixer": ""} for r in part], x_of, "bayes_element_accuracy")[""]
        xs = sorted(ceiling)
        ax.plot(xs, [statistics.fmean(ceiling[x]) for x in xs], "k--", label="Bayes ceiling")
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("element accuracy (test)")
        ax.set_title(f"SelectivBench {task}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=120)
        plt.close(fig)
        plots[f"{name}.png"] = png.getvalue()
    return plots
