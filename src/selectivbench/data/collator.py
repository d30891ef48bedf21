"""From dataset rows to model batches (SPEC §4): token ids padded with the gap id (a zero input
vector), labels padded with -100, element windows for the metric, and the uniform input noise.
Noise is a pure function of (seed, split, sample index, epoch): an evaluation batch gets the same
noise every time, and a resumed run redraws exactly what it would have drawn.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..builders.sampler import split_code
from ..models.configuration_selectivbench import IGNORE_INDEX

MODEL_COLUMNS = ("input_ids", "labels", "element_index", "index")


DROPOUT_STREAM = 1  # a fifth SeedSequence entry: the dropout seeds' stream, apart from the noise's


def dropout_seed_for(seed: int, split: str, index: int, epoch: int) -> int:
    """The 32-bit seed of a sample's dropout masks in an epoch (it is seen once per epoch): a pure
    function of (seed, split, sample index, epoch), whatever process or batch the sample is in."""
    return int(np.random.SeedSequence([seed, split_code(split), int(index), epoch, DROPOUT_STREAM]).generate_state(1)[0])


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
                 "labels": torch.full((B, T), IGNORE_INDEX, dtype=torch.long),
                 "element_index": torch.full((B, T), -1, dtype=torch.long)}
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            for key in batch:
                batch[key][i, :n] = torch.as_tensor(r[key])
        if "index" in rows[0]:
            batch["index"] = torch.tensor([int(r["index"]) for r in rows])
            batch["dropout_seed"] = torch.tensor([dropout_seed_for(self.seed, self.split, r["index"], self.epoch)
                                                  for r in rows])
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
