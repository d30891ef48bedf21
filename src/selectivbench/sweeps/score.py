"""`selectivbench score`: one protocol, one number, every mixer placed among the reference mixers.

A preset fixes the protocol: the four tasks at one size, two training seeds, a small lr grid chosen
per (task, seed) on the validation split, the test accuracy reported. Each task's accuracy is
normalized between chance (the best memoryless predictor: `chance_accuracy`) and the Bayes ceiling,
and the score is the mean of the four. The sweep itself is `reproduce`'s machinery: its plan
(`plan`, `run_spec`), its worker (`execute`), its launchers and recording (`_run_all`: results.jsonl,
failures.jsonl, resume), its lock and its outputs record; this module adds the presets, the
divergence check, the chance level, the scorecard and the leaderboard.

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
import io
import json
import math
import os
import re
import shlex
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from ..files import atomic_write_text
from ..errors import ParameterError
from ..builders.config import gap_split
from ..models import MIXERS, PluginError, ResolvedMixer, resolve_mixer
from .driver import Outcome, _run_all, execute
from .launchers import (check_launcher, check_ray_address, check_ray_resources, launch_local, launch_ray,
                               ray_cluster, sweep_lock)
from .outputs import ROW_KEYS, check_outputs, read_rows, replace_outputs
from .plan import complete_runs, plan, run_spec
from .report import mean_std, select_on_validation
from .scales import Scale, _grammar_rng
from ..training.args import TrainArgs, check_train_args

TASKS = ("complexity", "gapped", "distractor", "generalization")
STATE_T = 1024  # the sequence length at which the carried state (or the KV cache) is measured
WRITER = "selectivbench score"
RUN_RECORD = "score_run.json"
LOCK_FILE = ".score.lock"
SCORECARD_FILES = ("scorecard.json", "scorecard.md", "scorecard.png")
REPOSITORY = Path(__file__).resolve().parents[3]  # the source tree of an editable install


# --- presets ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preset:
    """A protocol: reproduce's `Scale` (per task through `per_task`) and, per task, the split whose
    test accuracy is the task's (generalization: its longest fixed test gap)."""

    name: str
    scale: Scale
    description: str
    score_split: dict = field(default_factory=dict)  # task -> split; default "test"

    def split_of(self, task: str) -> str:
        return self.score_split.get(task, "test")

    def scale_of(self, task: str) -> Scale:
        return self.scale.for_task(task)


def _data(**task) -> dict:
    """A task's data overrides on the common small grammar (V = 9, the grammar of task seed 1 drawn by
    this project's generator, as the committed small study)."""
    return {**dict(vocab_size=9, seq_len=40, num_train=2000, num_validation=100, num_test=100, seed=1,
                   **_grammar_rng("selectivbench")), **task}


def _toy(**task) -> dict:
    """The smoke preset's data: V = 4, sequences of 6 elements, a handful of samples."""
    return {**dict(vocab_size=4, seq_len=6, num_train=16, num_validation=8, num_test=8, seed=1), **task}


LITE_GAP = 20  # generalization's test gap: 4x the longest training gap (5 steps)
LITE_STEPS = 250
PRESETS: dict[str, Preset] = {
    "lite": Preset(
        "lite",
        Scale(mixers=MIXERS, seeds=(0, 1), widths=(32,), ambiguities=(8,), generalization_k=4, test_gaps=(LITE_GAP,),
              lrs=(3e-3, 1e-2), warmups=(20,), data=_data(),
              train=dict(n_layers=2, batch_size=32, max_steps=LITE_STEPS, eval_every=LITE_STEPS,
                         save_every=LITE_STEPS, dropout=0.0),
              per_task={
                  "gapped": dict(data=_data(ambiguities=8, ambiguity_depth=8, seq_len=20, gap_high=0.5)),
                  "distractor": dict(data=_data(ambiguities=8, ambiguity_depth=8, gap_start=0, gap_prob=0.3)),
                  "generalization": dict(data=_data(seq_len=20, gap_high=0.5)),
              }),
        "V = 9, 2-layer models of width 32, 250 steps of batch 32, dropout 0, lr in {3e-3, 1e-2} chosen on "
        "validation, seeds 0 and 1; complexity k = d = 8 with 40 elements; gapped k = d = 8, 20 elements, gaps "
        "of 1-5 steps, noise 0.2; distractor k = d = 8, 40 elements, a distractor after 30% of the elements; "
        f"generalization k = d = 4, trained as gapped, tested with gaps of {LITE_GAP} steps",
        score_split={"generalization": gap_split(LITE_GAP)}),
    "smoke": Preset(
        "smoke",
        Scale(mixers=MIXERS, seeds=(0, 1), widths=(8,), ambiguities=(2,), generalization_k=2, test_gaps=(6,),
              lrs=(3e-3, 3e-2), warmups=(1,),
              data=_toy(),
              train=dict(n_layers=1, batch_size=16, max_steps=2, eval_every=10**9, save_every=10**9, n_heads=2,
                         d_state=4, dropout=0.0),
              per_task={"gapped": dict(data=_toy(ambiguities=2, ambiguity_depth=2, gap_high=0.3)),
                        "distractor": dict(data=_toy(ambiguities=2, ambiguity_depth=2, gap_start=0, gap_prob=0.5)),
                        "generalization": dict(data=_toy(gap_high=0.3))}),
        "the same machinery at toy size (tests): width 8, one layer, 2 steps",
        score_split={"generalization": gap_split(6)}),
}


