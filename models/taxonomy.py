"""The paper's taxonomy of token mixers: one row per mixer, read from each mixer file's TAXONOMY."""
import importlib

from .configuration_selectivbench import MIXERS

COLUMNS = ("transition", "input_gating", "channel_mixing", "softmax", "state")


def taxonomy_rows() -> list[dict]:
    return [{"mixer": m, **importlib.import_module(f"{__package__}.mixer_{m}").TAXONOMY} for m in MIXERS]


def taxonomy_markdown() -> str:
    head = ["mixer", "transition", "input gating", "in-state channel mixing", "softmax", "state size"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in taxonomy_rows():
        lines.append("| " + " | ".join([f"`{row['mixer']}`"] + [row[c] for c in COLUMNS]) + " |")
    return "\n".join(lines)
