"""`selectivbench train`: train one model on one task config with Accelerate.

Defaults are sized for a CPU; `--optimizer adam --min-lr-ratio 0.1 --epochs 1 --dropout 0.2` with
the paper's widths is the paper's recipe (docs/reproducing.md). `--batch-size` is the global batch, split
over the processes, and the schedule steps once per optimizer step: 1 and N processes follow the same
learning-rate curve over the same steps. Every optimizer step minimises the mean loss over all the
labelled steps of its samples, whatever the number of processes and `--grad-accum` (each micro-batch
weighted by its share of the steps), so 1 and N processes, or one batch and two accumulated halves,
take the same steps on variable-length tasks too. States (`state/step-N`: safetensors + JSON, never pickle)
let `--resume` continue to the same final weights as an uninterrupted run; a `save_pretrained` folder
`model/` with `selectivbench_run.json` records how it was made. Metrics go to `metrics.jsonl`;
trackers only with `--report-to`.
"""
from __future__ import annotations

import json
import math
import os
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import psutil
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DataLoaderConfiguration, broadcast_object_list, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from ..builders import task_params
from ..builders.builder import PAPER_SIZES
from ..data.collator import SelectivBenchCollator, model_view
from ..data.task import Task, fingerprint_of, load_task
from ..errors import ParameterError
from ..evaluation.evaluate import evaluate_loader
from ..models.configuration_selectivbench import IGNORE_INDEX
from ..files import atomic_write_text
from ..models import SelectivBenchConfig, SelectivBenchForTokenClassification
from ..sweeps.estimate import parameter_count
from .args import TrainArgs, check_train_args
from .record import run_record
from .run_folder import (check_output_dir, check_same_task, check_state_task, check_state_within, drop_log_after, log,
                         repair_model_swap, run_folder_lock, save_model, saved_record, with_absolute_data_dir)
from .state import load_newest_state, newest_state_step, save_state

def model_config(args: TrainArgs, task: Task) -> SelectivBenchConfig:
    return SelectivBenchConfig.for_task(
        task, mixer=args.mixer, d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads,
        d_state=args.d_state, num_householder=args.num_householder, dropout=args.dropout, norm=args.norm,
        rope_theta=args.rope_theta, linear_init=args.linear_init)


def build_model(args: TrainArgs, task: Task):
    """The model a run trains: the SelectivBench model of its mixer, or its transformers backbone."""
    if args.backbone is None:
        return SelectivBenchForTokenClassification(model_config(args, task))
    from ..backbone import BackboneConfig, BackboneForTokenClassification, backbone_config

    inner = backbone_config(args.backbone, args.backbone_kwargs, args.d_model, args.n_layers, args.n_heads,
                            args.d_state)
    return BackboneForTokenClassification(BackboneConfig.for_task(task, inner, args.backbone))


