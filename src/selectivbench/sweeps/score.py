"""`selectivbench score`: one protocol, one number, every mixer placed among the reference mixers.

A preset fixes the protocol: the four tasks at one size, two training seeds, a small lr grid chosen
per (task, seed) on the validation split, the test accuracy reported. Each task's accuracy is
normalized between chance (the best memoryless predictor: `chance_accuracy`) and the Bayes ceiling,
and the score is the mean of the four. The sweep itself is `reproduce`'s machinery: its plan
(`plan`, `run_spec`), its worker (`execute`), its launchers and recording (`_run_all`: results.jsonl,
failures.jsonl, resume), its lock and its outputs record. By job: the presets and the --mixer door
(`score_presets`), the score folder (`score_folders`), the scorecard (`scorecard`), the leaderboard
(`leaderboard`); this module holds the worker (the divergence check, a process pool) and the driver.

Layout of a score folder (`--out`, default `results/score_<preset>/<mixer>`):

    score_run.json                 which mixer and preset the folder belongs to (written first)
    <task>/results.jsonl           every evaluation row of the task's runs (failures.jsonl beside it)
    <task>/runs/<run>/             checkpoints (resumable)
    scorecard.json / .md / .png    the scorecard; outputs.json holds their sha256

`--all` scores every built-in mixer into `<out>/score_<preset>/<mixer>/` in one launch and writes
`<out>/leaderboard_<preset>.json` (the list of scorecards), `.md` (ranked table, protocol figures,
the paper's findings at this scale) and `.png`.
"""
from __future__ import annotations

import contextlib
import functools
import json
import math
import multiprocessing
import os
import shlex
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import torch

from ..allocator import keep_freed_memory
from ..builders.config import TASKS
from ..data.task import load_task
from ..errors import ParameterError
from ..files import atomic_write_text
from ..models import MIXERS, ResolvedMixer
from ..training.args import TrainArgs, check_train_args
from ..training.run_folder import check_output_dir
from .driver import Outcome, _run_all, execute
from .launchers import (check_launcher, check_ray_address, check_ray_resources, launch_local, launch_ray,
                        ray_cluster, sweep_lock)
from .leaderboard import write_leaderboard
from .outputs import ROW_KEYS, check_outputs, read_rows, replace_outputs
from .plan import complete_runs, plan, run_spec
from .score_folders import (LOCK_FILE, WRITER, check_score_folder, claim_folder, default_out, folder_name,
                            is_scorecard_output, leaderboard_files)
from .score_presets import Preset, check_causal, check_preset, resolve, run_mixer
from .scorecard import (STATE_T, chance_accuracy, plot_scores, read_references, place, scorecard, scorecard_markdown,
                        state_bytes, task_card, taxonomy_of)

REPOSITORY = Path(__file__).resolve().parents[3]  # the source tree of an editable install


# --- the worker ------------------------------------------------------------------------------------
class Diverged(RuntimeError):
    """A run whose training loss, or evaluation loss, is not finite (NaN or inf)."""


def execute_scored(spec: dict) -> list[dict]:
    """reproduce's `execute` (train, resuming, then evaluate), refused when it diverged: a NaN model
    still predicts some class, and its accuracy must not be averaged in. A failure is recorded and
    the rerun finds the same (the run's log keeps the NaN). The run's mixer is resolved first, so a
    plugin is registered in this process (a pool's or Ray's worker too) before its checkpoint is loaded."""
    resolve(spec["train"]["mixer"])
    rows = execute(spec)
    log = Path(spec["train"]["output_dir"]) / "metrics.jsonl"
    for line in log.read_text().splitlines():
        record = json.loads(line)
        if not math.isfinite(record["loss"]):
            raise Diverged(f"training loss {record['loss']} at step {record['step']} (run {spec['key']})")
    for r in rows:
        if not math.isfinite(r["loss"]):
            raise Diverged(f"{r['split']} loss {r['loss']} (run {spec['key']})")
    return rows


def _one_process_worker(threads: int) -> None:
    """A pool process: `threads` torch threads, and glibc keeps freed memory (as the CLI's own process)."""
    torch.set_num_threads(threads)
    keep_freed_memory()


