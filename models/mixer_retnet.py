"""RetNet retention: linear attention with a fixed per-head decay gamma_h and rotary positions.

    q, k, v = silu(conv(W_q x)), silu(conv(W_k x)), silu(conv(W_v x))    (fla's short convolutions)
    S_t = gamma_h S_{t-1} + k_t v_t^T,   o_t = S_t^T R_t q_t (rotary on q and k),   gamma_h = 1 - 2^(-5-h)
    out = W_o (swish(W_g x) * RMSNorm(o))      (RMSNorm per head, as fla's MultiScaleRetention)

As fla's `MultiScaleRetention` (expand_k=1): keys of d_head = d_model / n_heads per head, values,
norm and output gate expand_v * d_head wide; the rotary embedding acts after the convolutions.
Without `use_short_conv`, q, k, v are the bare projections (fla's branch without conv).
Chunked form: `chunk_gla` with a constant scalar gate. Recurrent form: the K x V state per head.
State: `MatrixState`: memory (B, H, d_head, expand_v * d_head); conv (B, 2 d_model + expand_v
d_model, conv_size - 1), the q, k and v windows concatenated over channels (None without the
conv); `seen` continues the rotary positions.
"""
import math

import torch
import torch.nn as nn

from .chunked_linear_attention import chunk_gla, recurrent_gla_step
from .layers import RMSNorm, conv_qkv, fused_linear, gated_output, qkv_short_convs, rotary, split_heads, state_zeros
from .mixer_state import MatrixState, Mixer

TAXONOMY = dict(transition="fixed scalar decay per head", input_gating="no (output gate only)",
                channel_mixing="no", softmax="no", state="constant: heads x d_head x expand_v d_head + conv window")


class RetNetMixer(Mixer):
    def __init__(self, config):
        super().__init__()
        self.n_heads, self.theta, self.chunk_size = config.n_heads, config.rope_theta, config.chunk_size
        self.fast = config.use_fast_kernels  # flash-linear-attention on CUDA, when installed
        D = config.d_model
        Dv = config.expand_v * D
        self.key_dim, self.value_dim = D, Dv  # all heads (fla's names)
        self.q_proj = nn.Linear(D, D, bias=False)
        self.k_proj = nn.Linear(D, D, bias=False)
        self.v_proj = nn.Linear(D, Dv, bias=False)
        self.g_proj = nn.Linear(D, Dv, bias=False)  # output gate
        self.use_short_conv = config.use_short_conv
        if self.use_short_conv:
            self.q_conv1d, self.k_conv1d, self.v_conv1d = qkv_short_convs((D, D, Dv), config.conv_size)
        self.norm = RMSNorm(Dv // config.n_heads)
        self.o_proj = nn.Linear(Dv, D, bias=False)

    def log_gamma(self, like):
        """log gamma_h in `like`'s precision (float32 at least). Computed, not a buffer: a
        non-persistent buffer is left uninitialised by from_pretrained."""
        dtype = torch.promote_types(like.dtype, torch.float32)
        return torch.log(1 - 2.0 ** (-5.0 - torch.arange(self.n_heads, dtype=dtype, device=like.device)))

    def _project(self, x, start: int, window, step: bool = False):
        D, Dv = self.key_dim, self.value_dim
        qkv, gate = fused_linear(x, (self.q_proj, self.k_proj, self.v_proj), self.g_proj)
        if self.use_short_conv:
            (q, k, v), window = conv_qkv((self.q_conv1d, self.k_conv1d, self.v_conv1d), qkv, window, step)
        else:
            q, k, v = qkv.split([D, D, Dv], -1)
        q, k, v = (split_heads(t, self.n_heads) for t in (q, k, v))
        positions = torch.arange(start, start + x.shape[1], device=x.device)
        q = rotary(q, positions, self.theta) / math.sqrt(q.shape[-1])
        return q, rotary(k, positions, self.theta), v, gate, window

    def forward(self, x, state=None):
        B, T, _ = x.shape
        seen = 0 if state is None else state.seen
        q, k, v, gate, window = self._project(x, seen, None if state is None else state.conv)
        g = self.log_gamma(q).view(1, -1, 1, 1).expand(B, -1, T, 1)
        o, memory = chunk_gla(q, k, v, g, self.chunk_size, initial_state=None if state is None else state.memory,
                              fast=self.fast)
        return gated_output(self.norm, self.o_proj, o.to(x.dtype), gate), MatrixState(memory, window, seen + T)

    def step(self, x_t, state):
        seen = 0 if state is None else state.seen
        q, k, v, gate, window = self._project(x_t[:, None], seen, None if state is None else state.conv, step=True)
        S = state_zeros(q, q.shape[0], self.n_heads, q.shape[-1], v.shape[-1]) if state is None else state.memory
        g = self.log_gamma(q).view(1, -1, 1).expand(q.shape[0], -1, 1)
        o, S = recurrent_gla_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], g, S)
        y = gated_output(self.norm, self.o_proj, o[:, :, None].to(x_t.dtype), gate)
        return y[:, 0], MatrixState(S, window, seen + 1)
