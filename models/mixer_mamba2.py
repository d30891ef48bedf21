"""Mamba2 (SSD): a selective SSM whose decay is one data-dependent scalar per head.

    dt_t = softplus(w_dt x_t + b_dt),  S_t = exp(dt_t A_h) S_{t-1} + B_t (dt_t x_t)^T,  y_t = S_t^T C_t + D_h x_t
    out = W_o RMSNorm(y * silu(z))

As mamba-ssm's `Mamba2(d_model, d_state, d_conv=conv_size, expand, headdim=d_model // n_heads)`,
the paper's call: heads of d_head = d_model / n_heads channels, so d_inner = expand * d_model
holds H = expand * n_heads of them (one decay, dt and D per head; ngroups = 1: B and C shared).
It is gated linear attention with q = C, k = B, v = dt * x: chunked form `chunk_gla` (scalar gate),
recurrent form the d_state x d_head state per head, plus the conv window. State: `MatrixState`
(memory (B, expand * n_heads, d_state, d_head), conv (B, d_inner + 2 d_state, conv_size - 1)).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .chunked_linear_attention import chunk_gla, recurrent_gla_step
from .layers import RMSNorm, ShortConv, inverse_softplus, log_uniform, state_zeros
from .mixer_state import MatrixState, Mixer

TAXONOMY = dict(transition="data-dependent scalar per head", input_gating="yes (dt scales the input)",
                channel_mixing="no", softmax="no", state="constant: (expand x heads) x d_state x d_head + conv window")


class Mamba2Mixer(Mixer):
    no_weight_decay = ("A_log", "dt_bias", "D")  # the decay rates, step sizes and skip (as mamba-ssm)

    def __init__(self, config):
        super().__init__()
        D, Di, N = config.d_model, config.expand * config.d_model, config.d_state
        H = Di // config.head_dim  # mamba-ssm's nheads = d_inner / headdim, headdim = d_model / n_heads
        self.d_inner, self.d_state, self.n_heads = Di, N, H
        self.chunk_size = config.chunk_size
        self.time_step_range, self.A_init_range = (config.time_step_min, config.time_step_max), config.A_init_range
        self.fast = config.use_fast_kernels  # flash-linear-attention on CUDA, when installed
        self.in_proj = nn.Linear(D, 2 * Di + 2 * N + H, bias=False)
        self.conv = ShortConv(Di + 2 * N, config.conv_size)
        self.A_log = nn.Parameter(torch.empty(H))
        self.dt_bias = nn.Parameter(torch.empty(H))
        self.D = nn.Parameter(torch.empty(H))
        self.norm = RMSNorm(Di)
        self.o_proj = nn.Linear(Di, D, bias=False)

    def init_own_weights(self, init):
        H = self.A_log.shape[0]
        init.copy_(self.A_log, torch.log(torch.empty(H).uniform_(*self.A_init_range)))
        init.copy_(self.dt_bias, inverse_softplus(log_uniform(H, *self.time_step_range)))
        init.ones_(self.D)

    def _split(self, u, conv_out):
        Di, N, H = self.d_inner, self.d_state, self.n_heads
        z, xbc, dt = self.in_proj(u).split([Di, Di + 2 * N, H], -1)
        xbc, window = conv_out(xbc)
        x, B, C = F.silu(xbc).split([Di, N, N], -1)
        dt = F.softplus(dt + self.dt_bias)
        return z, x, B, C, dt, dt * -self.A_log.exp(), window

    def _output(self, y, x, z):
        y = y.to(x.dtype) + self.D[:, None] * x.unflatten(-1, (self.n_heads, -1))
        return self.o_proj(self.norm(y.flatten(-2) * F.silu(z)))

    def forward(self, u, state=None):
        z, x, B, C, dt, g, window = self._split(u, lambda t: self.conv(t, None if state is None else state.conv))
        N, H = self.d_state, self.n_heads
        Bsz, T, _ = u.shape
        v = (x.view(Bsz, T, H, -1) * dt[..., None]).transpose(1, 2)
        q, k = (t[:, None].expand(Bsz, H, T, N) for t in (C, B))
        y, memory = chunk_gla(q, k, v, g.transpose(1, 2)[..., None], self.chunk_size,
                              initial_state=None if state is None else state.memory, fast=self.fast)
        seen = (0 if state is None else state.seen) + T
        return self._output(y.transpose(1, 2), x, z), MatrixState(memory, window, seen)

    def step(self, u_t, state):
        z, x, B, C, dt, g, window = self._split(u_t, lambda t: self.conv.step(t, None if state is None else state.conv))
        N, H = self.d_state, self.n_heads
        v = x.view(x.shape[0], H, -1) * dt[..., None]
        S = state_zeros(v, u_t.shape[0], H, N, v.shape[-1]) if state is None else state.memory
        q, k = (t[:, None].expand(-1, H, N) for t in (C, B))
        y, S = recurrent_gla_step(q, k, v, g[..., None], S)
        return self._output(y, x, z), MatrixState(S, window, (0 if state is None else state.seen) + 1)
