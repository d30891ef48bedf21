"""`selectivbench train`: train one model on one task config with Accelerate.

Paper defaults: AdamW, lr 1e-3, batch 64, cosine schedule with warm-up, gradient clipping 1.0.
Checkpoints are `accelerator.save_state` folders (model, optimizer, scheduler, RNG, progress) plus a
`save_pretrained` folder; `--resume` continues from the newest state to the same final weights
as an uninterrupted run. Metrics go to `metrics.jsonl`; trackers only with `--report-to`.
"""
from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from .data import SelectivBenchCollator, Task, load_task, model_view
from .metrics import ElementAccuracy
from .models import SelectivBenchConfig, SelectivBenchForTokenClassification


RUN_FILE = "selectivbench_run.json"


@dataclass
class TrainArgs:
    config: str = "complexity"
    data_dir: str | None = None
    output_dir: str = "runs/model"
    mixer: str = "gla"
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_state: int = 16
    dropout: float = 0.0
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 100
    max_steps: int = 1000
    grad_accum: int = 1
    clip: float = 1.0
    mixed_precision: str = "no"
    eval_every: int = 200
    eval_samples: int | None = None
    save_every: int = 200
    patience: int = 0
    train_seed: int = 0
    resume: bool = False
    report_to: str | None = None
    cpu: bool = False
    quiet: bool = False
    task_overrides: dict = field(default_factory=dict)


class Progress:
    """Training progress, saved with the accelerator state so a resumed run picks up exactly here."""

    def __init__(self):
        self.step, self.best, self.bad_evals = 0, -1.0, 0

    def state_dict(self):
        return {"step": self.step, "best": self.best, "bad_evals": self.bad_evals}

    def load_state_dict(self, d):
        self.step, self.best, self.bad_evals = d["step"], d["best"], d["bad_evals"]


def model_config(args: TrainArgs, task: Task) -> SelectivBenchConfig:
    return SelectivBenchConfig(
        mixer=args.mixer, vocab_size=task.params.vocab_size, num_labels=task.num_labels, d_model=args.d_model,
        n_layers=args.n_layers, n_heads=args.n_heads, d_state=args.d_state, dropout=args.dropout,
        input_noise=task.params.noise, id2label=dict(enumerate(task.grammar.states)),
        label2id={s: i for i, s in enumerate(task.grammar.states)})


@torch.no_grad()
def evaluate_loader(model, loader, accelerator) -> dict:
    """Element/step accuracy and token-mean loss over a loader, gathered across processes."""
    model.eval()
    totals = torch.zeros(5, dtype=torch.float64, device=accelerator.device)
    for batch in loader:
        labels, elem = batch["labels"], batch["element_index"]
        out = model(input_ids=batch["input_ids"], input_noise=batch.get("input_noise"))
        per_sample = per_sample_counts(out.logits, labels, elem)
        totals += accelerator.gather_for_metrics(per_sample).sum(0)
    model.train()
    el_c, el_n, st_c, st_n, loss = totals.tolist()
    return {"element_accuracy": el_c / el_n, "step_accuracy": st_c / st_n, "loss": loss / st_n,
            "elements": int(el_n), "steps": int(st_n)}


def per_sample_counts(logits, labels, element_index) -> torch.Tensor:
    """(B, 5): element correct, elements, step correct, steps, summed loss; one row per sample,
    so that gather_for_metrics can drop the duplicates of an uneven last batch."""
    from .metrics import count_correct, window_predictions

    rows = []
    step_pred, el_pred = window_predictions(logits, labels, element_index)
    loss = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100,
                                             reduction="none").sum(1)
    for i in range(logits.shape[0]):
        c = count_correct(step_pred[i:i + 1], el_pred[i:i + 1], labels[i:i + 1], element_index[i:i + 1])
        rows.append([c["element_correct"], c["elements"], c["step_correct"], c["steps"], float(loss[i])])
    return torch.tensor(rows, dtype=torch.float64, device=logits.device)


