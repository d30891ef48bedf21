"""Gated linear attention (GLA): a data-dependent decay per key channel.

    alpha_t = exp(logsigmoid(W2 W1 x_t + b) / 16),  S_t = diag(alpha_t) S_{t-1} + k_t v_t^T,  o_t = S_t^T q_t
    out = W_o (swish(W_g x) * RMSNorm(o))

Chunked form: `chunk_gla` with a per-channel gate. Recurrent form: the K x V state per head.
State: `MatrixState`.
"""
import math

import torch.nn as nn
import torch.nn.functional as F

from .chunked_linear_attention import chunk_gla, recurrent_gla_step
from .layers import RMSNorm, merge_heads, split_heads, state_zeros
from .mixer_state import MatrixState, Mixer

TAXONOMY = dict(transition="data-dependent diagonal (per key channel)", input_gating="no (output gate only)",
                channel_mixing="no", softmax="no", state="constant: heads x d_key x d_head")
GATE_RANK, GATE_TEMPERATURE = 16, 16.0  # GLA's low-rank decay projection and its normaliser


class GLAMixer(Mixer):
    def __init__(self, config):
        super().__init__()
        D, H = config.d_model, config.n_heads
        self.key_dim = D // 2 if (D // 2) % H == 0 else D  # GLA's expand_k = 0.5 where heads allow it
        self.n_heads, self.chunk_size = H, config.chunk_size
        self.fast = config.use_fast_kernels  # flash-linear-attention on CUDA, when installed
        self.qk_proj = nn.Linear(D, 2 * self.key_dim, bias=False)
        self.v_proj = nn.Linear(D, D, bias=False)
        self.g_proj = nn.Linear(D, D, bias=False)  # output gate
        self.gk_proj = nn.Sequential(nn.Linear(D, GATE_RANK, bias=False), nn.Linear(GATE_RANK, self.key_dim))  # decay
        self.norm = RMSNorm(config.head_dim)
        self.o_proj = nn.Linear(D, D, bias=False)

    def _project(self, x):
        q, k = (split_heads(t, self.n_heads) for t in self.qk_proj(x).chunk(2, -1))
        log_alpha = split_heads(F.logsigmoid(self.gk_proj(x)) / GATE_TEMPERATURE, self.n_heads)
        return q / math.sqrt(q.shape[-1]), k, split_heads(self.v_proj(x), self.n_heads), log_alpha

    def _output(self, o, x):
        return self.o_proj(F.silu(self.g_proj(x)) * merge_heads(self.norm(o.to(x.dtype))))

    def forward(self, x, state=None):
        q, k, v, g = self._project(x)
        o, memory = chunk_gla(q, k, v, g, self.chunk_size, initial_state=None if state is None else state.memory,
                              fast=self.fast)
        return self._output(o, x), MatrixState(memory, seen=(0 if state is None else state.seen) + x.shape[1])

    def step(self, x_t, state):
        q, k, v, g = self._project(x_t[:, None])
        S = state_zeros(q, q.shape[0], self.n_heads, q.shape[-1], v.shape[-1]) if state is None else state.memory
        o, S = recurrent_gla_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], g[:, :, 0], S)
        return self._output(o[:, :, None], x_t[:, None])[:, 0], MatrixState(S, seen=(0 if state is None else state.seen) + 1)