def check_preset(name) -> Preset:
    if name not in PRESETS:
        raise ParameterError(f"preset={name!r} is invalid: allowed one of {tuple(PRESETS)}")
    return PRESETS[name]


def resolve(mixer) -> ResolvedMixer:
    """The one door every --mixer value goes through: `selectivbench.models.resolve_mixer` (a built-in
    name, PATH.py:CLASS, MODULE:CLASS, an installed entry point's or a registered name). A plugin is
    then registered in this process under its name, so the checkpoints its runs save load here."""
    try:
        return resolve_mixer(mixer)
    except PluginError as err:
        raise ParameterError(f"mixer={mixer!r} is invalid: allowed one of {MIXERS} or a plugin (PATH.py:CLASS, "
                             f"MODULE:CLASS, an installed or registered name): {err}") from None


def run_mixer(resolved: ResolvedMixer) -> str:
    """The --mixer value the runs train with, wherever they run: a built-in's name, a plugin's origin
    (PATH.py:CLASS with its path absolute, MODULE:CLASS, an entry point's or a registered name)."""
    if resolved.plugin is None:
        return resolved.name
    return resolved.plugin["origin"].partition(":")[2]


def check_causal(mixer: str, resolved: ResolvedMixer) -> None:
    """check-mixer's causality check, before any training: a model that reads later inputs would score
    above the Bayes ceiling."""
    from ..check_mixer import check_mixer

    (causal,) = check_mixer(run_mixer(resolved), only=("causal",))
    if causal.passed is not True:
        raise ParameterError(f"mixer={mixer!r} is invalid: allowed a causal mixer; check-mixer's causal check "
                             f"fails: {causal.figure} ({causal.detail}), a model that reads later inputs would "
                             "score above the Bayes ceiling")


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
    import torch

    from ..allocator import keep_freed_memory

    torch.set_num_threads(threads)
    keep_freed_memory()


