"""`selectivbench evaluate`: many checkpoints x many task configs and splits, on any number of
processes (Accelerate shards the batches, `gather_for_metrics` reassembles them exactly).

One row per (model, config, split, seed) appended to `<out>.jsonl` and `<out>.csv`: element and
per-step accuracy, token-mean loss, and the Bayes ceiling of the same samples beside them.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from accelerate import Accelerator
from torch.utils.data import DataLoader
from transformers import AutoConfig, AutoModelForTokenClassification

from .builders import ParameterError
from .builders.ceiling import ceiling_counts
from .builders.sampler import Sampler
from .data import SelectivBenchCollator, Task, load_task, model_view
from .train import evaluate_loader

FIELDS = ["model", "mixer", "config", "split", "seed", "samples", "element_accuracy", "step_accuracy", "loss",
          "bayes_element_accuracy", "bayes_step_accuracy", "parameters", "elements", "steps"]


def check_compatible(checkpoint: str, task: Task) -> None:
    cfg = AutoConfig.from_pretrained(checkpoint)
    for name, want in (("vocab_size", task.params.vocab_size), ("num_labels", task.num_labels)):
        if getattr(cfg, name) != want:
            raise ParameterError(f"checkpoint {checkpoint}: {name}={getattr(cfg, name)} is invalid for config "
                                 f"{task.name!r}: allowed {want} (the task's grammar)")


def ceiling_of(task: Task, split: str, dataset) -> dict:
    c = ceiling_counts(Sampler(task.params, task.grammar), split, dataset)
    return {"bayes_element_accuracy": c["element_correct"] / c["elements"],
            "bayes_step_accuracy": c["step_correct"] / c["steps"]}


def evaluate(checkpoints: list[str], configs: list[str], out: str | None, splits: list[str] | None = None,
             data_dir: str | None = None, batch_size: int = 64, num_samples: int | None = None, seed: int = 0,
             cpu: bool = False, **overrides) -> list[dict]:
    accelerator = Accelerator(cpu=cpu)
    tasks = [load_task(c, data_dir, **overrides) for c in configs]
    for task in tasks:  # every mismatch is reported before any evaluation starts
        for ckpt in checkpoints:
            check_compatible(ckpt, task)
        for split in splits or []:
            if split not in task.data:
                raise ParameterError(f"split={split!r} is invalid for config {task.name!r}: "
                                     f"allowed {sorted(task.data)}")
    rows = []
    for task in tasks:
        for split in splits or [s for s in task.data if s != "train"]:
            data = task.data[split]
            if num_samples:
                data = data.select(range(min(num_samples, len(data))))
            ceiling = ceiling_of(task, split, data)
            collator = SelectivBenchCollator(task.params.vocab_size, task.params.noise, seed, split)
            loader = accelerator.prepare(DataLoader(model_view(data), batch_size=batch_size, collate_fn=collator))
            for ckpt in checkpoints:
                model = AutoModelForTokenClassification.from_pretrained(ckpt).to(accelerator.device)
                m = evaluate_loader(model, loader, accelerator)
                rows.append({"model": ckpt, "mixer": model.config.mixer, "config": task.name, "split": split,
                             "seed": task.params.seed, "samples": len(data), **m, **ceiling,
                             "parameters": sum(p.numel() for p in model.parameters())})
                accelerator.print(f"{ckpt} {task.name}/{split}: element {m['element_accuracy']:.4f} "
                                  f"(Bayes {ceiling['bayes_element_accuracy']:.4f}) step {m['step_accuracy']:.4f} "
                                  f"loss {m['loss']:.4f}")
    if accelerator.is_main_process and out:
        append_rows(out, rows)
    return rows


def append_rows(out: str, rows: list[dict]) -> None:
    base = Path(out)
    base.parent.mkdir(parents=True, exist_ok=True)
    with open(base.with_suffix(".jsonl"), "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    csv_path = base.with_suffix(".csv")
    new = not csv_path.exists()
    with open(csv_path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerows(rows)
