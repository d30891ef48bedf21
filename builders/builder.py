"""The Hugging Face `datasets` builder: one BuilderConfig per paper task (SPEC §4).

Every TaskParams field is also a BuilderConfig field (None: the task's default), so any SPEC
parameter can be overridden as a config kwarg and datasets keys the cache by it:

    SelectivBench(config_name="complexity", ambiguities=20, ambiguity_depth=20)
"""
from __future__ import annotations

import dataclasses
from functools import cached_property
from typing import Optional

import datasets
import numpy as np

from .config import TASK_DESCRIPTIONS, TASKS, ParameterError, TaskParams, task_params
from .grammar import Grammar, make_grammar
from .sampler import Sampler

SHARD_SAMPLES = 2000  # samples per generation shard: num_proc splits the shards, never the samples
PAPER_SIZES = {"num_train": 200_000, "num_validation": 1_000, "num_test": 1_000}
_PARAM_FIELDS = [f.name for f in dataclasses.fields(TaskParams)]


def _config_fields():
    fields = [("task", str, dataclasses.field(default="complexity")),
              *[(k, int, dataclasses.field(default=v)) for k, v in PAPER_SIZES.items()]]
    fields += [(name, Optional[object], dataclasses.field(default=None)) for name in _PARAM_FIELDS]
    return fields


def _params(self) -> TaskParams:
    overrides = {k: getattr(self, k) for k in _PARAM_FIELDS if getattr(self, k) is not None}
    return task_params(self.task, **overrides)


def _split_sizes(self) -> dict[str, int]:
    for k in PAPER_SIZES:
        v = getattr(self, k)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ParameterError(f"{k}={v!r} is invalid: allowed an integer in [0, inf]")
    p = self.params
    sizes = {"train": self.num_train, "validation": self.num_validation, "test": self.num_test}
    sizes.update({f"test_gap{g}": self.num_test for g in p.test_gaps})
    return sizes


SelectivBenchConfig = dataclasses.make_dataclass(
    "SelectivBenchConfig", _config_fields(), bases=(datasets.BuilderConfig,),
    namespace={"params": property(_params), "split_sizes": property(_split_sizes),
               "__doc__": "BuilderConfig of a SelectivBench task: `task`, split sizes, then every TaskParams field."},
)
SelectivBenchConfig.__module__ = __name__


class SelectivBench(datasets.GeneratorBasedBuilder):
    """SelectivBench: artificial-grammar sequences with gaps, noise and distractors."""

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = SelectivBenchConfig
    BUILDER_CONFIGS = [SelectivBenchConfig(name=t, task=t, description=TASK_DESCRIPTIONS[t]) for t in TASKS]
    DEFAULT_CONFIG_NAME = "complexity"
    DEFAULT_WRITER_BATCH_SIZE = 500

    @cached_property
    def grammar(self) -> Grammar:
        return make_grammar(self.config.params)

    @cached_property
    def sampler(self) -> Sampler:
        return Sampler(self.config.params, self.grammar)

    def _info(self) -> datasets.DatasetInfo:
        self.config.split_sizes  # validates every parameter (and the sizes) before any work
        return datasets.DatasetInfo(
            description=TASK_DESCRIPTIONS.get(self.config.task, ""),
            features=features_of(self.grammar),
            homepage="https://arxiv.org/abs/2601.12598",
            citation=CITATION,
            license="apache-2.0",
            config_name=self.config.name,
            version=self.VERSION,
        )

    def _split_generators(self, dl_manager):
        return [datasets.SplitGenerator(name=split, gen_kwargs={"split": split, "shards": shard_ranges(n)})
                for split, n in self.config.split_sizes.items()]

    def _generate_examples(self, split: str, shards: list[tuple[int, int]]):
        for lo, hi in shards:
            batch = self.sampler.generate(split, np.arange(lo, hi))
            for row, n in zip(batch.rows(), batch.num_elements.tolist()):
                yield row["index"], {"index": row["index"], "input_ids": row["input_ids"].tolist(),
                                      "labels": row["labels"].tolist(),
                                      "element_index": row["element_index"].tolist(), "num_elements": n}


def shard_ranges(n: int) -> list[tuple[int, int]]:
    return [(lo, min(lo + SHARD_SAMPLES, n)) for lo in range(0, n, SHARD_SAMPLES)]


def features_of(grammar: Grammar) -> datasets.Features:
    return datasets.Features({
        "index": datasets.Value("int64"),
        "input_ids": datasets.List(datasets.Value("int16")),
        "labels": datasets.List(datasets.ClassLabel(names=grammar.states)),
        "element_index": datasets.List(datasets.Value("int16")),
        "num_elements": datasets.Value("int32"),
    })


CITATION = """@article{selectivbench2026,
  title   = {Dissecting Linear Recurrent Models: How Different Gating Strategies Drive Selectivity and Generalization},
  journal = {arXiv preprint arXiv:2601.12598},
  year    = {2026},
  url     = {https://arxiv.org/abs/2601.12598}
}"""