def launch_pool(specs, finished, failed, workers: int, worker=execute_scored) -> None:
    """`workers` processes on this machine, each with cpu_count / workers torch threads (at least 1),
    each run in whichever is free; only this driver records (as `launch_local`). Killed or
    interrupted, the processes are stopped and the rerun continues with the missing runs."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

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


# --- chance, state size ----------------------------------------------------------------------------
def chance_accuracy(dataset) -> float:
    """Element accuracy of the best constant prediction on these samples: every element named the
    state most frequent among them (what a model learns from the class frequencies alone, without
    reading its input). Elements are counted as the metric counts them, at their first step
    (`metrics.count_correct`)."""
    import numpy as np
    import pyarrow.compute as pc

    columns = {c: dataset.data.column(c).combine_chunks() for c in ("labels", "element_index")}
    labels, element = (np.asarray(pc.list_flatten(columns[c])) for c in ("labels", "element_index"))
    starts = np.asarray(columns["labels"].offsets)[:-1]
    first = np.ones(len(labels), dtype=bool)
    first[1:] = element[1:] != element[:-1]
    first[starts[starts < len(labels)]] = True  # a sequence's first step, even after a one-element sequence
    return float(np.bincount(labels[first]).max() / max(int(first.sum()), 1))


def state_bytes(train: dict, task) -> int:
    """Bytes of the state the model carries per sequence after STATE_T steps (a KV cache: its size
    there), measured on the model the runs train (fresh weights: the size does not depend on them)."""
    import torch

    from ..models import SelectivBenchForTokenClassification
    from ..training.loop import model_config

    args = TrainArgs(**{k: v for k, v in train.items() if k in TrainArgs.__dataclass_fields__})
    model = SelectivBenchForTokenClassification(model_config(args, task)).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, STATE_T, dtype=torch.long), use_cache=True)
    return int(out.state.nbytes())


# --- the scorecard ---------------------------------------------------------------------------------
def task_card(rows: list[dict], failures: list[dict], split: str, chance: float, planned: list[str],
              seeds) -> dict:
    """One task's entry: the validation choice per seed, then the test accuracy of the chosen runs over
    the seeds. Failed runs (diverged, or raised) have no rows: they are listed, never averaged in."""
    done = {r["run"] for r in rows}
    chosen, selection = select_on_validation(rows)
    by_seed = {r["train_seed"]: r for r in chosen if r["split"] == split}
    accuracy = {s: by_seed[s]["element_accuracy"] for s in seeds if s in by_seed}
    ceiling = statistics.fmean(r["bayes_element_accuracy"] for r in by_seed.values()) if by_seed else None
    chosen_lr = {s: by_seed[s]["lr"] for s in accuracy}
    last_error = {f["run"]: f["error"] for f in failures}  # the newest failure of each run
    failed = [{"run": key, "error": last_error[key]} for key in planned if key not in done and key in last_error]
    card = {"split": split, "accuracy": None, "accuracy_std": None, "accuracy_per_seed": accuracy,
            "bayes_ceiling": ceiling, "chance": chance, "normalized": None, "normalized_per_seed": {},
            "lr_chosen_per_seed": chosen_lr, "selection": selection, "seeds": len(accuracy),
            "runs": len(planned), "runs_done": len(done & set(planned)), "failed_runs": failed,
            "parameters": next(iter(by_seed.values()))["parameters"] if by_seed else None}
    if accuracy:
        card["accuracy"], card["accuracy_std"] = mean_std(list(accuracy.values()))
        card["normalized"] = normalize(card["accuracy"], chance, ceiling)
        if card["normalized"] is not None:
            card["normalized_per_seed"] = {s: normalize(a, chance, ceiling) for s, a in accuracy.items()}
    return card


def normalize(accuracy: float, chance: float, ceiling: float) -> float | None:
    """0 at chance, 1 at the Bayes ceiling; None where the ceiling is not above chance (a task that
    cannot tell models apart)."""
    return (accuracy - chance) / (ceiling - chance) if ceiling > chance else None


def scorecard(mixer: str, preset: Preset, tasks: dict, seeds, command: str, efficiency: dict,
              taxonomy: dict | None, plugin: dict | None = None) -> dict:
    """The whole card from the tasks' entries: score = mean normalized accuracy over the four tasks
    (None unless every task has one), its per-seed values and their std."""
    normalized = [t["normalized"] for t in tasks.values()]
    per_seed = {s: statistics.fmean(t["normalized_per_seed"][s] for t in tasks.values())
                for s in seeds if all(s in t["normalized_per_seed"] for t in tasks.values())}
    complete = all(t["runs_done"] == t["runs"] for t in tasks.values())
    return {"mixer": mixer, "mixer_plugin": plugin, "preset": preset.name, "command": command, "version": _version(),
            "seeds": list(seeds),
            "protocol": preset.description, "tasks": tasks,
            "score": statistics.fmean(normalized) if None not in normalized else None,
            "score_std": statistics.stdev(per_seed.values()) if len(per_seed) > 1 else None,
            "score_per_seed": per_seed, **efficiency, "taxonomy": taxonomy, "complete": complete,
            "failed_runs": sum(len(t["failed_runs"]) for t in tasks.values()), "rank": None}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("selectivbench")
    except PackageNotFoundError:
        return "unknown"


def place(card: dict, references: list[dict], source: str) -> dict | None:
    """The card's rank among the reference cards (a reference of the same mixer name is replaced by
    this card): 1 + the number of references with a higher score."""
    if card["score"] is None or not references:
        return None
    others = [r for r in references if r.get("mixer") != card["mixer"] and r.get("score") is not None]
    return {"rank": 1 + sum(r["score"] > card["score"] for r in others), "of": len(others) + 1, "references": source}


def read_references(path: str | Path) -> list[dict]:
    """A leaderboard file: a JSON list of scorecards (each with mixer, score, state_bytes)."""
    try:
        cards = json.loads(Path(path).read_text())
        assert isinstance(cards, list) and all(isinstance(c, dict) and isinstance(c.get("mixer"), str)
                                               and "score" in c and "state_bytes" in c for c in cards)
    except (OSError, ValueError, AssertionError):
        raise ParameterError(f"references={str(path)!r} is invalid: allowed a leaderboard JSON file written by "
                             "`selectivbench score --all` (a list of scorecards)") from None
    return cards


def _fmt(value, digits=3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _pm(mean, std) -> str:
    return "–" if mean is None else f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def scorecard_markdown(card: dict) -> str:
    tasks = card["tasks"]
    rank = card["rank"]
    where = (f"rank **{rank['rank']} of {rank['of']}** among the reference mixers (`{rank['references']}`)" if rank
             else "no reference leaderboard for this preset: no rank")
    lines = [f"# SelectivBench scorecard: `{card['mixer']}` (preset `{card['preset']}`)", "",
             f"**Score {_pm(card['score'], card['score_std'])}** (mean over the four tasks of the normalized test "
             f"accuracy, (accuracy - chance) / (ceiling - chance); ± the std of the per-seed scores), {where}.", ""]
    plugin = card.get("mixer_plugin")
    if plugin:
        lines += [f"Mixer plugin `{card['mixer']}`: class `{plugin['class']}` from `{plugin['origin']}` (source sha256 "
                  f"`{plugin['sha256'][:12]}`).", ""]
    if not card["complete"]:
        lines += [f"**Incomplete:** {card['failed_runs']} run(s) failed (listed below) and "
                  f"{sum(t['runs'] - t['runs_done'] for t in tasks.values())} planned run(s) have no results; they "
                  "are not averaged in. The same command retries them.", ""]
    lines += ["| task | split | accuracy (mean ± std) | seeds | chance | Bayes ceiling | normalized | lr chosen per seed |",
              "|---|---|---|---|---|---|---|---|"]
    for name, t in tasks.items():
        lrs = ", ".join(f"{lr:g}" for lr in t["lr_chosen_per_seed"].values()) or "–"
        lines.append(f"| {name} | {t['split']} | {_pm(t['accuracy'], t['accuracy_std'])} | {t['seeds']} | "
                     f"{_fmt(t['chance'])} | {_fmt(t['bayes_ceiling'])} | {_fmt(t['normalized'])} | {lrs} |")
    tokens = card["train_tokens_per_s"]
    lines += ["", f"Efficiency: {card['parameters']:,} parameters; state carried per sequence at T = {STATE_T:,}: "
                  f"{card['state_bytes']:,} bytes; training {'–' if tokens is None else f'{tokens:,.0f}'} tokens/s "
                  f"(measured during the runs, {card['threads_per_run']} thread(s) each); "
                  f"{card['run_seconds'] / 60:.1f} minutes of runs (summed over the runs)."]
    if card["taxonomy"]:
        tx = card["taxonomy"]
        lines += ["", "| transition | input gating | in-state channel mixing | softmax | state size |",
                  "|---|---|---|---|---|",
                  f"| {tx['transition']} | {tx['input_gating']} | {tx['channel_mixing']} | {tx['softmax']} | "
                  f"{tx['state']} |"]
    failed = [f for t in tasks.values() for f in t["failed_runs"]]
    if failed:
        lines += ["", "Failed runs (not averaged in):", ""] + [f"- `{f['run']}`: {f['error']}" for f in failed]
    lines += ["", f"Protocol `{card['preset']}`: {card['protocol']}.", "",
              f"Command: `{card['command']}` (selectivbench {card['version']}).", "",
              "![score against state bytes](scorecard.png)", ""]
    return "\n".join(lines)


def plot_scores(cards: list[dict], highlight: str | None, title: str) -> bytes:
    """Score against carried state bytes (log scale), every card a labelled point; `highlight` in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c in cards:
        if c.get("score") is None:
            continue
        mine = c["mixer"] == highlight
        ax.scatter(c["state_bytes"], c["score"], color="tab:red" if mine else "tab:blue", s=60 if mine else 30,
                   zorder=3 if mine else 2)
        ax.annotate(c["mixer"], (c["state_bytes"], c["score"]), fontsize=8, xytext=(4, 3), textcoords="offset points",
                    fontweight="bold" if mine else "normal")
    ax.set_xscale("log")
    ax.set_xlabel(f"state bytes per sequence at T = {STATE_T:,} (KV cache for attention)")
    ax.set_ylabel("score (normalized accuracy, mean of 4 tasks)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    plt.close(fig)
    return png.getvalue()


# --- folders ---------------------------------------------------------------------------------------
def folder_name(mixer: str) -> str:
    """A mixer's folder name (a plugin's target may hold '/' or ':')."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", mixer)


def default_out(preset: str, mixer: str | None) -> str:
    """--all: `results` (the leaderboard beside the committed small study); one mixer: its folder
    among the leaderboard's, so a built-in's committed runs are found and not trained again."""
    return "results" if mixer is None else str(Path("results") / f"score_{preset}" / folder_name(mixer))


def is_scorecard_output(name: str) -> bool:
    return name in SCORECARD_FILES


def leaderboard_files(preset: str) -> tuple[str, ...]:
    return tuple(f"leaderboard_{preset}{ext}" for ext in (".json", ".md", ".png"))


def _provenance(plugin: dict | None) -> tuple | None:
    """Where a plugin came from and which source it had (None: a built-in)."""
    return None if plugin is None else (plugin.get("origin"), plugin.get("sha256"))


def check_score_folder(folder: Path, mixer: str, preset: str, flag: str, plugin: dict | None = None) -> None:
    """A score folder is new or empty, or holds this command's files for this very mixer and preset
    (a plugin: from the same origin with the same source): anything else (a user's files, another
    mixer's runs, an edited plugin's) is one error before any work."""
    if folder.exists() and not folder.is_dir():
        raise ParameterError(f"{flag}={str(folder)!r} is invalid: allowed a folder ({folder} is a file)")
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ParameterError(f"{flag}={str(folder)!r} is invalid: allowed a folder that can be made and written "
                             f"({existing} is not writable)")
    if not folder.is_dir() or not any(folder.iterdir()):
        return
    allowed = f"allowed a new or empty folder, or the score folder of mixer {mixer!r} and preset {preset!r}"
    record = folder / RUN_RECORD
    try:
        claim = json.loads(record.read_text())
        assert claim["written_by"] == WRITER
    except (OSError, ValueError, KeyError, TypeError, AssertionError):
        raise ParameterError(f"{flag}={str(folder)!r} is invalid: {allowed} (it holds other files and no "
                             f"{RUN_RECORD} of `selectivbench score`)") from None
    if (claim.get("mixer"), claim.get("preset")) != (mixer, preset):
        raise ParameterError(f"{flag}={str(folder)!r} is invalid: {allowed} (it is the score folder of mixer "
                             f"{claim.get('mixer')!r} and preset {claim.get('preset')!r})")
    if _provenance(claim.get("mixer_plugin")) != _provenance(plugin):
        was = claim.get("mixer_plugin") or {"origin": "built-in", "sha256": "-"}
        raise ParameterError(f"{flag}={str(folder)!r} is invalid: {allowed} from the same source (its runs are of "
                             f"{was.get('origin')} with source sha256 {str(was.get('sha256'))[:12]}, this plugin's "
                             f"{str((plugin or {}).get('sha256'))[:12]}: give another --out)")
    ours = {RUN_RECORD, LOCK_FILE, "outputs.json", *SCORECARD_FILES, *TASKS}
    for path in sorted(folder.iterdir()):
        if path.name not in ours or (path.name in TASKS and not path.is_dir()):
            raise ParameterError(f"{flag}={str(folder)!r} is invalid: {allowed} ({path} is not one of its files: "
                                 "move it away, it is never replaced)")
    check_outputs(folder, str(folder), is_scorecard_output, WRITER)
    for task in TASKS:  # both records readable before anything is written
        read_rows(folder / task / "failures.jsonl")
        read_rows(folder / task / "results.jsonl", keys=ROW_KEYS)


def claim_folder(folder: Path, mixer: str, preset: str, plugin: dict | None = None) -> None:
    """The folder's run record: the mixer (a plugin also where it came from, as its config records it)."""
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / RUN_RECORD).exists():
        claim = {"written_by": WRITER, "mixer": mixer, "preset": preset, **({"mixer_plugin": plugin} if plugin else {})}
        atomic_write_text(folder / RUN_RECORD, json.dumps(claim, indent=1) + "\n")


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
        from ..training.run_folder import check_output_dir

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
    import torch

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


