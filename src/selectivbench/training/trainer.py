"""transformers.Trainer with SelectivBench's input noise drawn as `selectivbench train` draws it.

Trainer collates every loader with its one `data_collator` and never tells it the epoch. The
collator draws noise as a function of (seed, split, index, epoch), so without this the evaluation
batches would get the training split's noise of the same indices (not a draw of the validation
split's, as `selectivbench train` and `evaluate` use) and every epoch the same noise.
"""
from __future__ import annotations

import math

from transformers import Trainer, TrainerCallback

from ..data.collator import SelectivBenchCollator


class NoiseEpoch(TrainerCallback):
    """Tells the training collator the epoch at the start of each (after a mid-epoch resume too)."""

    def __init__(self, collator: SelectivBenchCollator):
        self.collator = collator

    def on_epoch_begin(self, args, state, control, **kwargs):
        # state.epoch counts finished epochs, fractions included: 2.0 at the start of the third
        self.collator.epoch = math.floor((state.epoch or 0) + 1e-6)


class SelectivBenchTrainer(Trainer):
    """Trainer whose training batches get the training split's noise of their epoch and whose
    evaluation batches get the validation split's."""

    def __init__(self, *args, train_collator: SelectivBenchCollator, eval_collator: SelectivBenchCollator, **kwargs):
        super().__init__(*args, data_collator=train_collator, **kwargs)
        self.eval_collator = eval_collator
        self.add_callback(NoiseEpoch(train_collator))

    def get_eval_dataloader(self, eval_dataset=None):
        train_collator, self.data_collator = self.data_collator, self.eval_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator
