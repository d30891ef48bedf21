"""The paper's taxonomy of token mixers: one row per mixer, read from each mixer file's TAXONOMY.

Plugins (registered, resolved or installed: `plugins.py`) are listed after the built-ins, from their
module's `TAXONOMY` dict (the same keys); a plugin without one shows "not given".
"""
import importlib
import sys

from .configuration_selectivbench import MIXERS
from .plugins import plugin_class, registered_plugins

COLUMNS = ("transition", "input_gating", "channel_mixing", "softmax", "state")


def plugin_taxonomy(cls) -> dict:
    given = getattr(sys.modules.get(cls.__module__), "TAXONOMY", None)
    given = given if isinstance(given, dict) else {}
    return {c: str(given.get(c, "not given")) for c in COLUMNS}


def taxonomy_rows() -> list[dict]:
    rows = [{"mixer": m, **importlib.import_module(f"{__package__}.mixer_{m}").TAXONOMY} for m in MIXERS]
    return rows + [{"mixer": name, **plugin_taxonomy(cls)} for name, cls in sorted(registered_plugins().items())]


def mixer_taxonomy_row(config) -> dict:
    """The taxonomy row of a config's mixer (a plugin's: known in this process, `plugin_class`)."""
    if config.mixer in MIXERS:
        return next(row for row in taxonomy_rows() if row["mixer"] == config.mixer)
    plugin = getattr(config, "mixer_plugin", None)
    if plugin is None:  # a transformers backbone (selectivbench.backbone): not in the taxonomy
        return {"mixer": config.mixer, **{c: "see the transformers model" for c in COLUMNS}}
    return {"mixer": config.mixer, **plugin_taxonomy(plugin_class(plugin))}


def taxonomy_markdown() -> str:
    head = ["mixer", "transition", "input gating", "in-state channel mixing", "softmax", "state size"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in taxonomy_rows():
        lines.append("| " + " | ".join([f"`{row['mixer']}`"] + [row[c] for c in COLUMNS]) + " |")
    return "\n".join(lines)