def param_groups(model, weight_decay: float) -> list[dict]:
    """Decayed and not: the model names its parameters weight decay leaves alone (`no_weight_decay_names`)."""
    no_decay, decay, keep = model.no_weight_decay_names(), [], []
    for name, p in model.named_parameters():
        (keep if name in no_decay else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def make_optimizer(args: TrainArgs, model) -> torch.optim.Optimizer:
    cls = torch.optim.Adam if args.optimizer == "adam" else torch.optim.AdamW
    return cls(param_groups(model, args.weight_decay), lr=args.lr)


def data_seed(train_seed: int) -> int:
    """The seed of the training order. accelerate shuffles epoch e with data_seed + e, and torch's CPU
    generator keeps the low 32 bits: with the training seed itself, seed s + 1 saw seed s's orders one
    epoch early. Spread by an odd multiplier (Fibonacci hashing, a bijection of 32-bit seeds; seed 0
    keeps its orders), seeds 0..999 start at least 1.9 million apart: over 1.9 million epochs before
    two of them share an order."""
    return (train_seed * 0x9E3779B1) % 2**32


def total_steps(args: TrainArgs, num_train: int) -> int:
    """Optimizer steps of the run: `max_steps`, or `epochs` passes over the training split."""
    if args.epochs is None:
        return args.max_steps
    return args.epochs * math.ceil(math.ceil(num_train / args.batch_size) / args.grad_accum)


def train(args: TrainArgs, task: Task | None = None, stop_after: int | None = None) -> dict:
    """Train and return the final validation metrics. `stop_after` simulates a crash (tests)."""
    check_train_args(args)
    args = with_absolute_data_dir(args)
    out = Path(args.output_dir)
    check_output_dir(out, args)
    for split, size in (("train", args.task_overrides.get("num_train")),
                        ("validation", args.task_overrides.get("num_validation"))):
        if size == 0:
            raise ParameterError(f"num_{split}=0 is invalid: allowed at least 1 sample to train")
    check_precision(args.mixed_precision, PartialState(cpu=args.cpu).device)  # before Accelerator takes it
    # no gradient_accumulation_steps: accumulate_step weighs the micro-batches itself
    accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=args.cpu, log_with=args.report_to,
                              project_dir=str(out),
                              dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, split_batches=True,
                                                                        data_seed=data_seed(args.train_seed)))
    if args.batch_size % accelerator.num_processes:
        raise ParameterError(f"batch_size={args.batch_size} is invalid: allowed a multiple of the "
                             f"{accelerator.num_processes} processes (it is the global batch)")
    check_fits_in_memory(args, accelerator.device)
    with run_folder_lock(accelerator, out, args):
        return _train_locked(args, task, stop_after, accelerator, out)


BYTES_PER_PARAMETER = 16  # float32 weights, their gradients and Adam's two moments


def check_fits_in_memory(args: TrainArgs, device: torch.device) -> None:
    """A model whose weights, gradients and optimizer state alone exceed the memory available now
    cannot train: refused naming --d-model before the data is loaded (it was a raw allocator error
    after). Parameters counted exactly on the meta device (the task's own vocabulary and states when
    it is built here; the config's defaults for a data folder, a small term of the count)."""
    p = task_params(args.config, **{k: v for k, v in args.task_overrides.items() if k not in PAPER_SIZES})
    count = parameter_count(args.mixer, p, args.d_model, args.n_layers, args.n_heads, args.d_state,
                            args.num_householder)
    need = count * BYTES_PER_PARAMETER
    if device.type == "cuda":
        available, where = torch.cuda.mem_get_info(device)[0], f"free on {device}"
    else:  # the processes of this machine share its memory, each with a copy
        need *= int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        available, where = psutil.virtual_memory().available, "of memory available"
    if need > available:
        raise ParameterError(f"d_model={args.d_model} is invalid: allowed a model whose weights, gradients and "
                             f"optimizer state fit in memory ({count:,} parameters need {need / 2**30:,.1f} GiB; "
                             f"{available / 2**30:,.1f} GiB {where})")


