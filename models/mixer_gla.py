"""Gated linear attention (GLA): a data-dependent decay per key channel.

    alpha_t = exp(logsigmoid(W2 W1 x_t + b) / 16),  S_t = diag(alpha_t) S_{t-1} + k_t v_t^T,  o_t = S_t^T q_t
    out = W_o (swish(W_g x) * RMSNorm(o))

Chunked form: `chunk_gla` with a per-channel gate. Recurrent form: the K x V state per head.
"""
import math

import torch.nn as nn
import torch.nn.functional as F

from .chunked_linear_attention import chunk_gla, recurrent_gla_step
from .layers import RMSNorm, merge_heads, split_heads

TAXONOMY = dict(transition="data-dependent diagonal (per key channel)", input_gating="no (output gate only)",
                channel_mixing="no", softmax="no", state="constant: heads x d_key x d_head")
GATE_RANK, GATE_TEMPERATURE = 16, 16.0


class GLAMixer(nn.Module):
    def __init__(self, config):
        super().__init__()
        D, H = config.d_model, config.n_heads
        self.key_dim = D // 2 if (D // 2) % H == 0 else D  # GLA's expand_k = 0.5 where heads allow it
        self.n_heads, self.chunk_size = H, config.chunk_size
        self.fast = config.use_fast_kernels  # flash-linear-attention on CUDA, when installed
        self.qk = nn.Linear(D, 2 * self.key_dim, bias=False)
        self.vg = nn.Linear(D, 2 * D, bias=False)
        self.gate = nn.Sequential(nn.Linear(D, GATE_RANK, bias=False), nn.Linear(GATE_RANK, self.key_dim))
        self.norm = RMSNorm(config.head_dim)
        self.out = nn.Linear(D, D, bias=False)

    def _project(self, x):
        q, k = (split_heads(t, self.n_heads) for t in self.qk(x).chunk(2, -1))
        v, out_gate = self.vg(x).chunk(2, -1)
        log_alpha = split_heads(F.logsigmoid(self.gate(x)) / GATE_TEMPERATURE, self.n_heads)
        return q / math.sqrt(q.shape[-1]), k, split_heads(v, self.n_heads), log_alpha, out_gate

    def _output(self, o, out_gate):
        return self.out(F.silu(out_gate) * merge_heads(self.norm(o)))

    def forward(self, x):
        q, k, v, g, out_gate = self._project(x)
        o, _ = chunk_gla(q, k, v, g, self.chunk_size, fast=self.fast)
        return self._output(o, out_gate)

    def step(self, x_t, state):
        q, k, v, g, out_gate = self._project(x_t[:, None])
        if state is None:
            state = x_t.new_zeros(x_t.shape[0], self.n_heads, q.shape[-1], v.shape[-1])
        o, state = recurrent_gla_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], g[:, :, 0], state)
        return self._output(o[:, :, None], out_gate)[:, 0], state