def taxonomy_of(resolved: ResolvedMixer) -> dict | None:
    """A built-in's row of `selectivbench taxonomy`; a plugin's from its module's TAXONOMY (None when it
    declares none)."""
    import sys

    from ..models import taxonomy_rows
    from ..models.taxonomy import plugin_taxonomy

    if resolved.plugin is None:
        return next({k: v for k, v in row.items() if k != "mixer"} for row in taxonomy_rows()
                    if row["mixer"] == resolved.name)
    declared = isinstance(getattr(sys.modules.get(resolved.cls.__module__), "TAXONOMY", None), dict)
    return plugin_taxonomy(resolved.cls) if declared else None


def build_card(resolved: ResolvedMixer, p: Preset, folder: Path, planned: dict, command: str, threads: int) -> dict:
    """The scorecard of a score folder from its records (rows, failures), the chance level of each
    task's scored split and the model's state size."""
    from ..data.task import load_task

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


# --- the leaderboard -------------------------------------------------------------------------------
SELECTIVITY_TASKS = ("complexity", "gapped", "distractor")


def _group_mean(cards: list[dict], keep, tasks=TASKS) -> float | None:
    values = [statistics.fmean(c["tasks"][t]["normalized"] for t in tasks) for c in cards
              if c.get("taxonomy") and keep(c["taxonomy"]) and all(c["tasks"][t]["normalized"] is not None
                                                                   for t in tasks)]
    return statistics.fmean(values) if values else None


