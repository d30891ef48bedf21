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
import shutil
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import asdict, replace
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DataLoaderConfiguration, broadcast_object_list, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from .builders.config import ParameterError
from .data import (RUN_FILE, SelectivBenchCollator, Task, checkpoint_record, differences, fingerprint_differences,
                   fingerprint_of, grammar_sha256, load_task, model_view, resolve_hub_id)
from .metrics import IGNORE
from .models import SelectivBenchConfig, SelectivBenchForTokenClassification
from .atomic import atomic_write_text, file_lock
from .run_state import load_newest_state, newest_state_step, save_state
from .train_args import TrainArgs, check_train_args

# never decayed: norms, biases and the SSM parameters whose scale is their meaning
NO_DECAY = ("A_log", "dt_bias", "D")


def model_config(args: TrainArgs, task: Task) -> SelectivBenchConfig:
    return SelectivBenchConfig.for_task(
        task, mixer=args.mixer, d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads,
        d_state=args.d_state, num_householder=args.num_householder, dropout=args.dropout, norm=args.norm,
        rope_theta=args.rope_theta, linear_init=args.linear_init)


def build_model(args: TrainArgs, task: Task):
    """The model a run trains: the SelectivBench model of its mixer, or its transformers backbone."""
    if args.backbone is None:
        return SelectivBenchForTokenClassification(model_config(args, task))
    from .backbone import BackboneConfig, BackboneForTokenClassification, backbone_config

    inner = backbone_config(args.backbone, args.backbone_kwargs, args.d_model, args.n_layers, args.n_heads,
                            args.d_state)
    return BackboneForTokenClassification(BackboneConfig.for_task(task, inner, args.backbone))


def param_groups(model, weight_decay: float) -> list[dict]:
    decay, keep = [], []
    for name, p in model.named_parameters():
        (keep if p.ndim < 2 or name.split(".")[-1] in NO_DECAY else decay).append(p)
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
    from .builders import task_params
    from .builders.builder import PAPER_SIZES
    from .sweeps.estimate import parameter_count

    p = task_params(args.config, **{k: v for k, v in args.task_overrides.items() if k not in PAPER_SIZES})
    count = parameter_count(args.mixer, p, args.d_model, args.n_layers, args.n_heads, args.d_state,
                            args.num_householder)
    need = count * BYTES_PER_PARAMETER
    if device.type == "cuda":
        available, where = torch.cuda.mem_get_info(device)[0], f"free on {device}"
    else:  # the processes of this machine share its memory, each with a copy
        import psutil

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
    from .evaluate import evaluate_loader

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
                save_model(accelerator, model, out, run_card(args, task, step, metrics, metrics_step))
            if stop_after is not None and step >= stop_after:
                return {"stopped_at": step}
            if step >= steps or stop:
                break
    bar.close()
    if metrics_step != progress["step"]:  # resumed a finished run: nothing trained, its final metrics all the same
        metrics = evaluate_loader(model, eval_loader, accelerator)
    if broadcast_object_list([(saved_record(out) or {}).get("step") if accelerator.is_main_process else None])[0] \
            != progress["step"]:  # killed after its last state, before model/ was: saved now from that state
        save_model(accelerator, model, out, run_card(args, task, progress["step"], metrics, progress["step"]))
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
    counts = torch.stack([(b["labels"] != IGNORE).sum() for b in batches])
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
    get IGNORE labels here: they weigh nothing, and 1 and N processes take the same steps."""

    def __init__(self, accelerator, num_samples: int, batch_size: int, num_batches: int):
        short = num_samples % batch_size
        per_process = batch_size // accelerator.num_processes
        self.last = num_batches - 1 if accelerator.num_processes > 1 and short else None
        self.real_rows = min(max(short - accelerator.process_index * per_process, 0), per_process)

    def ignored(self, index: int, batch: dict) -> dict:
        if index != self.last:
            return batch
        labels = batch["labels"].clone()
        labels[self.real_rows:] = IGNORE
        return {**batch, "labels": labels}


# what may change when a run is resumed: where and how it reports, not what it trains
RESUME_MAY_CHANGE = ("output_dir", "resume", "quiet", "report_to", "cpu")


def absolute_data_dir(data_dir: str | None) -> str | None:
    """A local data folder as an absolute path, a Hub id as it is: the run and its checkpoint are read
    later from other directories (a relative 'o/sb' would then read as a Hub id)."""
    if data_dir is not None and resolve_hub_id(data_dir) is None and Path(data_dir).exists():
        return str(Path(data_dir).resolve())
    return data_dir


def with_absolute_data_dir(args: TrainArgs) -> TrainArgs:
    """Also a plugin file's path (PATH.py:CLASS), for the same reason."""
    from .models.plugins import absolute_spec

    return replace(args, data_dir=absolute_data_dir(args.data_dir), mixer=absolute_spec(args.mixer))


