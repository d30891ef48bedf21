"""`selectivbench score`'s protocols (presets) and the door every --mixer value goes through: resolved,
its name for the runs, and check-mixer's causality check before any training."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..builders.config import gap_split
from ..check_mixer import check_mixer
from ..errors import ParameterError
from ..models import MIXERS, PluginError, ResolvedMixer, resolve_mixer
from .scales import Scale, _grammar_rng


@dataclass(frozen=True)
class Preset:
    """A protocol: reproduce's `Scale` (per task through `per_task`) and, per task, the split whose
    test accuracy is the task's (generalization: its longest fixed test gap)."""

    name: str
    scale: Scale
    description: str
    score_split: dict = field(default_factory=dict)  # task -> split; default "test"

    def split_of(self, task: str) -> str:
        return self.score_split.get(task, "test")

    def scale_of(self, task: str) -> Scale:
        return self.scale.for_task(task)


def _data(**task) -> dict:
    """A task's data overrides on the common small grammar (V = 9, the grammar of task seed 1 drawn by
    this project's generator, as the committed small study)."""
    return {**dict(vocab_size=9, seq_len=40, num_train=2000, num_validation=100, num_test=100, seed=1,
                   **_grammar_rng("selectivbench")), **task}


def _toy(**task) -> dict:
    """The smoke preset's data: V = 4, sequences of 6 elements, a handful of samples."""
    return {**dict(vocab_size=4, seq_len=6, num_train=16, num_validation=8, num_test=8, seed=1), **task}


LITE_GAP = 20  # generalization's test gap: 4x the longest training gap (5 steps)
LITE_STEPS = 250
PRESETS: dict[str, Preset] = {
    "lite": Preset(
        "lite",
        Scale(mixers=MIXERS, seeds=(0, 1), widths=(32,), ambiguities=(8,), generalization_k=4, test_gaps=(LITE_GAP,),
              lrs=(3e-3, 1e-2), warmups=(20,), data=_data(),
              train=dict(n_layers=2, batch_size=32, max_steps=LITE_STEPS, eval_every=LITE_STEPS,
                         save_every=LITE_STEPS, dropout=0.0),
              per_task={
                  "gapped": dict(data=_data(ambiguities=8, ambiguity_depth=8, seq_len=20, gap_high=0.5)),
                  "distractor": dict(data=_data(ambiguities=8, ambiguity_depth=8, gap_start=0, gap_prob=0.3)),
                  "generalization": dict(data=_data(seq_len=20, gap_high=0.5)),
              }),
        "V = 9, 2-layer models of width 32, 250 steps of batch 32, dropout 0, lr in {3e-3, 1e-2} chosen on "
        "validation, seeds 0 and 1; complexity k = d = 8 with 40 elements; gapped k = d = 8, 20 elements, gaps "
        "of 1-5 steps, noise 0.2; distractor k = d = 8, 40 elements, a distractor after 30% of the elements; "
        f"generalization k = d = 4, trained as gapped, tested with gaps of {LITE_GAP} steps",
        score_split={"generalization": gap_split(LITE_GAP)}),
    "smoke": Preset(
        "smoke",
        Scale(mixers=MIXERS, seeds=(0, 1), widths=(8,), ambiguities=(2,), generalization_k=2, test_gaps=(6,),
              lrs=(3e-3, 3e-2), warmups=(1,),
              data=_toy(),
              train=dict(n_layers=1, batch_size=16, max_steps=2, eval_every=10**9, save_every=10**9, n_heads=2,
                         d_state=4, dropout=0.0),
              per_task={"gapped": dict(data=_toy(ambiguities=2, ambiguity_depth=2, gap_high=0.3)),
                        "distractor": dict(data=_toy(ambiguities=2, ambiguity_depth=2, gap_start=0, gap_prob=0.5)),
                        "generalization": dict(data=_toy(gap_high=0.3))}),
        "the same machinery at toy size (tests): width 8, one layer, 2 steps",
        score_split={"generalization": gap_split(6)}),
}


def check_preset(name) -> Preset:
    if name not in PRESETS:
        raise ParameterError(f"preset={name!r} is invalid: allowed one of {tuple(PRESETS)}")
    return PRESETS[name]


def resolve(mixer) -> ResolvedMixer:
    """The one door every --mixer value goes through: `selectivbench.models.resolve_mixer` (a built-in
    name, PATH.py:CLASS, MODULE:CLASS, an installed entry point's or a registered name). A plugin is
    then registered in this process under its name, so the checkpoints its runs save load here."""
    try:
        return resolve_mixer(mixer)
    except PluginError as err:
        raise ParameterError(f"mixer={mixer!r} is invalid: allowed one of {MIXERS} or a plugin (PATH.py:CLASS, "
                             f"MODULE:CLASS, an installed or registered name): {err}") from None


def run_mixer(resolved: ResolvedMixer) -> str:
    """The --mixer value the runs train with, wherever they run: a built-in's name, a plugin's origin
    (PATH.py:CLASS with its path absolute, MODULE:CLASS, an entry point's or a registered name)."""
    if resolved.plugin is None:
        return resolved.name
    return resolved.plugin["origin"].partition(":")[2]


def check_causal(mixer: str, resolved: ResolvedMixer) -> None:
    """check-mixer's causality check, before any training: a model that reads later inputs would score
    above the Bayes ceiling."""
    (causal,) = check_mixer(run_mixer(resolved), only=("causal",))
    if causal.passed is not True:
        raise ParameterError(f"mixer={mixer!r} is invalid: allowed a causal mixer; check-mixer's causal check "
                             f"fails: {causal.figure} ({causal.detail}), a model that reads later inputs would "
                             "score above the Bayes ceiling")

