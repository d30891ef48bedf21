"""Bayes ceilings of the paper's own grammars (grammar_rng='symseq', seeds 1-4), as markdown tables.

Usage: python scripts/paper_ceilings.py [--samples 1000]

Table 1: tasks 1-3 (complexity, gapped, distractor) at V = 41, k = d = 40.
Table 2: task 1 over the paper's grid k = d in {20, 24, 26, 30, 34, 38, 40}, V = k + 1.
Each entry is the element accuracy of exact forward filtering (`builders.ceiling.bayes_ceiling`) on
the first `--samples` sequences of the test split (200 elements each).
"""
from __future__ import annotations

import argparse
import time

from selectivbench.builders import Sampler, bayes_ceiling, make_grammar, task_params

SEEDS = (1, 2, 3, 4)
TASKS_AT_40 = ("complexity", "gapped", "distractor")
K_GRID = (20, 24, 26, 30, 34, 38, 40)
DRAW_SECONDS: dict[int, list[float]] = {}  # k -> seconds to draw each seed's grammar


def ceiling(task: str, k: int, seed: int, samples: int, grammars: dict) -> float:
    p = task_params(task, vocab_size=k + 1, ambiguities=k, ambiguity_depth=k, seed=seed, grammar_rng="symseq")
    key = (k, seed)
    if key not in grammars:  # the tasks share the grammar of (k, seed)
        start = time.perf_counter()
        grammars[key] = make_grammar(p)
        DRAW_SECONDS[k] = DRAW_SECONDS.get(k, []) + [time.perf_counter() - start]
    return bayes_ceiling(Sampler(p, grammars[key]), "test", samples)["element_accuracy"]


def table(first_column: str, rows: list[tuple[str, list[float]]]) -> str:
    head = f"| {first_column} | " + " | ".join(f"seed {s}" for s in SEEDS) + " | mean |"
    lines = [head, "|---" * (len(SEEDS) + 2) + "|"]
    for label, values in rows:
        cells = " | ".join(f"{v:.4f}" for v in values)
        lines.append(f"| {label} | {cells} | {sum(values) / len(values):.4f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000, help="test sequences per ceiling (paper: 1000)")
    args = parser.parse_args()
    start, grammars = time.perf_counter(), {}
    tasks = [(f"`{t}`", [ceiling(t, 40, s, args.samples, grammars) for s in SEEDS]) for t in TASKS_AT_40]
    grid = [(f"k = d = {k}, V = {k + 1}", [ceiling("complexity", k, s, args.samples, grammars) for s in SEEDS])
            for k in K_GRID]
    print(f"Bayes ceiling (element accuracy, test split, {args.samples} sequences of 200 elements each)\n")
    print("Tasks 1-3 at V = 41, k = d = 40:\n")
    print(table("task", tasks))
    print("\nTask 1 (complexity) over the paper's grid:\n")
    print(table("grammar", grid))
    draws = ", ".join(f"k={k}: {sum(t) / len(t):.3f}" for k, t in sorted(DRAW_SECONDS.items()))
    print(f"\nSeconds to draw one grammar with grammar_rng='symseq' (mean of the seeds): {draws}")
    print(f"Total: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
