"""The leaderboard of `selectivbench score --all`: the cards ranked, the protocol's figures and the
paper's three findings held against the table."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

from ..builders.config import TASKS
from .outputs import check_outputs, replace_outputs
from .score_folders import WRITER, leaderboard_files
from .score_presets import Preset
from .scorecard import format_mean_std, format_value, package_version, plot_scores

SELECTIVITY_TASKS = tuple(t for t in TASKS if t != "generalization")  # tasks 1-3, the paper's selectivity tasks


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
             f"Regenerate: `{command}` (selectivbench {package_version()}).", ""]
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
        lines.append(f"| {c['rank']['rank'] if c['rank'] else '–'} | `{c['mixer']}` | "
                     f"{format_mean_std(c['score'], c['score_std'])} | "
                     + " | ".join(format_value(c["tasks"][t]["normalized"]) for t in TASKS)
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