def launch_pool(specs, finished, failed, workers: int, worker=execute_scored) -> None:
    """`workers` processes on this machine, each with cpu_count / workers torch threads (at least 1),
    each run in whichever is free; only this driver records (as `launch_local`). Killed or
    interrupted, the processes are stopped and the rerun continues with the missing runs."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_one_process_worker, initargs=(threads,))
    pending = {}
    try:
        pending = {pool.submit(worker, spec): spec for spec in specs}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                spec = pending.pop(future)
                try:
                    rows = future.result()
                except Exception as error:  # the run raised, or its process died (BrokenProcessPool)
                    failed(spec, error)
                else:
                    finished(spec, rows)
    finally:
        if pending:  # interrupted: no orphan training behind, no run recorded twice
            pool.shutdown(wait=False, cancel_futures=True)
            for child in multiprocessing.active_children():
                child.terminate()
        pool.shutdown(wait=True)



# --- the driver ------------------------------------------------------------------------------------
@dataclass
class ScoreOutcome:
    cards: dict  # mixer -> scorecard
    folders: dict  # mixer -> its score folder
    planned: int
    ran: list
    failed: list
    leaderboard: Path | None = None


def check_workers(workers, launcher: str) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ParameterError(f"workers={workers!r} is invalid: allowed an integer >= 1")
    if workers > 1 and launcher != "local":
        raise ParameterError(f"workers={workers!r} is invalid: allowed only with --launcher local (Ray places "
                             "its runs by --cpus-per-run)")


def score(mixer: str | None = None, preset: str = "lite", out: str | None = None, everything: bool = False,
          launcher: str = "local", workers: int = 1, references: str | None = None, address: str | None = None,
          gpus_per_run: float | None = None, cpus_per_run: float | None = None, command: str | None = None,
          ray_init: dict | None = None) -> ScoreOutcome:
    """Score one mixer (or, `everything`, every built-in and the leaderboard): run the preset's missing
    runs, then write each scorecard. Every argument is checked before any work."""
    p = check_preset(preset)
    if everything == (mixer is not None):
        raise ParameterError(f"mixer={mixer!r} is invalid: allowed either one mixer or --all (every built-in)")
    resolved = {run_mixer(r): r for r in map(resolve, MIXERS if everything else [mixer])}
    mixers = list(resolved)  # what the runs train with; resolved[m].name is what the cards call them
    name = {m: r.name for m, r in resolved.items()}
    check_launcher(launcher, gpus_per_run, cpus_per_run, address)
    check_workers(workers, launcher)
    only_here = [r.name for r in resolved.values() if r.plugin and r.plugin["origin"].startswith("registered:")]
    if only_here and (workers > 1 or launcher == "ray"):
        raise ParameterError(f"mixer={mixer!r} is invalid: allowed with --workers 1 and --launcher local only (a "
                             "plugin registered in this process is unknown to other processes: give its "
                             "PATH.py:CLASS or MODULE:CLASS)")
    if out == "":
        raise ParameterError("out='' is invalid: allowed a folder path (not empty)")
    out = out or default_out(preset, None if everything else name[mixers[0]])
    folders = {m: Path(out) / f"score_{preset}" / folder_name(name[m]) if everything else Path(out) for m in mixers}
    for m, folder in folders.items():
        check_score_folder(folder, name[m], preset, "out", resolved[m].plugin)
    if everything:
        if Path(out).exists() and not Path(out).is_dir():
            raise ParameterError(f"out={out!r} is invalid: allowed a folder ({out} is a file)")
        check_outputs(Path(out), out, lambda name: name in leaderboard_files(preset), WRITER)
    refs_path = references if references is not None else REPOSITORY / "results" / f"leaderboard_{preset}.json"
    refs = read_references(refs_path) if references is not None or (not everything and Path(refs_path).is_file()) \
        else []
    if launcher == "ray" and address is not None:
        check_ray_address(address)
    for m in mixers:  # the last check, the only one that runs the mixer: still before any file is written
        check_causal(mixer or m, resolved[m])
    command = command or "selectivbench score " + shlex.join(
        (["--all"] if everything else ["--mixer", mixers[0]]) + ["--preset", preset, "--out", out])

    with contextlib.ExitStack() as locks:
        specs, planned = [], {}
        for m, folder in folders.items():
            claim_folder(folder, name[m], preset, resolved[m].plugin)
            locks.enter_context(sweep_lock(folder, out, command="score", lock_file=LOCK_FILE))
            for task in TASKS:
                specs += missing_runs(p, m, task, folder / task, planned, cpu=launcher == "ray" and not gpus_per_run)
        for spec in specs:  # a bad combination, or a run folder holding a user's files: one error now
            args = TrainArgs(**spec["train"])
            check_train_args(args)
            check_output_dir(Path(args.output_dir), args)
        outcome = Outcome(Path(out), sum(len(keys) for keys in planned.values()))
        with ray_cluster(address, ray_init or {}) if launcher == "ray" else contextlib.nullcontext() as ray:
            if ray is not None:
                if specs:
                    check_ray_resources(ray, gpus_per_run or 0, cpus_per_run or 1, fixed=address is None)
                launch = functools.partial(launch_ray, ray, specs, gpus_per_run=gpus_per_run or 0,
                                           cpus_per_run=cpus_per_run or 1, worker=execute_scored)
            elif workers > 1:
                launch = functools.partial(launch_pool, specs, workers=workers, worker=execute_scored)
            else:
                launch = functools.partial(launch_local, specs, worker=execute_scored)
            threads = (max(1, (os.cpu_count() or 1) // workers) if workers > 1 else
                       cpus_per_run or 1 if launcher == "ray" else _torch_threads())
            cards = {}

            def report(finished_mixer: str | None = None) -> Path | None:
                """Cards of the mixers whose runs are all settled, ranked among each other (--all) or the
                references, and the leaderboard of those: written as each mixer settles, so a killed
                leaderboard keeps every finished mixer's card."""
                if finished_mixer is not None:
                    cards[finished_mixer] = build_card(resolved[finished_mixer], p, folders[finished_mixer], planned,
                                                       command, threads)
                for m, card in cards.items():
                    card["rank"] = place(card, list(cards.values()) if everything else refs,
                                         str(Path(out) / leaderboard_files(preset)[0]) if everything else str(refs_path))
                    write_scorecard(folders[m], card, list(cards.values()) if everything else refs)
                pending = [m for m in mixers if m not in cards]
                return write_leaderboard(Path(out), p, list(cards.values()), command, pending) if everything else None

            left = {m: sum(spec["train"]["mixer"] == m for spec in specs) for m in mixers}

            def settled(spec) -> None:
                m = spec["train"]["mixer"]
                left[m] -= 1
                if left[m] == 0:
                    report(m)

            def launch_and_report(finished, failed) -> None:
                launch(lambda spec, rows: (finished(spec, rows), settled(spec)),
                       lambda spec, error, trace=None: (failed(spec, error, trace), settled(spec)))

            _run_all(specs, outcome, Path(out), f"score {'all' if everything else name[mixers[0]]} ({preset})",
                     launch_and_report)
        for m in mixers:
            if m not in cards:  # nothing left to run: its card from the records
                cards[m] = build_card(resolved[m], p, folders[m], planned, command, threads)
        leaderboard = report()
    return ScoreOutcome({name[m]: card for m, card in cards.items()}, {name[m]: folders[m] for m in mixers},
                        outcome.planned, outcome.ran, outcome.failed, leaderboard)


