"""A mixer's scorecard: the chance level and the carried state's size, each task's entry (the choice on
validation, the normalized test accuracy), the whole card, its rank among reference cards, its
markdown and the score-against-state plot (shared with the leaderboard)."""
from __future__ import annotations

import io
import json
import statistics
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch
from matplotlib.figure import Figure

from ..errors import ParameterError
from ..models import ResolvedMixer, SelectivBenchForTokenClassification, taxonomy_rows
from ..models.taxonomy import plugin_taxonomy
from ..training.args import TrainArgs
from ..training.loop import model_config
from .report import mean_std, select_on_validation
from .score_presets import Preset

STATE_T = 1024  # the sequence length at which the carried state (or the KV cache) is measured


def chance_accuracy(dataset) -> float:
    """Element accuracy of the best constant prediction on these samples: every element named the
    state most frequent among them (what a model learns from the class frequencies alone, without
    reading its input). Elements are counted as the metric counts them, at their first step
    (`metrics.count_correct`)."""
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
    args = TrainArgs(**{k: v for k, v in train.items() if k in TrainArgs.__dataclass_fields__})
    model = SelectivBenchForTokenClassification(model_config(args, task)).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, STATE_T, dtype=torch.long), use_cache=True)
    return int(out.state.nbytes())


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
    return {"mixer": mixer, "mixer_plugin": plugin, "preset": preset.name, "command": command,
            "version": package_version(),
            "seeds": list(seeds),
            "protocol": preset.description, "tasks": tasks,
            "score": statistics.fmean(normalized) if None not in normalized else None,
            "score_std": statistics.stdev(per_seed.values()) if len(per_seed) > 1 else None,
            "score_per_seed": per_seed, **efficiency, "taxonomy": taxonomy, "complete": complete,
            "failed_runs": sum(len(t["failed_runs"]) for t in tasks.values()), "rank": None}


def package_version() -> str:
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


def format_value(value, digits=3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def format_mean_std(mean, std) -> str:
    return "–" if mean is None else f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else "")


def scorecard_markdown(card: dict) -> str:
    tasks = card["tasks"]
    rank = card["rank"]
    where = (f"rank **{rank['rank']} of {rank['of']}** among the reference mixers (`{rank['references']}`)" if rank
             else "no reference leaderboard for this preset: no rank")
    lines = [f"# SelectivBench scorecard: `{card['mixer']}` (preset `{card['preset']}`)", "",
             f"**Score {format_mean_std(card['score'], card['score_std'])}** (mean over the four tasks of the "
             "normalized test accuracy, (accuracy - chance) / (ceiling - chance); ± the std of the per-seed "
             f"scores), {where}.", ""]
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
        lines.append(f"| {name} | {t['split']} | {format_mean_std(t['accuracy'], t['accuracy_std'])} | {t['seeds']} | "
                     f"{format_value(t['chance'])} | {format_value(t['bayes_ceiling'])} | "
                     f"{format_value(t['normalized'])} | {lrs} |")
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
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
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
    return png.getvalue()



def taxonomy_of(resolved: ResolvedMixer) -> dict | None:
    """A built-in's row of `selectivbench taxonomy`; a plugin's from its module's TAXONOMY (None when it
    declares none)."""
    if resolved.plugin is None:
        return next({k: v for k, v in row.items() if k != "mixer"} for row in taxonomy_rows()
                    if row["mixer"] == resolved.name)
    declared = isinstance(getattr(sys.modules.get(resolved.cls.__module__), "TAXONOMY", None), dict)
    return plugin_taxonomy(resolved.cls) if declared else None
