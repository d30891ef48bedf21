"""Gated DeltaNet: the delta rule with a data-dependent scalar decay and an output gate.

    g_t = -exp(A_log) softplus(w_a x_t + b),   S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T
    o_t = S_t^T q_t,   out = W_o (RMSNorm(o) * silu(W_g x))

As fla's `GatedDeltaNet` (use_gate=True, head_dim = d_model / n_heads): q, k, v through the short
convolutions and silu, values and output gate expand_v * d_head wide per head.
Chunked and recurrent forms, and the state layout: those of `mixer_deltanet` with the gate switched on.
"""
from .mixer_deltanet import DeltaNetMixer

TAXONOMY = dict(transition="data-dependent scalar x (identity plus low rank)",
                input_gating="yes (beta writes the input)", channel_mixing="yes (k k^T mixes state rows)",
                softmax="no", state="constant: heads x d_head x expand_v d_head + conv window")


class GatedDeltaNetMixer(DeltaNetMixer):
    gated = True
    no_weight_decay = ("A_log", "dt_bias")  # the decay rates and their step sizes (fla's _no_weight_decay)
