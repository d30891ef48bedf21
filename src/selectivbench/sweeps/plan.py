"""A sweep's plan: every run of a task at a scale (`plan`), the splits that make a run done, and the
plain-data spec a worker trains and evaluates it from."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..builders.config import gap_split
from ..models import MIXERS, resolve_mixer
from .paper import paper_model, paper_width
from .scales import SCALES, Scale


@dataclass
class Run:
    mixer: str
    seed: int  # training seed (and task seed where the scale ties them)
    d_model: int
    lr: float
    warmup: int
    overrides: dict = field(default_factory=dict)  # task parameters of this run
    model: dict = field(default_factory=dict)  # TrainArgs fields a per-mixer rule sets (`paper_model`)
    sweep: str = "mixers"  # which view the run belongs to
    axis: float | None = None  # its x value there (ambiguities)
    tag_recipe: bool = False  # the key names lr and warm-up (several are swept)

    @property
    def cell(self) -> str:
        """The key without lr / warm-up: the runs among which validation chooses."""
        k = self.overrides.get("ambiguities")
        return "-".join(x for x in (mixer_label(self.mixer), f"d{self.d_model}", f"ambiguities{k}" if k is not None else "",
                                    f"seed{self.seed}") if x)

    @property
    def key(self) -> str:
        if not self.tag_recipe:
            return self.cell
        head, seed = self.cell.rsplit("-", 1)
        return f"{head}-lr{self.lr:g}-wu{self.warmup}-{seed}"


def mixer_label(spec: str) -> str:
    """A run's mixer as its folder and table name it: a plugin's name, not its PATH.py:CLASS."""
    return spec if spec in MIXERS else resolve_mixer(spec).name


def plan(task: str, scale: str | Scale, mixers=None) -> list[Run]:
    """Every run of a sweep, in a fixed order, without duplicates (rotary width maps can merge two)."""
    s = (SCALES[scale] if isinstance(scale, str) else scale).for_task(task)
    cells = []  # (sweep, axis, task overrides, widths)
    if task == "complexity":
        for k in s.ambiguities:
            over = {"ambiguities": k, "ambiguity_depth": k, **({"vocab_size": k + 1} if s.vocab_is_k_plus_1 else {})}
            widths = s.widths + (s.sizes if k == max(s.ambiguities) else ())
            cells.append(("ambiguities", k, over, widths))
    elif task == "generalization":
        k = s.generalization_k
        cells.append(("mixers", None, {"ambiguities": k, "ambiguity_depth": k, "test_gaps": tuple(s.test_gaps)},
                      s.widths))
    else:
        cells.append(("mixers", None, {}, s.widths))
    runs, seen = [], set()
    for sweep, axis, over, widths in cells:
        for width in dict.fromkeys(widths):
            for mixer in mixers or s.mixers:
                d_model = paper_width(mixer, width) if s.paper_rules else width
                if d_model is None:
                    continue
                model = paper_model(mixer, task, d_model) if s.paper_rules else {}
                for seed in s.seeds:
                    task_seed = {"seed": seed} if s.seed_is_task_seed else {}
                    for lr in s.lrs:
                        for warmup in s.warmups:
                            run = Run(mixer, seed, d_model, lr, warmup, {**over, **task_seed}, model, sweep, axis,
                                      s.selects)
                            if run.key not in seen:
                                seen.add(run.key)
                                runs.append(run)
    return runs


def run_splits(s: Scale, run: Run) -> list[str]:
    """The splits a run is evaluated on: it is done when its results hold a row of each."""
    gaps = {**s.data, **run.overrides}.get("test_gaps", ())
    return (["validation"] if s.selects else []) + ["test"] + [gap_split(g) for g in gaps]


def complete_runs(rows: list[dict], s: Scale, runs: list[Run]) -> tuple[set, set]:
    """(keys of the planned runs with a row for every split, keys of those with only some): a write
    cut short (a full disk) can leave a run's first rows without the others."""
    recorded = defaultdict(set)
    for r in rows:
        recorded[r["run"]].add(r["split"])
    complete, partial = set(), set()
    for run in runs:
        if run.key in recorded:
            (complete if recorded[run.key] >= set(run_splits(s, run)) else partial).add(run.key)
    return complete, partial


def run_spec(task: str, s: Scale, run: Run, folder: Path, cpu: bool) -> dict:
    """Everything a worker needs for one run, as plain data (it travels to Ray workers)."""
    data = {**s.data, **run.overrides}
    splits = run_splits(s, run)
    train = {**s.train, **run.model, "config": task, "output_dir": str(folder / "runs" / run.key),
             "mixer": run.mixer, "d_model": run.d_model, "lr": run.lr, "warmup_steps": run.warmup,
             "train_seed": run.seed, "resume": True, "cpu": cpu, "quiet": True, "task_overrides": data}
    row = {"run": run.key, "cell": run.cell, "sweep": run.sweep, "axis": run.axis, "train_seed": run.seed,
           "d_model": run.d_model, "lr": run.lr, "warmup": run.warmup}
    return {"key": run.key, "task": task, "train": train, "splits": splits, "data": data, "row": row}