def findings(cards: list[dict]) -> list[tuple[str, str, str]]:
    """The paper's three findings, each held against the leaderboard by a stated rule on the taxonomy's
    groups (so the verdicts follow the numbers): (finding, verdict, the numbers)."""
    by = {c["mixer"]: c for c in cards}
    rows = []
    dd = _group_mean(cards, lambda t: t["transition"].startswith("data-dependent"), SELECTIVITY_TASKS)
    fixed = _group_mean(cards, lambda t: t["transition"].startswith("fixed"), SELECTIVITY_TASKS)
    gate = [by[m]["tasks"] for m in ("gated_deltanet", "deltanet") if m in by]
    if dd is not None and fixed is not None and len(gate) == 2:
        gain = (statistics.fmean(gate[0][t]["normalized"] for t in SELECTIVITY_TASKS)
                - statistics.fmean(gate[1][t]["normalized"] for t in SELECTIVITY_TASKS))
        rows.append(("Gating and fast forgetting help recall (rule: data-dependent transitions above fixed ones, "
                     "and the gate lifts DeltaNet, on the mean normalized accuracy of tasks 1-3)",
                     "holds" if dd > fixed and gain > 0 else "does not hold",
                     f"data-dependent {dd:.3f} vs fixed {fixed:.3f}; gated_deltanet - deltanet {gain:+.3f}"))
    recurrent = lambda t: not t["softmax"].startswith("yes")  # noqa: E731
    mix_gen = _group_mean(cards, lambda t: recurrent(t) and t["channel_mixing"].startswith("yes"), ("generalization",))
    non_gen = _group_mean(cards, lambda t: recurrent(t) and t["channel_mixing"].startswith("no"), ("generalization",))
    mix_sel = _group_mean(cards, lambda t: recurrent(t) and t["channel_mixing"].startswith("yes"), SELECTIVITY_TASKS)
    non_sel = _group_mean(cards, lambda t: recurrent(t) and t["channel_mixing"].startswith("no"), SELECTIVITY_TASKS)
    if None not in (mix_gen, non_gen, mix_sel, non_sel):
        gen, sel = mix_gen - non_gen, mix_sel - non_sel
        rows.append(("In-state channel mixing matters for generalization, not selectivity (rule: among the "
                     "recurrent mixers, channel mixing gains more on task 4 than on tasks 1-3, and gains on task 4)",
                     "holds" if gen > 0 and gen > sel else "does not hold",
                     f"with - without channel mixing: task 4 {gen:+.3f}, tasks 1-3 {sel:+.3f}"))
    ranked = sorted((c for c in cards if c["score"] is not None), key=lambda c: -c["score"])
    if ranked and any(c.get("taxonomy") for c in ranked):
        soft = [c for c in ranked if c.get("taxonomy") and c["taxonomy"]["softmax"].startswith("yes")]
        if soft:
            best = soft[0]
            rows.append(("Softmax attention dominates (rule: a softmax mixer has the best score)",
                         "holds" if ranked[0] is best else "does not hold",
                         f"best softmax mixer `{best['mixer']}` {best['score']:.3f} (rank {ranked.index(best) + 1}); "
                         f"best overall `{ranked[0]['mixer']}` {ranked[0]['score']:.3f}"))
    return rows


