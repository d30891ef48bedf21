"""The paper's rules for a sweep's models (docs/reproducing.md): its mixers and widths, heads,
d_state, the rotary mixers' width map, and the per-mixer fields a run of the `paper` scale sets."""
from __future__ import annotations

PAPER_MIXERS = ("mamba2", "mamba", "transformer", "deltanet", "gated_deltanet", "gated_deltaproduct", "gla")
PAPER_WIDTHS = (256, 384, 512, 648, 768, 960, 1024, 1152, 1296)
# The paper's transformer avoids widths whose head size is odd (its rotary embedding needs pairs);
# retnet, the other rotary mixer here, has the same constraint, so it follows the same map.
ROTARY_MIXERS = ("transformer", "retnet")
ROTARY_WIDTH_MAP = {648: 768, 1296: 1280, 960: None}
PAPER_HOUSEHOLDER = 4  # gated_deltaproduct's num_householder in the paper's models/ssm_models.py


def paper_heads(d_model: int, max_head_size: int = 128) -> int:
    """4 heads while d_model / 128 <= 4, else the smallest power of two >= 4 with head size <= 128."""
    heads = 4
    while d_model / heads > max_head_size:
        heads *= 2
    return heads


def paper_d_state(mixer: str, task: str) -> int:
    """128, but 64 for mamba and for every mixer on task 3 (distractor)."""
    return 64 if mixer == "mamba" or task == "distractor" else 128


PAPER_ROPE_BASE = 1000  # the paper's train.py --rope_base default, which no sweep overrides
PAPER_BF16 = ("deltanet", "gated_deltanet", "gated_deltaproduct")  # train.py runs these in bfloat16


def paper_model(mixer: str, task: str, d_model: int) -> dict:
    """The per-mixer fields the paper's rules set for a run: heads, d_state, gated_deltaproduct's
    4 Householder reflections per token (its fla layer is built with num_householder=4), the
    transformer's rotary base, and bfloat16 for the delta rules (the paper casts those whole models
    to bfloat16, fla's kernels wanting half precision; here bf16 autocast, float32 weights)."""
    model = {"n_heads": paper_heads(d_model), "d_state": paper_d_state(mixer, task)}
    if mixer == "gated_deltaproduct":
        model["num_householder"] = PAPER_HOUSEHOLDER
    if mixer == "transformer":
        model["rope_theta"] = PAPER_ROPE_BASE
    if mixer in PAPER_BF16:
        model["mixed_precision"] = "bf16"
    return model


def paper_width(mixer: str, d_model: int) -> int | None:
    """The width a mixer really trains at for a grid width; None: the paper skips it."""
    return ROTARY_WIDTH_MAP.get(d_model, d_model) if mixer in ROTARY_MIXERS else d_model
