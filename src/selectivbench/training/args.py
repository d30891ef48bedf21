"""The arguments of `selectivbench train`, checked before any work (no heavy imports: the CLI
builds its parser from this dataclass without loading torch)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..builders.config import TASKS
from ..errors import check_choice, check_int, check_real, fail

OPTIMIZERS = ("adam", "adamw")
# fields of the SelectivBench model alone (`training.loop.model_config`), which a --backbone does not read
SELECTIVBENCH_MODEL_ONLY = ("mixer", "num_householder", "dropout", "norm", "rope_theta", "linear_init")
PRECISIONS = ("no", "fp16", "bf16")
TRACKERS = ("tensorboard", "wandb", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "trackio")


@dataclass
class TrainArgs:
    """Every knob of one training run. `batch_size` is the global batch (split over processes), so
    1 and N processes take the same optimizer steps on the same samples."""

    config: str = "complexity"
    """Task config (one of TASKS)."""
    data_dir: str | None = None
    """A generated folder, a Hub dataset id (ORG/NAME[@revision]) or hf://datasets/...; None: build here."""
    output_dir: str = "runs/model"
    mixer: str = "gla"
    """A built-in mixer, or a plugin: a registered or installed plugin name, PATH.py:CLASS or MODULE:CLASS."""
    backbone: str | None = None
    """Instead of the SelectivBench model: a transformers backbone (MODEL_TYPE, CONFIG.json or a Hub id,
    config only), fed the task's encoding as inputs_embeds; the size flags set its config's fields."""
    backbone_kwargs: str | None = None
    """With --backbone: a JSON object of further fields of its config."""
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    d_state: int = 16
    num_householder: int = 2
    """Householder reflections per token of gated_deltaproduct (the paper's runs: 4)."""
    dropout: float = 0.0
    """The paper uses 0.2 with 8 layers; 0.0 trains the small 2-layer CPU models faster."""
    norm: str = "layernorm"
    """Norm after each residual (post-norm, as the paper's block)."""
    rope_theta: float = 10000.0
    """Base of the rotary positions of transformer and retnet (the paper's transformer runs: 1000)."""
    linear_init: str = "normal"
    """'normal' (std 1/sqrt(fan_in), zero biases) or 'torch' (PyTorch's nn.Linear default: the paper's)."""
    batch_size: int = 64
    """Global batch: samples per forward pass summed over all processes (an optimizer step takes
    `grad_accum` of them)."""
    lr: float = 1e-3
    optimizer: str = "adamw"
    """'adam' (the paper's, with L2 weight decay) or 'adamw' (decoupled); equal when weight_decay is 0."""
    weight_decay: float = 0.0
    """Applied to matrices only: norms, biases and the SSM parameters (A_log, dt_bias...) are not decayed."""
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    """Cosine decay towards min_lr_ratio * lr, the rate after the last step (the last step itself uses the
    rate one step earlier on the curve, as transformers' schedules do); the paper's code: 0, its default
    scheduler has no floor."""
    max_steps: int = 1000
    """Optimizer steps; ignored when `epochs` is set."""
    epochs: int | None = None
    """If set, train this many passes over the training split (the paper: 1 pass = 3,125 steps)."""
    grad_accum: int = 1
    clip: float = 1.0
    """Gradient-norm clipping; 0 turns it off."""
    mixed_precision: str = "no"
    eval_every: int = 200
    eval_samples: int | None = None
    save_every: int = 200
    patience: int = 0
    """Stop after this many evaluations without a better validation accuracy; 0: never."""
    train_seed: int = 0
    resume: bool = False
    report_to: str | None = None
    """A tracker accelerate knows (e.g. tensorboard); metrics.jsonl is always written."""
    cpu: bool = False
    quiet: bool = False
    task_overrides: dict = field(default_factory=dict)


def check_train_args(a: TrainArgs) -> None:
    """One ParameterError naming the first bad field, before any work."""
    from ..models.configuration_selectivbench import LINEAR_INITS, NORMS  # transformers: kept off `--help`

    ints = {"d_model": 1, "n_layers": 1, "n_heads": 1, "d_state": 1, "num_householder": 1, "batch_size": 1,
            "warmup_steps": 0, "max_steps": 1, "grad_accum": 1, "eval_every": 1, "save_every": 1, "patience": 0,
            "train_seed": 0}
    for name, low in ints.items():
        check_int(name, getattr(a, name), low)
    check_int("train_seed", a.train_seed, 0, 2**32 - 1)  # numpy's and torch's seeds
    for name in ("epochs", "eval_samples"):
        if getattr(a, name) is not None:
            check_int(name, getattr(a, name), 1, allowed="an integer >= 1 (or unset)")
    # name: (low, high, low_open, high_open)
    reals = {"lr": (0.0, math.inf, True, False), "weight_decay": (0.0, math.inf, False, False),
             "clip": (0.0, math.inf, False, False), "min_lr_ratio": (0.0, 1.0, False, False),
             "dropout": (0.0, 1.0, False, True), "rope_theta": (0.0, math.inf, True, False)}
    for name, bounds in reals.items():
        check_real(name, getattr(a, name), *bounds)
    choices = {"config": TASKS, "norm": NORMS, "optimizer": OPTIMIZERS,
               "mixed_precision": PRECISIONS, "linear_init": LINEAR_INITS}
    for name, allowed in choices.items():
        check_choice(name, getattr(a, name), allowed)
    if a.d_model % a.n_heads:
        fail("n_heads", a.n_heads, f"a divisor of d_model={a.d_model}")
    if a.backbone_kwargs is not None and a.backbone is None:
        fail("backbone_kwargs", a.backbone_kwargs, "only with --backbone")
    if a.backbone is not None:
        from ..backbone import backbone_config

        for name in SELECTIVBENCH_MODEL_ONLY:  # a backbone would silently ignore them
            if getattr(a, name) != getattr(TrainArgs, name):
                fail(name, getattr(a, name), f"its default {getattr(TrainArgs, name)!r} with --backbone (the "
                     "backbone's own fields go in --backbone-kwargs)")
        backbone_config(a.backbone, a.backbone_kwargs, a.d_model, a.n_layers, a.n_heads, a.d_state)
    else:
        check_mixer_spec(a.mixer, d_model=a.d_model, n_heads=a.n_heads, d_state=a.d_state)
    if a.report_to is not None:
        check_tracker(a.report_to)


def check_tracker(name: str) -> None:
    """A tracker that is not installed is an error here, not accelerate's warning and exit 0."""
    from accelerate import utils

    if name not in TRACKERS:
        fail("report_to", name, f"one of {TRACKERS}")
    available = getattr(utils, f"is_{name}_available", None)
    if available is not None and not available():
        extra = ' (pip install -e ".[tensorboard]")' if name == "tensorboard" else f" (pip install {name})"
        fail("report_to", name, f"an installed tracker: {name} is not installed{extra}")


def check_mixer_spec(spec, **sizes) -> None:
    """A built-in name, or a plugin that imports, is a Mixer and runs a forward pass at these sizes."""
    from ..models import MIXERS

    if spec in MIXERS:
        return
    from ..check_mixer import probe

    probe(spec, {"n_layers": 1, **sizes})
