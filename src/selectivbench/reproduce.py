"""`selectivbench reproduce`: the paper's sweeps, train + evaluate, resumable, with a table and plots.

    complexity      mixers x ambiguities (k = d), then mixers x model sizes at the largest k
    gapped          mixers (gaps of 1-10 silent steps, noise 0.2)
    distractor      mixers (one forbidden symbol after 10% of the elements from element 50)
    generalization  mixers trained as gapped, tested with longer fixed gaps

Each run trains with `--resume` semantics and appends its evaluation rows to
`<out>/<task>_<scale>/results.jsonl`; a run whose rows are there is skipped, so an interrupted sweep
continues where it stopped. `--scale small` is sized for a 2-core CPU (about half an hour a task);
`--scale paper` uses the paper's sizes (V = 41, k = d up to 40, 200,000 training samples).
"""
from __future__ import annotations

import csv
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .evaluate import FIELDS, evaluate
from .models import MIXERS
from .train import TrainArgs, train

TASKS = ("complexity", "gapped", "distractor", "generalization")
SCALES = {
    "small": dict(
        mixers=MIXERS,
        seeds=(0, 1), d_model=32, sizes=(16, 32, 64), n_layers=2, max_steps=400, batch_size=32, lr=3e-3,
        warmup_steps=40, ambiguities=(2, 4, 6, 8), generalization_k=4, test_gaps=(20, 50, 100),
        data=dict(vocab_size=9, seq_len=40, num_train=2000, num_validation=100, num_test=100)),
    "paper": dict(
        mixers=MIXERS,
        seeds=(0, 1, 2, 3), d_model=128, sizes=(64, 128, 256), n_layers=2, max_steps=20_000, batch_size=64,
        lr=1e-3, warmup_steps=1000, ambiguities=(20, 24, 26, 30, 34, 38, 40), generalization_k=40,
        test_gaps=(20, 50, 100), data=dict(vocab_size=41, seq_len=200)),
}


@dataclass
class Run:
    mixer: str
    seed: int
    d_model: int
    overrides: dict = field(default_factory=dict)
    sweep: str = "mixers"  # which plot the run belongs to
    axis: float | None = None  # its x value there (ambiguities, parameter count comes from the row)

    @property
    def key(self) -> str:
        extra = "-".join(f"{k}{v}" for k, v in sorted(self.overrides.items()) if k in ("ambiguities",))
        return "-".join(x for x in (self.mixer, f"d{self.d_model}", extra, f"seed{self.seed}") if x)


def plan(task: str, scale: str) -> list[Run]:
    s = SCALES[scale]
    runs = []
    if task == "complexity":
        for k in s["ambiguities"]:
            runs += [Run(m, seed, s["d_model"], {"ambiguities": k, "ambiguity_depth": k}, "ambiguities", k)
                     for m in s["mixers"] for seed in s["seeds"]]
        k = max(s["ambiguities"])
        runs += [Run(m, seed, d, {"ambiguities": k, "ambiguity_depth": k}, "size", d)
                 for d in s["sizes"] if d != s["d_model"] for m in s["mixers"] for seed in s["seeds"]]
    else:
        over = {}
        if task == "generalization":
            k = s["generalization_k"]
            over = {"ambiguities": k, "ambiguity_depth": k, "test_gaps": tuple(s["test_gaps"])}
        runs += [Run(m, seed, s["d_model"], over) for m in s["mixers"] for seed in s["seeds"]]
    return runs


