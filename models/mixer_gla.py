"""Gated linear attention (GLA): a data-dependent decay per key channel.

    q, k, v = silu(conv(W_q x)), silu(conv(W_k x)), silu(conv(W_v x))    (fla's short convolutions)
    alpha_t = exp(logsigmoid(W2 W1 x_t + b) / 16),  S_t = diag(alpha_t) S_{t-1} + k_t v_t^T,  o_t = S_t^T q_t
    out = W_o (swish(W_g x) * RMSNorm(o))

As fla's `GatedLinearAttention` with the paper's expand_k=1: keys of d_head = d_model / n_heads
per head (and a decay per key channel), values, norm and output gate expand_v * d_head wide.
Without `use_short_conv`, q, k, v are the bare projections (fla's branch without conv).
Chunked form: `chunk_gla` with a per-channel gate. Recurrent form: the K x V state per head.
State: `MatrixState`: memory (B, H, d_head, expand_v * d_head); conv (B, 2 d_model + expand_v
d_model, conv_size - 1), the q, k and v windows concatenated over channels (None without the conv).
"""
import math

import torch.nn as nn
import torch.nn.functional as F

from .chunked_linear_attention import chunk_gla, recurrent_gla_step
from .layers import RMSNorm, conv_qkv, fused_linear, gated_output, qkv_short_convs, split_heads, state_zeros
from .mixer_state import MatrixState, Mixer

TAXONOMY = dict(transition="data-dependent diagonal (per key channel)", input_gating="no (output gate only)",
                channel_mixing="no", softmax="no", state="constant: heads x d_head x expand_v d_head + conv window")
GATE_RANK, GATE_TEMPERATURE = 16, 16.0  # GLA's low-rank decay projection and its normaliser


class GLAMixer(Mixer):
    def __init__(self, config):
        super().__init__()
        D, H = config.d_model, config.n_heads
        Dv = config.expand_v * D
        self.n_heads, self.chunk_size = H, config.chunk_size
        self.fast = config.use_fast_kernels  # flash-linear-attention on CUDA, when installed
        self.q_proj = nn.Linear(D, D, bias=False)
        self.k_proj = nn.Linear(D, D, bias=False)
        self.v_proj = nn.Linear(D, Dv, bias=False)
        self.g_proj = nn.Linear(D, Dv, bias=False)  # output gate
        self.gk_proj = nn.Sequential(nn.Linear(D, GATE_RANK, bias=False), nn.Linear(GATE_RANK, D))  # decay
        self.use_short_conv = config.use_short_conv
        if self.use_short_conv:
            self.q_conv1d, self.k_conv1d, self.v_conv1d = qkv_short_convs((D, D, Dv), config.conv_size)
        self.norm = RMSNorm(Dv // H)
        self.o_proj = nn.Linear(Dv, D, bias=False)

    def _project(self, x, window, step: bool = False):
        qkv, gate, gk = fused_linear(x, (self.q_proj, self.k_proj, self.v_proj), self.g_proj, self.gk_proj[0])
        D = self.q_proj.out_features
        if self.use_short_conv:
            (q, k, v), window = conv_qkv((self.q_conv1d, self.k_conv1d, self.v_conv1d), qkv, window, step)
        else:
            q, k, v = qkv.split([D, D, qkv.shape[-1] - 2 * D], -1)
        q, k, v = (split_heads(t, self.n_heads) for t in (q, k, v))
        log_alpha = split_heads(F.logsigmoid(self.gk_proj[1](gk)) / GATE_TEMPERATURE, self.n_heads)
        return q / math.sqrt(q.shape[-1]), k, v, log_alpha, gate, window

    def forward(self, x, state=None):
        q, k, v, g, gate, window = self._project(x, None if state is None else state.conv)
        o, memory = chunk_gla(q, k, v, g, self.chunk_size, initial_state=None if state is None else state.memory,
                              fast=self.fast)
        seen = (0 if state is None else state.seen) + x.shape[1]
        return gated_output(self.norm, self.o_proj, o.to(x.dtype), gate), MatrixState(memory, window, seen)

    def step(self, x_t, state):
        q, k, v, g, gate, window = self._project(x_t[:, None], None if state is None else state.conv, step=True)
        S = state_zeros(q, q.shape[0], self.n_heads, q.shape[-1], v.shape[-1]) if state is None else state.memory
        o, S = recurrent_gla_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], g[:, :, 0], S)
        seen = (0 if state is None else state.seen) + 1
        y = gated_output(self.norm, self.o_proj, o[:, :, None].to(x_t.dtype), gate)
        return y[:, 0], MatrixState(S, window, seen)