def _train_locked(args: TrainArgs, task: Task | None, stop_after: int | None, accelerator, out: Path) -> dict:
    """`train` once its arguments are checked and the run folder is this run's alone."""
    if accelerator.is_main_process:
        repair_model_swap(out)
    accelerator.wait_for_everyone()
    saved_run = saved_record(out)
    if args.resume and args.epochs is None and (newest := newest_state_step(out / "state")):
        check_state_within(*newest, args.max_steps, args)  # before the data is loaded
    set_seed(args.train_seed)
    task = task or load_task(args.config, args.data_dir, **args.task_overrides)
    for split in ("train", "validation"):
        if len(task.data.get(split, ())) == 0:
            raise ParameterError(f"{split}={args.data_dir or args.config!r} is invalid: allowed a task with at least "
                                 f"1 {split} sample to train")
    check_same_task(out, task, saved_run)
    model = build_model(args, task)
    optimizer = make_optimizer(args, model)
    steps = total_steps(args, len(task.data["train"]))
    # not prepared: accelerate would step it once per process; it steps once per optimizer step below
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(optimizer, args.warmup_steps, steps,
                                                             min_lr_rate=args.min_lr_ratio)
    train_collator = SelectivBenchCollator(task.params.vocab_size, task.params.noise, args.train_seed, "train")
    eval_collator = SelectivBenchCollator(task.params.vocab_size, task.params.noise, args.train_seed, "validation")
    val = task.data["validation"]
    if args.eval_samples:
        val = val.select(range(min(args.eval_samples, len(val))))
    train_loader = DataLoader(model_view(task.data["train"]), batch_size=args.batch_size, shuffle=True,
                              collate_fn=train_collator, generator=torch.Generator().manual_seed(args.train_seed))
    eval_loader = DataLoader(model_view(val), batch_size=args.batch_size, collate_fn=eval_collator)
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)
    progress = {"step": 0, "best": -1.0, "bad_evals": 0}
    metrics, metrics_step, stop = {}, None, False  # the last validation metrics and the step they are of
    fingerprint = fingerprint_of(task)  # saved with each state: a state of another task is never continued
    if args.resume and (restored := load_newest_state(accelerator, out / "state", model, optimizer, scheduler)):
        check_state_task(out, restored, fingerprint)
        progress = {k: restored[k] for k in progress}
        check_state_within(out / "state", progress["step"], steps, args)
        stop = 0 < args.patience <= progress["bad_evals"]  # the run had stopped early: it stays finished
    if accelerator.is_main_process:  # forget what was logged after the state it starts from (0: all)
        drop_log_after(out / "metrics.jsonl", progress["step"])
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "train_args.json", json.dumps(asdict(args), indent=1))
    if args.report_to:
        accelerator.init_trackers(out.name, config={k: v for k, v in asdict(args).items() if k != "task_overrides"})

    steps_per_epoch = math.ceil(len(train_loader) / args.grad_accum)
    repeats = RepeatedRows(accelerator, len(task.data["train"]), args.batch_size, len(train_loader))
    bar = tqdm(total=steps, initial=progress["step"], disable=args.quiet or not accelerator.is_local_main_process,
               desc=f"train {args.backbone or args.mixer}")
    model.train()
    while progress["step"] < steps and not stop:
        epoch, done_in_epoch = divmod(progress["step"], steps_per_epoch)
        train_collator.epoch = epoch
        train_loader.set_epoch(epoch)
        first = done_in_epoch * args.grad_accum
        loader = accelerator.skip_first_batches(train_loader, first) if first else train_loader
        for window in windows(enumerate(loader, start=first), args.grad_accum):
            loss = accumulate_step(accelerator, model, [repeats.ignored(i, batch) for i, batch in window])
            if args.clip:
                accelerator.clip_grad_norm_(model.parameters(), args.clip)
            optimizer.step()
            optimizer.zero_grad()
            lr = scheduler.get_last_lr()[0]  # the rate this step used
            if not accelerator.optimizer_step_was_skipped:
                scheduler.step()
            progress["step"] += 1
            step = progress["step"]
            bar.update(1)
            record = {"step": step, "loss": loss.item(), "lr": lr}
            if step % args.eval_every == 0 or step == steps:
                metrics, metrics_step = evaluate_loader(model, eval_loader, accelerator), step
                record.update({f"eval_{k}": v for k, v in metrics.items()})
                stop = early_stop(progress, metrics["element_accuracy"], args.patience)
                bar.set_postfix(acc=f"{metrics['element_accuracy']:.4f}")
            log(accelerator, out, record, args.report_to)
            if step % args.save_every == 0 or step == steps or stop:
                save_state(accelerator, out / "state", step, model, optimizer, scheduler,
                           {**progress, "task": fingerprint})
                save_model(accelerator, model, out, run_record(args, task, step, metrics, metrics_step))
            if stop_after is not None and step >= stop_after:
                return {"stopped_at": step}
            if step >= steps or stop:
                break
    bar.close()
    if metrics_step != progress["step"]:  # resumed a finished run: nothing trained, its final metrics all the same
        metrics = evaluate_loader(model, eval_loader, accelerator)
    if broadcast_object_list([(saved_record(out) or {}).get("step") if accelerator.is_main_process else None])[0] \
            != progress["step"]:  # killed after its last state, before model/ was: saved now from that state
        save_model(accelerator, model, out, run_record(args, task, progress["step"], metrics, progress["step"]))
    # DDP's reducer holds the process group. Released here, after a barrier, the group is torn down in
    # end_training while every process is alive; freed only at return, after the other process had
    # exited, gloo's destructor once hung joining its threads (two CPU processes, this machine)
    accelerator.wait_for_everyone()
    model = optimizer = train_loader = eval_loader = loader = None  # noqa: F841
    accelerator.free_memory()
    accelerator.end_training()
    return metrics