def leaderboard_markdown(p: Preset, cards: list[dict], command: str, plot_name: str, pending=()) -> str:
    ranked = sorted(cards, key=lambda c: (c["score"] is None, -(c["score"] or 0.0), c["mixer"]))
    scores = [c["score"] for c in ranked if c["score"] is not None]
    lines = [f"# SelectivBench leaderboard, preset `{p.name}`", "",
             f"Protocol: {p.description}. Each task's test accuracy (the chosen lr per seed, mean over seeds) is "
             "normalized, (accuracy - chance) / (Bayes ceiling - chance), chance being the best constant "
             "prediction (the most frequent state); the score is the mean over the four tasks, ± the std of the "
             "per-seed scores.", "",
             f"Regenerate: `{command}` (selectivbench {_version()}).", ""]
    if pending:
        lines += [f"**Incomplete: {len(pending)} mixer(s) not scored yet** ({', '.join(f'`{m}`' for m in pending)}); "
                  "the same command runs only their missing runs.", ""]
    missing = [c["mixer"] for c in ranked if not c["complete"]]
    if missing:
        lines += [f"**Incomplete:** {', '.join(f'`{m}`' for m in missing)} have failed or missing runs (not averaged "
                  "in; see their scorecards). The same command runs only the missing ones.", ""]
    lines += ["| rank | mixer | score | " + " | ".join(TASKS) + " | parameters | state bytes (T = 1,024) | "
              "train tok/s | minutes of runs |", "|---|---|---|" + "---|" * len(TASKS) + "---|---|---|---|"]
    for c in ranked:
        tokens = c["train_tokens_per_s"]
        lines.append(f"| {c['rank']['rank'] if c['rank'] else '–'} | `{c['mixer']}` | {_pm(c['score'], c['score_std'])} | "
                     + " | ".join(_fmt(c["tasks"][t]["normalized"]) for t in TASKS)
                     + f" | {c['parameters']:,} | {c['state_bytes']:,} | {'–' if tokens is None else f'{tokens:,.0f}'} | "
                       f"{c['run_seconds'] / 60:.1f} |")
    stds = [(c["score_std"], c["mixer"]) for c in ranked if c["score_std"] is not None]
    lines += ["", "Task columns: normalized accuracy (0 = chance, 1 = Bayes ceiling). Minutes of runs: the runs' "
                  f"wall time summed ({ranked[0]['threads_per_run'] if ranked else 1} thread(s) a run), i.e. the time on "
                  "one worker."]
    if len(scores) > 1:
        lines += ["", "Protocol figures:", "",
                  f"- spread of the scores across the {len(scores)} mixers (how well the protocol discriminates): "
                  f"{max(scores) - min(scores):.3f} from best to worst, std {statistics.stdev(scores):.3f};"]
        if stds:
            worst = max(stds)
            lines.append(f"- largest seed std of a score (how stable it is): {worst[0]:.3f} (`{worst[1]}`); median "
                         f"{statistics.median(s for s, _ in stds):.3f}.")
    verdicts = [] if pending else findings(cards)  # a verdict on some of the mixers would be premature
    if verdicts:
        lines += ["", "The paper's findings at this scale:", "", "| finding | verdict | numbers |", "|---|---|---|"]
        lines += [f"| {f} | {v} | {n} |" for f, v, n in verdicts]
    lines += ["", f"![score against state bytes]({plot_name})", ""]
    return "\n".join(lines)


def write_leaderboard(out: Path, p: Preset, cards: list[dict], command: str, pending=()) -> Path:
    record = check_outputs(out, str(out), lambda name: name in leaderboard_files(p.name), WRITER)
    names = leaderboard_files(p.name)
    ranked = sorted(cards, key=lambda c: (c["score"] is None, -(c["score"] or 0.0), c["mixer"]))
    files = {names[0]: (json.dumps(ranked, indent=1) + "\n").encode(),
             names[1]: leaderboard_markdown(p, cards, command, names[2], pending).encode(),
             names[2]: plot_scores(cards, None, f"SelectivBench {p.name}: score against state size")}
    replace_outputs(out, files, record, WRITER)
    return out / names[1]
