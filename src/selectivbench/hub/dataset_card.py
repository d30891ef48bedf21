"""The card of a generated folder: README.md rebuilt from the configs' records (the YAML that
`load_dataset(DIR, config)` reads, and the text from `dataset_card.md`), written only over the card
this package wrote (its sha256 record)."""
from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import datasets
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData

from ..builders import Grammar, Sampler, TaskParams
from ..builders.builder import CITATION
from ..builders.shards import features_of
from ..errors import ParameterError
from ..files import is_ours, read_record as read_owned_record, remove_owned, write_owned
from .dataset_records import BUILD_PREFIX, folder_records

CARD_TEMPLATE = resources.files("selectivbench.hub") / "dataset_card.md"
CARD_MARKER = "<!-- selectivbench-card: written by `selectivbench generate`"

CARD_RECORD = "selectivbench_card.json"  # the sha256 of the card as written (files.py); never uploaded
CARD_WRITER = "selectivbench generate"


def card_record(out: Path, field: str, allowed: str) -> dict[str, list[str]]:
    """The record of the folder's card, after checking that its README.md is the card this package
    wrote, unchanged since (or absent): a card the user edited, or their own README, is never replaced
    (ParameterError naming `field`)."""
    readme = Path(out) / "README.md"
    refusal = f"{field}={str(out)!r} is invalid: allowed {allowed}"
    record = read_owned_record(Path(out) / CARD_RECORD, CARD_WRITER,
                               f"{refusal}, whose {CARD_RECORD} is the card's record") or {}
    if not is_ours(readme, record):
        raise ParameterError(f"{refusal} (its README.md was not written by selectivbench, or was edited since: it "
                             f"is never replaced; move {readme} away)")
    return record


def write_card(out: Path, repo_id: str, leave_out=()) -> Path:
    """Rebuild README.md from the config records the folder holds (atomically), only over the card
    this package wrote (checked again now: the user may have edited it while configs were built)."""
    records = folder_records(out, leave_out)
    path = Path(out) / "README.md"
    record = card_record(out, "out", "a folder whose card `selectivbench generate` wrote")
    prefix = f"{BUILD_PREFIX}file-{os.getpid()}-"  # a later run removes what a killed one left
    if not records:
        if path.exists():
            remove_owned(path, Path(out) / CARD_RECORD, CARD_WRITER, record, prefix)
        return path
    write_owned(path, str(render_card(out, records, repo_id)).encode(), Path(out) / CARD_RECORD, CARD_WRITER, record,
                prefix=prefix)
    return path


def _info(out: Path, record: dict, grammar: Grammar) -> datasets.DatasetInfo:
    p = TaskParams.from_dict(record["params"])
    splits = datasets.SplitDict()
    for name, s in record["splits"].items():
        splits.add(datasets.SplitInfo(name=name, num_bytes=s["num_bytes"], num_examples=s["num_examples"]))
    return datasets.DatasetInfo(
        description=record["description"], features=features_of(p, grammar), splits=splits,
        download_size=sum(f["bytes"] for s in record["splits"].values() for f in s["files"]),
        dataset_size=sum(s["num_bytes"] for s in record["splits"].values()), config_name=record["config"])


def _share_equal_lists(node, seen: dict):
    """Make equal state-name tables one object, so the YAML writes them once (an anchor) and aliases them."""
    if isinstance(node, dict):
        if "names" in node and isinstance(node["names"], (list, dict)):
            key = json.dumps(node["names"], sort_keys=True)
            node["names"] = seen.setdefault(key, node["names"])
        for v in node.values():
            _share_equal_lists(v, seen)
    elif isinstance(node, list):
        for v in node:
            _share_equal_lists(v, seen)


def render_card(out: Path, records: list[dict], repo_id: str) -> DatasetCard:
    grammars = {r["config"]: Grammar.load(Path(out) / r["config"] / "grammar.json") for r in records}
    infos, meta = DatasetInfosDict(), MetadataConfigs()
    for r in records:
        name = r["config"]
        infos[name] = _info(out, r, grammars[name])
        meta[name] = {"data_files": [{"split": s, "path": f"{name}/{s}-*"} for s in r["splits"]],
                      **({"default": True} if name == records[0]["config"] else {})}
    total = sum(s["num_examples"] for r in records for s in r["splits"].values())
    data = DatasetCardData(
        license="apache-2.0", pretty_name="SelectivBench",
        task_categories=["token-classification"], size_categories=[_size_category(total)],
        tags=["synthetic", "formal-languages", "selectivity", "linear-recurrent-models", "state-space-models"],
        annotations_creators=["machine-generated"], source_datasets=["original"],
    )
    meta.to_dataset_card_data(data)
    infos.to_dataset_card_data(data)
    _share_equal_lists(data.dataset_info, {})
    configs = []
    for r in records:
        p = TaskParams.from_dict(r["params"])
        configs.append({"name": r["config"], "p": p, "description": r["description"], "stats": r["stats"],
                        "ceiling": r["ceiling"], "gap_law": p.duration_law.text(), "command": r["command"] or
                        "selectivbench generate", "elements": (f"{p.seq_len_min}-{p.seq_len}" if p.seq_len_min
                                                               else p.seq_len),
                        "sizes": ", ".join(f"{k} {v:,}" for k, v in r["sizes"].items())})
    first = records[0]
    sampler = Sampler(TaskParams.from_dict(first["params"]), grammars[first["config"]])
    split = example_split(first["splits"])
    example = {"config": first["config"], "split": split, "steps": 24, "text": render_sample(sampler, split)}
    return DatasetCard.from_template(data, template_path=str(CARD_TEMPLATE), configs=configs, example=example,
                                     repo_id=repo_id, citation=CITATION, marker=CARD_MARKER)


def example_split(splits) -> str:
    """The split a card's example is drawn from: validation, else the first split the config has."""
    return "validation" if "validation" in splits else next(iter(splits))


def render_sample(sampler, split="validation", steps=24) -> str:
    """Two aligned lines: what the model sees, and the hidden states it must report."""
    g, p = sampler.grammar, sampler.params
    row = sampler.sample(split, 0)
    ids, labels, elem = (row[k][:steps].tolist() for k in ("input_ids", "labels", "element_index"))
    inputs, states = [], []
    for t, (x, y, e) in enumerate(zip(ids, labels, elem)):
        first = t == 0 or elem[t - 1] != e
        inputs.append(g.symbols[x] if first else "_" if x == p.gap_id else f"[{g.symbols[x]}]")
        states.append(g.states[y] if first else "·")
    width = max(len(s) for s in inputs + states) + 1
    return "\n".join((head + "".join(s.ljust(width) for s in cells)).rstrip()
                     for head, cells in (("input: ", inputs), ("label: ", states)))


def _size_category(n: int) -> str:
    for bound, name in [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")]:
        if n < bound:
            return name
    return "10M<n<100M"