def check_precision(mixed_precision: str, device: torch.device) -> None:
    """fp16 autocast needs an accelerator: on a CPU accelerate runs float32 and the record would say
    fp16 (bf16 autocast does run on a CPU)."""
    if mixed_precision == "fp16" and device.type == "cpu":
        raise ParameterError("mixed_precision='fp16' is invalid on a CPU: allowed no or bf16 there (fp16 autocast "
                             "would not run: the model would train in float32)")


def windows(items, n: int):
    """Consecutive lists of n items (the last one may be shorter): an optimizer step's micro-batches."""
    window = []
    for item in items:
        window.append(item)
        if len(window) == n:
            yield window
            window = []
    if window:
        yield window


def accumulate_step(accelerator, model, batches: list[dict]) -> torch.Tensor:
    """Gradients of the mean loss over every labelled step of `batches` on every process; returns that
    mean. Each micro-batch's summed loss is divided by the global count of labelled steps, and times
    the number of processes because DDP averages the processes' gradients: a mean of per-batch or
    per-process means would weigh a short sequence's steps more than a long one's."""
    counts = torch.stack([(b["labels"] != IGNORE_INDEX).sum() for b in batches])
    # each micro-batch's share of the labelled steps: exactly 1.0 for one batch on one process, whose
    # gradients are then the plain mean's, bit for bit
    shares = counts / accelerator.reduce(counts.sum(), "sum").clamp_min(1)
    step_loss = torch.zeros((), device=accelerator.device)
    for i, (batch, share) in enumerate(zip(batches, shares)):
        # gradients are averaged over the processes once, after the last micro-batch
        with accelerator.no_sync(model) if i < len(batches) - 1 else nullcontext():
            mean = model(input_ids=batch["input_ids"], labels=batch["labels"], input_noise=batch.get("input_noise"),
                         dropout_seed=batch.get("dropout_seed")).loss
            accelerator.backward(mean * (share * accelerator.num_processes))
        step_loss += mean.detach() * share
    return accelerator.reduce(step_loss, "sum")


class RepeatedRows:
    """With several processes, accelerate completes an epoch's last, short global batch with samples
    from the epoch's start, so that every process gets its equal share (`even_batches`). Those rows
    get IGNORE_INDEX labels here: they weigh nothing, and 1 and N processes take the same steps."""

    def __init__(self, accelerator, num_samples: int, batch_size: int, num_batches: int):
        short = num_samples % batch_size
        per_process = batch_size // accelerator.num_processes
        self.last = num_batches - 1 if accelerator.num_processes > 1 and short else None
        self.real_rows = min(max(short - accelerator.process_index * per_process, 0), per_process)

    def ignored(self, index: int, batch: dict) -> dict:
        if index != self.last:
            return batch
        labels = batch["labels"].clone()
        labels[self.real_rows:] = IGNORE_INDEX
        return {**batch, "labels": labels}

def early_stop(progress: dict, score: float, patience: int) -> bool:
    if score > progress["best"]:
        progress["best"], progress["bad_evals"] = score, 0
        return False
    progress["bad_evals"] += 1
    return patience > 0 and progress["bad_evals"] >= patience
