"""The run record: what a checkpoint records about how it was made (`selectivbench_run.json`, read
back by `data.task.checkpoint_record`)."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ..data.task import RUN_FILE, Task, grammar_sha256
from ..files import atomic_write_text
from .args import TrainArgs


def run_record(args: TrainArgs | dict, task: Task, step: int, metrics: dict, metrics_step: int | None = None) -> dict:
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
    atomic_write_text(Path(folder) / RUN_FILE, json.dumps(run_record(args, task, step, metrics or {}, step), indent=1))
