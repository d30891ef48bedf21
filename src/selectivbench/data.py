"""From a task config to model batches: load (or build) the dataset, then collate.

The collator builds the model inputs of SPEC §4: token ids padded with the gap id (a zero input
vector), labels padded with -100, element windows for the metric, and the uniform input noise.
Noise is a pure function of (seed, split, sample index, epoch): an evaluation batch gets the same
noise every time, and a resumed run redraws exactly what it would have drawn.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import DatasetDict, load_dataset

from .builders import Grammar, TaskParams
from .builders.sampler import split_code

MODEL_COLUMNS = ("input_ids", "labels", "element_index", "index")


@dataclass
class Task:
    """A loaded task: its splits, its parameters and its grammar."""

    name: str
    data: DatasetDict
    params: TaskParams
    grammar: Grammar

    @property
    def num_labels(self) -> int:
        return self.grammar.num_states


def load_task(config: str, data_dir: str | None = None, cache_dir: str | None = None, num_proc=None,
              **overrides) -> Task:
    """A config of a generated folder (`selectivbench generate`), or built here with overrides."""
    if data_dir is not None:
        if overrides:
            raise ValueError(f"overrides {sorted(overrides)} are invalid with data_dir: "
                             "allowed only when the data is built here")
        grammar = Grammar.load(Path(data_dir) / config / "grammar.json")
        params = TaskParams.from_dict({**grammar.params, "test_gaps": tuple(grammar.params.get("test_gaps", ()))})
        data = load_dataset(str(data_dir), config, cache_dir=cache_dir)
        return Task(config, data, params, grammar)
    from .hub_dataset import make_builder

    builder = make_builder(config, cache_dir=cache_dir, **overrides)
    builder.download_and_prepare(num_proc=num_proc)
    return Task(config, builder.as_dataset(), builder.config.params, builder.grammar)


def noise_for(seed: int, split: str, index: int, epoch: int, shape, amplitude: float) -> torch.Tensor:
    entropy = np.random.SeedSequence([seed, split_code(split), int(index), epoch]).generate_state(2)
    gen = torch.Generator().manual_seed(int(entropy[0]) << 32 | int(entropy[1]))
    return torch.rand(shape, generator=gen) * amplitude


@dataclass
class SelectivBenchCollator:
    """Pads a list of dataset rows into a batch; adds `input_noise` when noise > 0."""

    vocab_size: int
    noise: float = 0.0
    seed: int = 0
    split: str = "train"
    epoch: int = 0

    def __call__(self, rows: list[dict]) -> dict:
        B, T = len(rows), max(len(r["input_ids"]) for r in rows)
        batch = {"input_ids": torch.full((B, T), self.vocab_size, dtype=torch.long),
                 "labels": torch.full((B, T), -100, dtype=torch.long),
                 "element_index": torch.full((B, T), -1, dtype=torch.long)}
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            for key in batch:
                batch[key][i, :n] = torch.as_tensor(r[key])
        if "index" in rows[0]:
            batch["index"] = torch.tensor([int(r["index"]) for r in rows])
        if self.noise > 0:
            noise = torch.zeros(B, T, self.vocab_size)
            for i, r in enumerate(rows):
                n = len(r["input_ids"])
                noise[i, :n] = noise_for(self.seed, self.split, r.get("index", i), self.epoch,
                                         (n, self.vocab_size), self.noise)
            batch["input_noise"] = noise
        return batch


def model_view(dataset):
    """Only the columns a model batch is made of."""
    return dataset.select_columns([c for c in MODEL_COLUMNS if c in dataset.column_names])

