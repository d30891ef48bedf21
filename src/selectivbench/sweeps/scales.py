"""Sweep sizes. `paper` is the paper's grids (docs/reproducing.md: 8 layers, widths 256-1296, seeds 1-4
tying the task and the training seed, lr x warm-up, one Adam pass over 200,000 sequences, cosine to 0
as the paper's code does, though its text says 0.1 lr); `small` is sized for a 2-core CPU; `smoke`
is a handful of tiny runs that exercise the whole machinery (tests)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..builders import TaskParams
from ..models import MIXERS
from .paper import PAPER_MIXERS, PAPER_WIDTHS


@dataclass(frozen=True)
class Scale:
    """One sweep size. `train` holds TrainArgs fields shared by every run; `per_task` replaces fields
    of this scale for one task (the paper's task 3 and 4 grids differ from the others)."""

    mixers: tuple
    seeds: tuple
    widths: tuple  # d_model of every run (complexity: of every k)
    ambiguities: tuple = ()  # complexity: k = d values
    sizes: tuple = ()  # complexity: widths run at the largest k only (the size sweep), besides `widths`
    generalization_k: int = 40
    test_gaps: tuple = ()  # generalization: fixed gaps (steps) of the extra test splits
    lrs: tuple = (1e-3,)
    warmups: tuple = (100,)
    data: dict = field(default_factory=dict)  # task overrides of every run
    train: dict = field(default_factory=dict)
    seed_is_task_seed: bool = False  # the paper's same_seed: the seed draws the grammar too
    vocab_is_k_plus_1: bool = False  # the paper's task 1 ("grammar_scale"): V = k + 1
    paper_rules: bool = False  # heads, d_state and rotary widths by the rules above
    per_task: dict = field(default_factory=dict)

    def for_task(self, task: str) -> "Scale":
        return dataclasses.replace(self, **self.per_task.get(task, {}))

    @property
    def selects(self) -> bool:
        """Several lr / warm-up values: each run is evaluated on validation to choose among them."""
        return len(self.lrs) * len(self.warmups) > 1


def _grammar_rng(name: str) -> dict:
    """Pin a scale's grammar generator where TaskParams offers the choice: `small` was run with this
    project's own, `paper` needs the paper's (its seeds 1-4 then draw the paper's very grammars)."""
    return {"grammar_rng": name} if "grammar_rng" in TaskParams.__dataclass_fields__ else {}


# min_lr_ratio 0: the paper's default scheduler (cosine_schedule_with_warmup) decays to 0; linear_init
# 'torch': its layers are built bare, so PyTorch's own nn.Linear init is all they get
PAPER_TRAIN = dict(n_layers=8, batch_size=64, epochs=1, optimizer="adam", weight_decay=0.0, min_lr_ratio=0.0,
                   dropout=0.2, norm="layernorm", linear_init="torch", eval_every=10**9, save_every=500)
SCALES: dict[str, Scale] = {
    "small": Scale(
        mixers=MIXERS, seeds=(0, 1), widths=(32,), sizes=(16, 32, 64), ambiguities=(2, 4, 6, 8),
        generalization_k=4, test_gaps=(20, 50, 100), lrs=(3e-3,), warmups=(40,),
        data=dict(vocab_size=9, seq_len=40, num_train=2000, num_validation=100, num_test=100, seed=1,
                  **_grammar_rng("selectivbench")),  # the task seed the committed results were run with
        train=dict(n_layers=2, batch_size=32, max_steps=400, eval_every=400, save_every=100)),
    "paper": Scale(
        mixers=PAPER_MIXERS, seeds=(1, 2, 3, 4), widths=PAPER_WIDTHS, ambiguities=(20, 24, 26, 30, 34, 38, 40),
        generalization_k=40, test_gaps=(10, 20, 50, 100), lrs=(5e-4, 1e-3, 2e-3), warmups=(476, 1000),
        data=dict(vocab_size=41, seq_len=200, **_grammar_rng("symseq")), train=PAPER_TRAIN, seed_is_task_seed=True,
        vocab_is_k_plus_1=True, paper_rules=True,
        per_task={"distractor": dict(widths=PAPER_WIDTHS[:-1]),
                  "generalization": dict(widths=(256, 384), lrs=(5e-4, 1e-3))}),
    "smoke": Scale(
        mixers=("gla",), seeds=(1, 2), widths=(8,), sizes=(16,), ambiguities=(2, 3), generalization_k=2,
        test_gaps=(20,), lrs=(3e-3, 1e-2), warmups=(2,),
        data=dict(seq_len=12, num_train=64, num_validation=16, num_test=16),
        train=dict(n_layers=1, batch_size=16, epochs=1, optimizer="adam", min_lr_ratio=0.1, eval_every=10**9,
                   save_every=10**9, n_heads=2, d_state=4),
        seed_is_task_seed=True, vocab_is_k_plus_1=True),
}
