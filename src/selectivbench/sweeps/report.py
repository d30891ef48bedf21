"""A sweep's results as tables and plots: the choice among lr / warm-up values on validation, the
views of each task, mean ± std over seeds beside the Bayes ceiling."""
from __future__ import annotations

import io
import math
import statistics
from collections import defaultdict

from matplotlib import colormaps
from matplotlib.figure import Figure

from ..builders.config import gap_of_split, gap_split

def select_on_validation(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Per cell (mixer, axis value, width, seed), the run with the best validation element accuracy
    (on ties the smallest lr, then the shortest warm-up: the first in the plan's order, whatever
    order the runs finished in); its non-validation rows, and one line per choice where there was a
    choice. A cell of one run (no lr / warm-up grid) keeps it without a validation row."""
    cells = defaultdict(lambda: defaultdict(list))
    for r in rows:
        cells[r.get("cell", r["run"])][r["run"]].append(r)
    chosen, selection = [], []
    for cell, runs in cells.items():
        def validation(run_rows):
            return next((r["element_accuracy"] for r in run_rows if r["split"] == "validation"), -math.inf)

        def recipe(run):
            return runs[run][0].get("lr") or 0.0, runs[run][0].get("warmup") or 0

        best = max(sorted(runs, key=recipe), key=lambda run: validation(runs[run]))  # max keeps the first of ties
        chosen += [r for r in runs[best] if r["split"] != "validation"]
        if len(runs) > 1:
            first = runs[best][0]
            selection.append({"cell": cell, "run": best, "lr": first.get("lr"), "warmup": first.get("warmup"),
                              "validation_element_accuracy": validation(runs[best]), "candidates": len(runs)})
    return chosen, selection


def views(task: str, rows: list[dict]) -> list[tuple[str, str, list[dict], callable, bool]]:
    """(name, x label, rows, x of a row, log x) of each table and plot of a task."""
    if task == "complexity":
        amb = [r for r in rows if r["sweep"] == "ambiguities"]
        k_max = max((r["axis"] for r in amb), default=None)
        size = [r for r in rows if r["sweep"] == "size" or (r["sweep"] == "ambiguities" and r["axis"] == k_max)]
        # the k sweep at each width it has more than one k for (small: one width; paper: all nine)
        ks_at = defaultdict(set)
        for r in amb:
            ks_at[r["d_model"]].add(r["axis"])
        widths = sorted(w for w, ks in ks_at.items() if len(ks) > 1)
        by_k = [(f"accuracy_vs_ambiguities{f'_d{w}' if len(widths) > 1 else ''}",
                 f"ambiguities k = d{f' (d_model {w})' if len(widths) > 1 else ''}",
                 [r for r in amb if r["d_model"] == w], lambda r: r["axis"], False) for w in widths]
        if not widths:  # rows of the older layout: one width, no per-width split needed
            by_k = [("accuracy_vs_ambiguities", "ambiguities k = d", amb, lambda r: r["axis"], False)]
        return by_k + [("accuracy_vs_parameters", "parameters", size, lambda r: r["parameters"], True)]
    if task == "generalization":
        # `test` has the training law's gaps (up to 10 steps); it stands for 10 where no fixed-10 split exists
        fixed10 = any(r["split"] == gap_split(10) for r in rows)
        kept = [r for r in rows if not (fixed10 and r["split"] == "test")]
        widths = sorted({r["d_model"] for r in kept})  # one view per width (the paper's has two): seeds only in a cell
        return [(f"accuracy_vs_test_gap{f'_d{w}' if len(widths) > 1 else ''}",
                 f"test gap (silent steps after every element){f', d_model {w}' if len(widths) > 1 else ''}",
                 [r for r in kept if r["d_model"] == w],
                 lambda r: 10 if r["split"] == "test" else gap_of_split(r["split"]), True) for w in widths]
    return [(f"accuracy_{task}", "d_model", rows, lambda r: r["d_model"], False)]


def pivot(rows, x_of, metric="element_accuracy") -> dict:
    """{mixer: {x: [the metric of every seed]}}"""
    acc = defaultdict(lambda: defaultdict(list))
    for r in rows:
        acc[r["mixer"]][x_of(r)].append(r[metric])
    return acc


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def mean_cell(values: list[float], seeds: int) -> str:
    """mean ± std; with fewer values than seeds (runs missing) it says how many, and one has no std."""
    if len(values) == 1 and seeds > 1:
        return f"{values[0]:.3f} (n=1)"
    text = "{:.3f} ± {:.3f}".format(*mean_std(values))
    return text if len(values) >= seeds else f"{text} (n={len(values)})"


def summary_markdown(task: str, rows: list[dict], missing: int = 0) -> str:
    seeds = sorted({r.get("train_seed") for r in rows})
    sections = [f"Test element accuracy, mean ± std over {len(seeds)} seed(s) {seeds}; where several lr / "
                f"warm-up values were run, each (mixer, value, seed) keeps the best on validation."]
    if missing:
        sections.append(f"**Incomplete:** {missing} planned run(s) have no results (failed, or not run yet): a cell "
                        "marked n= averages fewer seeds, and a choice on validation saw fewer candidates. The "
                        "same command runs only the missing ones.")
    for name, xlabel, part, x_of, _ in views(task, rows):
        if not part:
            continue
        if name == "accuracy_vs_parameters":  # counts differ per mixer: tabulate by width instead
            xlabel, x_of = "d_model", (lambda r: r["d_model"])
        acc = pivot(part, x_of)
        xs = sorted({x_of(r) for r in part})
        ceiling = defaultdict(list)
        for r in part:
            ceiling[x_of(r)].append(r["bayes_element_accuracy"])
        lines = [f"### {task}: element accuracy (test) by {xlabel}", "",
                 "| mixer | " + " | ".join(str(x) for x in xs) + " |", "|---|" + "---|" * len(xs)]
        for m in sorted(acc):
            cells = (mean_cell(acc[m][x], len(seeds)) if x in acc[m] else "–" for x in xs)
            lines.append(f"| `{m}` | " + " | ".join(cells) + " |")
        lines.append("| *Bayes ceiling* | " + " | ".join(f"{statistics.fmean(ceiling[x]):.3f}" for x in xs) + " |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


def plot(task: str, rows: list[dict]) -> dict[str, bytes]:
    """{file name: PNG bytes} of the task's plots (matplotlib's Figure without pyplot: no backend is
    chosen or changed for the process, and no figure is left open)."""
    plots = {}
    for name, xlabel, part, x_of, logx in views(task, rows):
        if not part:
            continue
        fig = Figure(figsize=(7, 4.5))
        ax = fig.subplots()
        # 11 mixers outnumber the 10 default colours: cycle colours and markers apart
        markers = "osD^v<>ph*X"
        for i, (m, points) in enumerate(sorted(pivot(part, x_of).items())):
            xs = sorted(points)
            means, stds = zip(*(mean_std(points[x]) for x in xs))
            ax.errorbar(xs, means, yerr=stds, marker=markers[i % len(markers)], capsize=3, label=m,
                        color=colormaps["tab20"](i % 20))
        ceiling = pivot([{**r, "mixer": ""} for r in part], x_of, "bayes_element_accuracy")[""]
        xs = sorted(ceiling)
        ax.plot(xs, [statistics.fmean(ceiling[x]) for x in xs], "k--", label="Bayes ceiling")
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("element accuracy (test)")
        ax.set_title(f"SelectivBench {task}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=120)
        plots[f"{name}.png"] = png.getvalue()
    return plots
