"""A dataset repository folder in the Hub layout: parquet per config and split, grammar.json,
and a README.md card whose YAML lists the configs, so `load_dataset(DIR, config)` just works.
"""
from __future__ import annotations

import math
from importlib import resources
import shutil
import tempfile
from pathlib import Path

from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData
from tqdm.auto import tqdm

from .builders import ParameterError, SelectivBench, TASKS
from .builders.builder import CITATION
from .builders.ceiling import bayes_ceiling

CARD_TEMPLATE = resources.files("selectivbench.dataset_cards") / "selectivbench.md"
CEILING_SAMPLES = 1000
MAX_PARQUET_BYTES = 256 << 20


def make_builder(config: str, cache_dir=None, **kwargs) -> SelectivBench:
    if config not in TASKS:
        raise ParameterError(f"config={config!r} is invalid: allowed one of {tuple(TASKS)}")
    return SelectivBench(config_name=config, cache_dir=cache_dir,
                         **{k: v for k, v in kwargs.items() if v is not None})


def grammar_stats(builder: SelectivBench) -> dict:
    g, law = builder.grammar, builder.sampler.law
    return {"num_states": g.num_states, "num_edges": g.num_edges,
            "mean_string_length": law.mean_length(), "topological_entropy": g.topological_entropy()}


def ceilings(builder: SelectivBench) -> list[dict]:
    return [{"split": split, **bayes_ceiling(builder.sampler, split, min(n, CEILING_SAMPLES))}
            for split, n in builder.config.split_sizes.items() if n > 0]


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


def _gap_law_text(p) -> str:
    if p.gap_law == "fixed":
        return f"fixed {p.gap_duration}"
    if p.gap_law == "uniform":
        return f"uniform({p.gap_low}, {p.gap_high})"
    return f"lognormal({p.gap_mean}, {p.gap_sigma})"


def _size_category(n: int) -> str:
    for bound, name in [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M")]:
        if n < bound:
            return name
    return "10M<n<100M"


def write_parquet(ds, folder: Path, split: str) -> list[str]:
    n = max(1, math.ceil(ds.data.nbytes / MAX_PARQUET_BYTES))
    names = []
    for i in range(n):
        name = f"{split}-{i:05d}-of-{n:05d}.parquet"
        ds.shard(n, i, contiguous=True).to_parquet(folder / name)
        names.append(name)
    return names


def generate_folder(configs: list[str], out: str | Path, num_proc: int | None = None,
                    repo_id: str = "selectivbench", command: str = "", **kwargs) -> dict:
    """Generate every config into `out` and write its card. Returns the card's numbers."""
    out = Path(out)
    if out.exists() and any(p.suffix == ".py" for p in out.glob("*")):
        raise ParameterError(f"out={str(out)!r} is invalid: allowed a folder without Python files")
    infos, meta, summary = DatasetInfosDict(), MetadataConfigs(), []
    with tempfile.TemporaryDirectory(prefix="selectivbench-build-") as cache:
        builders = [make_builder(c, cache_dir=cache, **kwargs) for c in configs]  # validates all first
        out.mkdir(parents=True, exist_ok=True)
        for name, b in zip(configs, builders):
            b.download_and_prepare(num_proc=num_proc if num_proc and num_proc > 1 else None)
            folder = out / name
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir()
            files = []
            for split in b.config.split_sizes:
                if b.config.split_sizes[split] > 0:
                    write_parquet(b.as_dataset(split=split), folder, split)
                    files.append({"split": split, "path": f"{name}/{split}-*"})
            b.grammar.save(folder / "grammar.json")
            infos[name] = b.info
            meta[name] = {"data_files": files, **({"default": True} if name == configs[0] else {})}
            summary.append({"name": name, "p": b.config.params, "sizes": b.config.split_sizes,
                            "stats": grammar_stats(b), "ceiling": ceilings(b),
                            "description": b.config.description or name, "builder": b})
    card = render_card(summary, repo_id, command, infos, meta)
    card.save(out / "README.md")
    for s in summary:
        s.pop("builder")
    return {"card": str(out / "README.md"), "configs": summary}


def render_card(summary, repo_id, command, infos, meta) -> DatasetCard:
    total = sum(sum(s["sizes"].values()) for s in summary)
    data = DatasetCardData(
        license="apache-2.0", language=["en"], pretty_name="SelectivBench",
        task_categories=["token-classification"], size_categories=[_size_category(total)],
        tags=["synthetic", "formal-languages", "selectivity", "linear-recurrent-models", "state-space-models"],
        annotations_creators=["machine-generated"], source_datasets=["original"],
    )
    meta.to_dataset_card_data(data)
    infos.to_dataset_card_data(data)
    configs = [{"name": s["name"], "p": s["p"], "description": s["description"], "stats": s["stats"],
                "ceiling": s["ceiling"], "gap_law": _gap_law_text(s["p"]),
                "elements": (f"{s['p'].seq_len_min}-{s['p'].seq_len}" if s["p"].seq_len_min else s["p"].seq_len),
                "sizes": ", ".join(f"{k} {v:,}" for k, v in s["sizes"].items())} for s in summary]
    first = summary[0]
    example = {"config": first["name"], "steps": 24, "text": render_sample(first["builder"].sampler)}
    return DatasetCard.from_template(data, template_path=str(CARD_TEMPLATE), configs=configs,
                                     example=example, repo_id=repo_id, command=command or "selectivbench generate",
                                     citation=CITATION)


def publish_folder(folder: str | Path, repo_id: str, dry_run: bool = False, private: bool = False) -> list[str]:
    """Upload a generated folder as a dataset repository; with dry_run, only list what would go."""
    folder = Path(folder)
    if not (folder / "README.md").exists():
        raise ParameterError(f"folder={str(folder)!r} is invalid: allowed a folder made by `selectivbench generate`")
    if "/" not in repo_id:
        raise ParameterError(f"repo_id={repo_id!r} is invalid: allowed ORG/NAME")
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    if not dry_run:
        from huggingface_hub import HfApi
        api = HfApi()
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset",
                          commit_message="Upload SelectivBench data")
    return files