def check_output_dir(out: Path, args: TrainArgs) -> None:
    """A run folder is new, or the same run resumed: never mixes two runs' files, never touches a
    folder that is not a run's (a run folder holds the train_args.json of the same arguments)."""
    if not args.output_dir:  # Path("") is the current folder: "" is a mistake, not a choice of "."
        raise ParameterError("output_dir='' is invalid: allowed a folder path (not empty)")
    if out.exists() and not out.is_dir():
        raise ParameterError(f"output_dir={str(out)!r} is invalid: allowed a folder (it is a file)")
    from .hub_dataset import check_outside_configs

    check_outside_configs(out, "output_dir")
    probe = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not os.access(probe, os.W_OK):
        raise ParameterError(f"output_dir={str(out)!r} is invalid: allowed a writable folder ({probe} is not writable)")
    if not (out.exists() and any(p.name != TRAIN_LOCK for p in out.iterdir())):
        return
    if not args.resume:
        raise ParameterError(f"output_dir={str(out)!r} is invalid: allowed an empty or new folder "
                             "(pass --resume to continue the run that is there)")
    saved_path = out / "train_args.json"
    try:
        saved = json.loads(saved_path.read_text())
        assert isinstance(saved, dict)
    except (OSError, ValueError, AssertionError):
        raise ParameterError(f"output_dir={str(out)!r} is invalid: allowed with --resume an empty folder or a run "
                             f"folder (its {saved_path.name} is missing or unreadable)") from None
    given = json.loads(json.dumps(asdict(args)))  # as the file holds them (tuples as lists)
    # runs of earlier versions recorded a local data folder as given, maybe relative
    saved["data_dir"] = absolute_data_dir(saved.get("data_dir"))
    # a field an earlier version did not record had its default's behaviour then
    defaults = json.loads(json.dumps(asdict(TrainArgs())))
    differs = [f"{k}={v!r} (the run's: {saved.get(k, defaults[k])!r})" for k, v in given.items()
               if k not in RESUME_MAY_CHANGE and saved.get(k, defaults[k]) != v]
    if differs:
        raise ParameterError(f"output_dir={str(out)!r} is invalid: allowed with --resume only the arguments of the "
                             f"run there ({'; '.join(differs)})")


TRAIN_LOCK = ".selectivbench-train.lock"  # in the run folder: held by the run writing there


@contextmanager
def run_folder_lock(accelerator, out: Path, args: TrainArgs):
    """One `train` per run folder: a second run into it (started meanwhile, or a --resume while the
    first runs) is refused at once, before anything is written; two would interleave their logs and
    replace each other's files. The main process takes it and tells the others, so that every
    process refuses together. The folder is checked again under the lock: a run may have written
    there since the first check."""
    made = [p for p in (out, *out.parents) if not p.exists()] if accelerator.is_main_process else []
    with ExitStack() as held:
        refusal = None
        if accelerator.is_main_process:
            try:
                out.mkdir(parents=True, exist_ok=True)
                held.enter_context(file_lock(out / TRAIN_LOCK, busy=(
                    f"output_dir={str(out)!r} is invalid: allowed a folder no other `selectivbench train` is writing "
                    f"to ({out} is in use: wait for that run or stop it)")))
                check_output_dir(out, args)
            except (ParameterError, OSError) as err:
                refusal = str(err) if isinstance(err, ParameterError) else \
                    f"output_dir={str(out)!r} is invalid: allowed a folder that can be made ({err.strerror})"
        try:
            refusal = broadcast_object_list([refusal])[0]
            if refusal is not None:
                raise ParameterError(refusal)
            yield
        except BaseException:
            remove_if_unused(made, out / TRAIN_LOCK)
            raise


def remove_if_unused(made: list[Path], lock: Path) -> None:
    """A run that failed before writing anything leaves no folder behind: the lock file (still held)
    and the folders this run made for it are removed, when they hold nothing else."""
    if not made or not lock.exists() or [p.name for p in made[0].iterdir()] != [lock.name]:
        return
    lock.unlink()
    for folder in made:
        try:
            folder.rmdir()
        except OSError:  # not empty (another run made something there meanwhile)
            break


def check_state_within(where: Path, step: int, steps: int, args: TrainArgs) -> None:
    """A saved state past the run's last step is another run's (a copied folder, an edited record, a
    training split that has shrunk): resuming it would train nothing and report that run as this one."""
    if step > steps:
        field, value = ("max_steps", args.max_steps) if args.epochs is None else ("epochs", args.epochs)
        raise ParameterError(f"{field}={value} is invalid for output_dir={args.output_dir!r}: allowed with --resume "
                             f"a run whose saved state is at most at its last step {steps} ({where} is at step {step}: "
                             "it belongs to another run)")


