"""RetNet retention: linear attention with a fixed per-head decay gamma_h and rotary positions.

    S_t = gamma_h S_{t-1} + k_t v_t^T,   o_t = S_t^T q_t,   gamma_h = 1 - 2^(-5-h)
    out = W_o (swish(W_g x) * GroupNorm(o))

Chunked form: `chunk_gla` with a constant scalar gate. Recurrent form: the K x V state per head.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .chunked_linear_attention import chunk_gla, recurrent_gla_step
from .layers import RMSNorm, merge_heads, rotary, split_heads

TAXONOMY = dict(transition="fixed scalar decay per head", input_gating="no (output gate only)",
                channel_mixing="no", softmax="no", state="constant: heads x d_head x d_head")


class RetNetMixer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_heads, self.theta, self.chunk_size = config.n_heads, config.rope_theta, config.chunk_size
        self.fast = config.use_fast_kernels  # flash-linear-attention on CUDA, when installed
        D = config.d_model
        self.qkvg = nn.Linear(D, 4 * D, bias=False)
        self.norm = RMSNorm(config.head_dim)
        self.out = nn.Linear(D, D, bias=False)

    def log_gamma(self, device):
        # computed, not a buffer: a non-persistent buffer is left uninitialised by from_pretrained
        return torch.log(1 - 2.0 ** (-5.0 - torch.arange(self.n_heads, dtype=torch.float32, device=device)))

    def _project(self, x, positions):
        q, k, v, gate = self.qkvg(x).chunk(4, -1)
        q, k, v = (split_heads(t, self.n_heads) for t in (q, k, v))
        q = rotary(q, positions, self.theta) / math.sqrt(q.shape[-1])
        return q, rotary(k, positions, self.theta), v, gate

    def _output(self, o, gate):
        return self.out(F.silu(gate) * merge_heads(self.norm(o)))

    def forward(self, x):
        B, T, _ = x.shape
        q, k, v, gate = self._project(x, torch.arange(T, device=x.device))
        g = self.log_gamma(x.device).view(1, -1, 1, 1).expand(B, -1, T, 1)
        o, _ = chunk_gla(q, k, v, g, self.chunk_size, fast=self.fast)
        return self._output(o, gate)

    def step(self, x_t, state):
        t, S = (0, None) if state is None else (state["t"], state["S"])
        q, k, v, gate = self._project(x_t[:, None], torch.tensor([t], device=x_t.device))
        if S is None:
            S = x_t.new_zeros(q.shape[0], self.n_heads, q.shape[-1], v.shape[-1])
        g = self.log_gamma(x_t.device).view(1, -1, 1).expand(q.shape[0], -1, 1)
        o, S = recurrent_gla_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], g, S)
        return self._output(o[:, :, None], gate)[:, 0], {"t": t + 1, "S": S}