def latest_state(output_dir: Path) -> Path | None:
    states = sorted((output_dir / "state").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    return states[-1] if states else None


def train(args: TrainArgs, task: Task | None = None, stop_after: int | None = None) -> dict:
    """Train and return the final validation metrics. `stop_after` simulates a crash (tests)."""
    out = Path(args.output_dir)
    accelerator = Accelerator(gradient_accumulation_steps=args.grad_accum, mixed_precision=args.mixed_precision,
                              cpu=args.cpu, log_with=args.report_to, project_dir=str(out),
                              dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True))
    set_seed(args.train_seed)
    task = task or load_task(args.config, args.data_dir, **args.task_overrides)
    model = SelectivBenchForTokenClassification(model_config(args, task))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, args.warmup_steps, args.max_steps)
    train_collator = SelectivBenchCollator(task.params.vocab_size, task.params.noise, args.train_seed, "train")
    eval_collator = SelectivBenchCollator(task.params.vocab_size, task.params.noise, args.train_seed, "validation")
    val = task.data["validation"]
    if args.eval_samples:
        val = val.select(range(min(args.eval_samples, len(val))))
    train_loader = DataLoader(model_view(task.data["train"]), batch_size=args.batch_size, shuffle=True,
                              collate_fn=train_collator, generator=torch.Generator().manual_seed(args.train_seed))
    eval_loader = DataLoader(model_view(val), batch_size=args.batch_size, collate_fn=eval_collator)
    model, optimizer, train_loader, eval_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, eval_loader, scheduler)
    progress = Progress()
    accelerator.register_for_checkpointing(progress)
    if args.resume and (state := latest_state(out)) is not None:
        accelerator.load_state(str(state))
        accelerator.print(f"resumed from {state} at step {progress.step}")
        if accelerator.is_main_process:  # forget what was logged after that state
            drop_log_after(out / "metrics.jsonl", progress.step)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_args.json").write_text(json.dumps(asdict(args), indent=1))
    if args.report_to:
        accelerator.init_trackers(out.name, config={k: v for k, v in asdict(args).items() if k != "task_overrides"})

    steps_per_epoch = math.ceil(len(train_loader) / args.grad_accum)
    bar = tqdm(total=args.max_steps, initial=progress.step, disable=args.quiet or not accelerator.is_local_main_process,
               desc=f"train {args.mixer}")
    metrics, stop = {}, False
    model.train()
    while progress.step < args.max_steps and not stop:
        epoch, done_in_epoch = divmod(progress.step, steps_per_epoch)
        train_collator.epoch = epoch
        train_loader.set_epoch(epoch)
        loader = accelerator.skip_first_batches(train_loader, done_in_epoch * args.grad_accum) \
            if done_in_epoch else train_loader
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(input_ids=batch["input_ids"], labels=batch["labels"],
                             input_noise=batch.get("input_noise")).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.clip:
                    accelerator.clip_grad_norm_(model.parameters(), args.clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            progress.step += 1
            bar.update(1)
            record = {"step": progress.step, "loss": accelerator.gather(loss.detach()).mean().item(),
                      "lr": scheduler.get_last_lr()[0]}
            if progress.step % args.eval_every == 0 or progress.step == args.max_steps:
                metrics = evaluate_loader(model, eval_loader, accelerator)
                record.update({f"eval_{k}": v for k, v in metrics.items()})
                stop = early_stop(progress, metrics["element_accuracy"], args.patience)
                bar.set_postfix(acc=f"{metrics['element_accuracy']:.4f}")
            log(accelerator, out, record, args.report_to)
            if progress.step % args.save_every == 0 or progress.step == args.max_steps or stop:
                save(accelerator, model, out, progress.step, run_card(args, task, progress.step, metrics))
            if stop_after is not None and progress.step >= stop_after:
                return {"stopped_at": progress.step}
            if progress.step >= args.max_steps or stop:
                break
    bar.close()
    accelerator.end_training()
    return metrics


def early_stop(progress: Progress, score: float, patience: int) -> bool:
    if score > progress.best:
        progress.best, progress.bad_evals = score, 0
        return False
    progress.bad_evals += 1
    return patience > 0 and progress.bad_evals >= patience


def log(accelerator, out: Path, record: dict, report_to) -> None:
    if accelerator.is_main_process:
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
    if report_to:
        accelerator.log(record, step=record["step"])


def drop_log_after(path: Path, step: int) -> None:
    if path.exists():
        kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in kept))


def run_card(args: TrainArgs, task: Task, step: int, metrics: dict) -> dict:
    """What a checkpoint needs to say about how it was made (read by publish-model)."""
    return {"train_args": asdict(args), "task": task.name, "task_params": task.params.to_dict(), "step": step,
            "validation": metrics}


def save(accelerator, model, out: Path, step: int, meta: dict, keep: int = 2) -> None:
    accelerator.wait_for_everyone()
    accelerator.save_state(str(out / "state" / f"step-{step}"))
    if accelerator.is_main_process:
        states = sorted((out / "state").glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
        for old in states[:-keep]:
            shutil.rmtree(old)
        final = out / "model"
        if final.exists():
            shutil.rmtree(final)
        accelerator.unwrap_model(model).save_pretrained(final)
        (final / RUN_FILE).write_text(json.dumps(meta, indent=1))
    accelerator.wait_for_everyone()