def reproduce(task: str, scale: str, out: str = "results", mixers: list[str] | None = None) -> Path:
    if task not in TASKS:
        raise ValueError(f"task={task!r} is invalid: allowed one of {TASKS}")
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r} is invalid: allowed one of {tuple(SCALES)}")
    s = SCALES[scale]
    folder = Path(out) / f"{task}_{scale}"
    folder.mkdir(parents=True, exist_ok=True)
    table = folder / "results.jsonl"
    done = {json.loads(line)["run"] for line in table.read_text().splitlines()} if table.exists() else set()
    runs = [r for r in plan(task, scale) if not mixers or r.mixer in mixers]
    for run in tqdm(runs, desc=f"reproduce {task} ({scale})"):
        if run.key in done:
            continue
        data = {**s["data"], **run.overrides}
        ckpt_dir = folder / "runs" / run.key
        args = TrainArgs(config=task, output_dir=str(ckpt_dir), mixer=run.mixer, d_model=run.d_model,
                         n_layers=s["n_layers"], batch_size=s["batch_size"], lr=s["lr"],
                         warmup_steps=s["warmup_steps"], max_steps=s["max_steps"], eval_every=s["max_steps"],
                         save_every=max(100, s["max_steps"] // 4), train_seed=run.seed, resume=True, cpu=True,
                         quiet=True, task_overrides=data)
        train(args)
        splits = [x for x in ("test",) + tuple(f"test_gap{g}" for g in data.get("test_gaps", ()))]
        rows = evaluate([str(ckpt_dir / "model")], [task], None, splits=splits, cpu=True, **data)
        with open(table, "a") as f:
            for r in rows:
                f.write(json.dumps({**r, "run": run.key, "sweep": run.sweep, "axis": run.axis,
                                    "train_seed": run.seed, "d_model": run.d_model}) + "\n")
    rows = [json.loads(line) for line in table.read_text().splitlines()]
    write_outputs(task, folder, rows)
    return folder


def write_outputs(task: str, folder: Path, rows: list[dict]) -> None:
    with open(folder / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["run", "sweep", "axis", "d_model", "train_seed"] + FIELDS,
                           extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    (folder / "summary.md").write_text(summary_markdown(task, rows))
    plot(task, folder, rows)


def views(task: str, rows: list[dict]) -> list[tuple[str, str, list[dict], callable, bool]]:
    """(name, x label, rows, x of a row, log x) of each table and plot of a task."""
    if task == "complexity":
        amb = [r for r in rows if r["sweep"] == "ambiguities"]
        k_max = max((r["axis"] for r in amb), default=None)
        size = [r for r in rows if r["sweep"] == "size" or (r["sweep"] == "ambiguities" and r["axis"] == k_max)]
        return [("accuracy_vs_ambiguities", "ambiguities k = d", amb, lambda r: r["axis"], False),
                ("accuracy_vs_parameters", "parameters", size, lambda r: r["parameters"], True)]
    if task == "generalization":
        return [("accuracy_vs_test_gap", "test gap (silent steps after every element)", rows,
                 lambda r: 10 if r["split"] == "test" else int(r["split"][len("test_gap"):]), True)]
    return [(f"accuracy_{task}", "split", rows, lambda r: r["split"], False)]


def pivot(rows, x_of, metric="element_accuracy") -> dict:
    """{mixer: {x: mean of the metric over seeds}}"""
    acc = defaultdict(lambda: defaultdict(list))
    for r in rows:
        acc[r["mixer"]][x_of(r)].append(r[metric])
    return {m: {x: sum(v) / len(v) for x, v in xs.items()} for m, xs in acc.items()}


def summary_markdown(task: str, rows: list[dict]) -> str:
    sections = []
    for name, xlabel, part, x_of, _ in views(task, rows):
        if not part:
            continue
        if name == "accuracy_vs_parameters":  # counts differ per mixer: tabulate by width instead
            xlabel, x_of = "d_model", (lambda r: r["d_model"])
        acc = pivot(part, x_of)
        xs = sorted({x_of(r) for r in part})
        ceiling = {x: v for xs_ in pivot(part, x_of, "bayes_element_accuracy").values() for x, v in xs_.items()}
        lines = [f"### {task}: element accuracy (test) by {xlabel}", "",
                 "| mixer | " + " | ".join(str(x) for x in xs) + " |", "|---|" + "---|" * len(xs)]
        lines += [f"| `{m}` | " + " | ".join(f"{acc[m][x]:.3f}" if x in acc[m] else "–" for x in xs) + " |"
                  for m in sorted(acc)]
        lines.append("| *Bayes ceiling* | " + " | ".join(f"{ceiling[x]:.3f}" for x in xs) + " |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections) + "\n"


def plot(task: str, folder: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, xlabel, part, x_of, logx in views(task, rows):
        if not part:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for m, points in sorted(pivot(part, x_of).items()):
            xs = sorted(points)
            ax.plot(xs, [points[x] for x in xs], marker="o", label=m)
        ceiling = defaultdict(list)
        for r in part:
            ceiling[x_of(r)].append(r["bayes_element_accuracy"])
        xs = sorted(ceiling)
        ax.plot(xs, [sum(ceiling[x]) / len(ceiling[x]) for x in xs], "k--", label="Bayes ceiling")
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("element accuracy (test)")
        ax.set_title(f"SelectivBench {task}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        fig.savefig(folder / f"{name}.png", dpi=120)
        plt.close(fig)
