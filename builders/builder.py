"""The Hugging Face `datasets` builder: one BuilderConfig per paper task (SPEC §4).

Every TaskParams field is also a BuilderConfig field (None: the task's default), so any SPEC
parameter can be overridden as a config kwarg and datasets keys the cache by it:

    SelectivBench(config_name="complexity", ambiguities=20, ambiguity_depth=20)

Rows go from the sampler's numpy arrays straight into Arrow tables, one table per shard
(`shards.shard_table`): the ragged per-step arrays become list columns from their offsets, with no
per-row Python objects. `split_cache.build_split` writes one split alone.
"""
from __future__ import annotations

import dataclasses
from functools import cached_property
from typing import Optional

import datasets

from .config import TASK_DESCRIPTIONS, TASKS, TaskParams, gap_split, task_description, task_params
from .grammar import Grammar
from .grammar_draw import make_grammar
from .sampler import Sampler
from .shards import check_size, check_storage, features_of, sampler_for, shard_ranges, shard_table

PAPER_SIZES = {"num_train": 200_000, "num_validation": 1_000, "num_test": 1_000}
_PARAM_FIELDS = [f.name for f in dataclasses.fields(TaskParams)]
# in every named config too (datasets reads the cache folder's version from the config, not VERSION),
# so that a new version never reads an older cache. 1.1.0: test gaps by numpy's rounding (some
# non-default gap durations, e.g. 0.45, gave a test gap one step longer than training's before)
BUILDER_VERSION = datasets.Version("1.1.0")


@dataclasses.dataclass
class SelectivBenchBuilderConfig(datasets.BuilderConfig):
    """BuilderConfig of a SelectivBench task: its `task`, split sizes, then every TaskParams field
    (None: the task's default). datasets keys the cache by all of them."""

    task: str = "complexity"
    num_train: int = PAPER_SIZES["num_train"]
    num_validation: int = PAPER_SIZES["num_validation"]
    num_test: int = PAPER_SIZES["num_test"]
    # TaskParams overrides (see builders/config.py for what each one means)
    vocab_size: Optional[int] = None
    ambiguities: Optional[int] = None
    ambiguity_depth: Optional[int] = None
    density: Optional[float] = None
    start_states: Optional[int] = None
    min_string_length: Optional[int] = None
    seed: Optional[int] = None
    grammar_rng: Optional[str] = None
    seq_len: Optional[int] = None
    seq_len_min: Optional[int] = None
    gap_start: Optional[int] = None
    gap_prob: Optional[float] = None
    gap_law: Optional[str] = None
    gap_duration: Optional[float] = None
    gap_low: Optional[float] = None
    gap_high: Optional[float] = None
    gap_mean: Optional[float] = None
    gap_sigma: Optional[float] = None
    timestep: Optional[float] = None
    gap_content: Optional[str] = None
    noise: Optional[float] = None
    test_gaps: Optional[tuple] = None

    @property
    def params(self) -> TaskParams:
        overrides = {k: getattr(self, k) for k in _PARAM_FIELDS if getattr(self, k) is not None}
        return task_params(self.task, **overrides)

    @property
    def split_sizes(self) -> dict[str, int]:
        for k in PAPER_SIZES:
            check_size(k, getattr(self, k))
        p = self.params
        check_storage(p)
        sizes = {"train": self.num_train, "validation": self.num_validation, "test": self.num_test}
        sizes.update({gap_split(g): self.num_test for g in p.test_gaps})
        return sizes


class SelectivBench(datasets.ArrowBasedBuilder):
    """SelectivBench: artificial-grammar sequences with gaps, noise and distractors."""

    VERSION = BUILDER_VERSION
    BUILDER_CONFIG_CLASS = SelectivBenchBuilderConfig
    BUILDER_CONFIGS = [SelectivBenchBuilderConfig(name=t, task=t, description=TASK_DESCRIPTIONS[t],
                                                  version=BUILDER_VERSION) for t in TASKS]
    DEFAULT_CONFIG_NAME = "complexity"

    def __init__(self, *args, dataset_name: str = "selectivbench", **kwargs):
        # datasets names the cache folder after the builder's module ("builder") unless told
        super().__init__(*args, dataset_name=dataset_name, **kwargs)

    @cached_property
    def grammar(self) -> Grammar:
        return make_grammar(self.config.params)

    @cached_property
    def sampler(self) -> Sampler:
        return sampler_for(self.config.params)

    def _info(self) -> datasets.DatasetInfo:
        self.config.split_sizes  # validates every parameter (and the sizes) before any work
        return datasets.DatasetInfo(
            description=task_description(self.config.task, self.config.params),
            features=features_of(self.config.params, self.grammar),
            homepage="https://arxiv.org/abs/2601.12598",
            citation=CITATION,
            license="apache-2.0",
            config_name=self.config.name,
            version=self.VERSION,
        )

    def _split_generators(self, dl_manager):
        p = self.config.params
        # a split of 0 samples is left out, as in a generated folder: datasets cannot read an empty split
        return [datasets.SplitGenerator(name=split, gen_kwargs={"split": split, "shards": shard_ranges(p, split, n)})
                for split, n in self.config.split_sizes.items() if n > 0]

    def _generate_tables(self, split: str, shards: list[tuple[int, int]]):
        schema = self.info.features.arrow_schema
        for lo, hi in shards:
            yield lo, shard_table(self.sampler, split, lo, hi, schema)


CITATION = """@article{selectivbench2026,
  title   = {Dissecting Linear Recurrent Models: How Different Gating Strategies Drive Selectivity and Generalization},
  journal = {arXiv preprint arXiv:2601.12598},
  year    = {2026},
  url     = {https://arxiv.org/abs/2601.12598}
}"""
