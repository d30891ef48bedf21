"""`selectivbench reproduce`: the paper's sweeps, train + evaluate, resumable, with tables and plots.

    complexity      mixers x ambiguities (k = d) x widths; the size view is the largest k
    gapped          mixers x widths (gaps of 1-10 silent steps, noise 0.2)
    distractor      mixers x widths (one forbidden symbol after 10% of the elements from element 50)
    generalization  mixers x widths trained as gapped, tested with longer fixed gaps

Scales (`scales.py`): `paper` is the paper's grids, `small` is sized for a 2-core CPU, `smoke`
exercises the whole machinery in a handful of tiny runs (tests). Where a scale has
several lr / warm-up values, the best of them per (mixer, axis value, width, seed) is chosen on the
validation split (the paper chose on test), and tables report the test accuracy of the chosen
runs, mean ± std over seeds, beside the Bayes ceiling.

Runs go through a launcher (`launchers.py`): `local` (one after the other, in this process) or
`ray` (every run a Ray task with its own resources). Either way only this driver writes: a finished run's rows are
appended to `<out>/<task>_<scale>/results.jsonl` in one write, a failed run gets a line in
`failures.jsonl` and is tried again on the next call, and a run with a row of each of its splits is skipped,
so an interrupted sweep continues where it stopped. The tables, summary and plots made from them
replace only files this command wrote (`outputs.check_outputs`).
"""
from __future__ import annotations

import contextlib
import functools
import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.compute as pc
from tqdm.auto import tqdm

from ..data.task import load_task
from ..evaluation.evaluate import evaluate
from ..files import atomic_write_text
from ..models import MIXERS, resolve_mixer
from ..models.plugins import absolute_spec
from ..training.args import TrainArgs, check_train_args
from ..training.loop import total_steps, train
from ..training.run_folder import check_output_dir
from .arguments import check_arguments
from .launchers import check_ray_address, check_ray_resources, launch_local, launch_ray, ray_cluster, sweep_lock
from .outputs import ROW_KEYS, append_lines, check_outputs, read_rows, write_outputs
from .plan import complete_runs, plan, run_spec
from .scales import SCALES


class SweepIncomplete(Exception):
    """Some runs of a sweep failed (their errors are in failures.jsonl); the next call retries them."""


@dataclass
class Outcome:
    folder: Path
    planned: int
    ran: list = field(default_factory=list)  # keys finished by this call
    failed: list = field(default_factory=list)  # keys that failed in this call


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
        for spec in specs:  # a bad combination, or a run folder holding a user's files, is one error now,
            args = TrainArgs(**spec["train"])  # not a failure per run after the others trained
            check_train_args(args)
            check_output_dir(Path(args.output_dir), args)
        outcome = Outcome(folder, len(runs))
        with ray_cluster(address, ray_init or {}) if launcher == "ray" else contextlib.nullcontext() as ray:
            if ray is not None and specs:  # before the progress bar: a refusal is then the only line
                # fixed: a Ray started here (no address), which no node will join
                check_ray_resources(ray, gpus_per_run, cpus_per_run, fixed=address is None)
            launch = (functools.partial(launch_ray, ray, specs, gpus_per_run=gpus_per_run, cpus_per_run=cpus_per_run,
                                        worker=execute)
                      if ray is not None else functools.partial(launch_local, specs, worker=execute))
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


def _advance(bar, outcome: Outcome, todo: int) -> None:
    bar.update(1)
    bar.set_postfix(done=len(outcome.ran), failed=len(outcome.failed),
                    left=todo - len(outcome.ran) - len(outcome.failed))


def execute(spec: dict) -> list[dict]:
    """Train one run (resuming its checkpoint if any) and return its evaluation rows. Writes only
    inside the run's own folder; the driver records the rows. Each row also carries the run's
    training throughput: `train_tokens` (optimizer steps x batch x the mean sequence length of the
    training split, padding not counted) and `train_seconds` (wall time of the training alone, the
    data built before the clock starts), None for a run resumed from a checkpoint (only part of it
    trained in this call), and `run_seconds`, the wall time of the whole run."""
    started = time.perf_counter()
    args = TrainArgs(**spec["train"])
    check_train_args(args)
    resumed = (Path(args.output_dir) / "state").exists()
    task = load_task(args.config, args.data_dir, **args.task_overrides)
    trained = time.perf_counter()
    train(args, task)  # resumes the run's newest intact checkpoint, if any
    train_seconds = None if resumed else time.perf_counter() - trained
    train_tokens = total_steps(args, len(task.data["train"])) * args.batch_size * mean_length(task.data["train"])
    if args.backbone is None and args.mixer not in MIXERS:  # the run's own spec names a plugin's code, never
        resolve_mixer(args.mixer)  # the checkpoint's record: known here (this process or worker) before it loads
    rows = evaluate([str(Path(args.output_dir) / "model")], [spec["task"]], None, splits=spec["splits"],
                    cpu=args.cpu, **spec["data"])
    timing = {"train_tokens": train_tokens, "train_seconds": train_seconds,
              "run_seconds": time.perf_counter() - started}
    return [{**r, **spec["row"], **timing} for r in rows]


def mean_length(dataset) -> float:
    """Mean steps per sequence of a split (its input_ids' lengths, read from Arrow without decoding)."""
    lengths = pc.list_value_length(dataset.data.column("input_ids"))
    return pc.sum(lengths).as_py() / max(len(dataset), 1)