def _torch_threads() -> int:
    return torch.get_num_threads()


def missing_runs(p: Preset, mixer: str, task: str, folder: Path, planned: dict, cpu: bool) -> list[dict]:
    """The specs of a task's runs without a complete record (a run with only some of its rows loses
    them and is redone whole, as reproduce does); `planned` gets the keys of all of them."""
    s = p.scale_of(task)
    runs = plan(task, s, [mixer])
    planned[(mixer, task)] = [r.key for r in runs]
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "results.jsonl"
    rows = read_rows(table, repair=True, keys=ROW_KEYS)
    done, partial = complete_runs(rows, s, runs)
    if partial:
        atomic_write_text(table, "".join(json.dumps(r) + "\n" for r in rows if r["run"] not in partial))
    read_rows(folder / "failures.jsonl", repair=True)
    return [{**run_spec(task, s, r, folder, cpu), "record_to": str(folder)} for r in runs if r.key not in done]


def build_card(resolved: ResolvedMixer, p: Preset, folder: Path, planned: dict, command: str, threads: int) -> dict:
    """The scorecard of a score folder from its records (rows, failures), the chance level of each
    task's scored split and the model's state size."""
    mixer = run_mixer(resolved)
    tasks, timing, data_of = {}, [], {}
    for task in TASKS:
        s = p.scale_of(task)
        run = plan(task, s, [mixer])[0]
        data_of[task] = {**s.data, **run.overrides}
        rows = read_rows(folder / task / "results.jsonl", keys=ROW_KEYS)
        rows = list({(r["run"], r["split"]): r for r in rows}.values())
        split = p.split_of(task)
        scored = load_task(task, None, splits=[split], with_train=False, **data_of[task])
        tasks[task] = task_card(rows, read_rows(folder / task / "failures.jsonl"), split,
                                chance_accuracy(scored.data[split]), planned[(mixer, task)], s.seeds)
        timing += [r for r in rows if r["split"] == "test"]  # one row per run
    s = p.scale_of("complexity")
    spec = run_spec("complexity", s, plan("complexity", s, [mixer])[0], folder / "complexity", cpu=True)
    task = load_task("complexity", None, splits=["test"], with_train=False, **data_of["complexity"])
    measured = [r for r in timing if r.get("train_seconds")]
    efficiency = {
        "parameters": tasks["complexity"]["parameters"] or max((t["parameters"] or 0) for t in tasks.values()),
        "state_bytes": state_bytes(spec["train"], task), "state_T": STATE_T,
        "train_tokens_per_s": (sum(r["train_tokens"] for r in measured) / sum(r["train_seconds"] for r in measured)
                               if measured else None),
        "threads_per_run": threads, "run_seconds": sum(r.get("run_seconds") or 0.0 for r in timing)}
    return scorecard(resolved.name, p, tasks, p.scale.seeds, command, efficiency, taxonomy_of(resolved),
                     resolved.plugin)


def write_scorecard(folder: Path, card: dict, references: list[dict]) -> None:
    """scorecard.json / .md / .png, replacing only the files this command wrote there."""
    record = check_outputs(folder, str(folder), is_scorecard_output, WRITER)
    others = [r for r in references if r.get("mixer") != card["mixer"]]
    files = {"scorecard.json": (json.dumps(card, indent=1) + "\n").encode(),
             "scorecard.md": scorecard_markdown(card).encode(),
             "scorecard.png": plot_scores(others + [card], card["mixer"],
                                          f"SelectivBench {card['preset']}: {card['mixer']} among the references")}
    replace_outputs(folder, files, record, WRITER)