def saved_record(out: Path) -> dict | None:
    """The run record of the checkpoint a run folder holds (checked, read before any work), or None."""
    return checkpoint_record(out / "model") if (out / "model" / RUN_FILE).exists() else None


def check_same_task(out: Path, task: Task, record: dict | None) -> None:
    """A resumed run trains on the task it started on: every task parameter and split size of its
    record (a data folder may have been regenerated with another seq_len or noise)."""
    if record is not None and (differs := fingerprint_differences(record, task)):
        raise ParameterError(f"output_dir={str(out)!r} is invalid: allowed with --resume the task the run was "
                             f"trained on (its {RUN_FILE} differs from the data now: {'; '.join(differs)})")


def check_state_task(out: Path, restored: dict, fingerprint: dict) -> None:
    """The newest state was saved by a run of this task (its model/ record may be missing: a run
    killed between its first state and its first checkpoint)."""
    if (differs := differences(restored.get("task") or {}, fingerprint)):
        raise ParameterError(f"output_dir={str(out)!r} is invalid: allowed with --resume the task the run was "
                             f"trained on (its newest state's task differs from the data now: {'; '.join(differs)})")


def early_stop(progress: dict, score: float, patience: int) -> bool:
    if score > progress["best"]:
        progress["best"], progress["bad_evals"] = score, 0
        return False
    progress["bad_evals"] += 1
    return patience > 0 and progress["bad_evals"] >= patience


def log(accelerator, out: Path, record: dict, report_to) -> None:
    if accelerator.is_main_process:
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
    if report_to:
        accelerator.log(record, step=record["step"])


def drop_log_after(path: Path, step: int) -> None:
    """Keep the log lines up to `step`. A last line cut short by a kill is dropped; a damaged line
    before it is an error naming the file."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            logged = record["step"]
            assert isinstance(logged, int)
        except (ValueError, KeyError, TypeError, AssertionError):
            if number == len(lines):
                break
            raise ParameterError(f"file={str(path)!r} is invalid: allowed one JSON record with an integer 'step' "
                                 f"per line (line {number} is not)") from None
        if logged <= step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def run_card(args: TrainArgs | dict, task: Task, step: int, metrics: dict, metrics_step: int | None = None) -> dict:
    """What a checkpoint records about how it was made: enough to rebuild its task exactly
    (`data.checkpoint_task`) and to refuse data of another grammar. `validation_step`: the step the
    validation numbers are of (a save between evaluations keeps the last ones; None: none yet).
    Not evaluated afresh at a save: the evaluation draws from torch's generator, and with dropout the
    training would then depend on save_every."""
    train_args = asdict(args) if isinstance(args, TrainArgs) else dict(args)
    return {"train_args": train_args, "task": task.name, "task_params": task.params.to_dict(),
            "split_sizes": task.split_sizes, "data_dir": train_args.get("data_dir"),
            "grammar_sha256": grammar_sha256(task.grammar), "step": step, "validation": metrics,
            "validation_step": metrics_step if metrics else None}


def write_run_record(folder: str | Path, task: Task, args: TrainArgs | dict, step: int = 0,
                     metrics: dict | None = None) -> None:
    """Record next to a save_pretrained folder how it was made (read by evaluate and publish-model)."""
    atomic_write_text(Path(folder) / RUN_FILE, json.dumps(run_card(args, task, step, metrics or {}, step), indent=1))


def model_swap_folders(out: Path) -> tuple[Path, Path, Path]:
    """`model/`, the new one being written, the previous one being removed."""
    return out / "model", out / "model.tmp", out / "model.old"


def repair_model_swap(out: Path) -> None:
    """Finish a `save_model` cut short. Its new folder is complete once its run record is in (written
    last), and `model/` is renamed away only after that: a complete new one is swapped in (a kill
    between the two renames left no `model/` at all); the leftovers of a kill at any other point
    are removed. (A --resume of a finished run trains nothing: it saved nothing either.)"""
    final, tmp, old = model_swap_folders(out)
    if (tmp / RUN_FILE).is_file():  # complete, and newer than any model/ (save_model removes it first)
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
    for p in (tmp, old):
        shutil.rmtree(p, ignore_errors=True)


def save_model(accelerator, model, out: Path, meta: dict) -> None:
    """`model/` is swapped in whole: a reader sees the previous checkpoint or this one; a kill between
    the two renames is finished by `repair_model_swap` (the next train or --resume of the folder)."""
    if accelerator.is_main_process:
        final, tmp, old = model_swap_folders(out)
        for p in (tmp, old):
            shutil.rmtree(p, ignore_errors=True)
        accelerator.unwrap_model(model).save_pretrained(tmp)
        atomic_write_text(tmp / RUN_FILE, json.dumps(meta, indent=1))
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
