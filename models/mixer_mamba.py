"""Mamba (S6): a selective, input-dependent diagonal state space model.

    dt_t = softplus(W_dt x_t),  h_t = exp(dt_t A) * h_{t-1} + dt_t B_t x_t,   y_t = C_t . h_t + D x_t
    out = W_o (y * silu(z)), with x = silu(conv(W_x u)), z = W_z u, (B_t, C_t, dt_t) from x_t

The state has d_inner x d_state channels, each with its own data-dependent decay. Training form:
projections, conv and gates of all steps at once, then the blocked selective scan of
`chunked_selective_scan.py`. Recurrent form: the conv window and h, one token at a time.
State: `DiagonalState` (memory h (B, d_inner, d_state), conv (B, d_inner, conv_size - 1)).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .chunked_selective_scan import chunk_selective_scan, recurrent_selective_scan_step
from .layers import ShortConv, inverse_softplus, log_uniform, state_zeros
from .mixer_state import DiagonalState, Mixer

TAXONOMY = dict(transition="data-dependent diagonal", input_gating="yes (dt scales the input)",
                channel_mixing="no", softmax="no", state="constant: d_inner x d_state + conv window")


class MambaMixer(Mixer):
    no_weight_decay = ("A_log", "D")  # the decay rates and the skip (mamba-ssm's _no_weight_decay)

    def __init__(self, config):
        super().__init__()
        D, Di, N = config.d_model, config.expand * config.d_model, config.d_state
        self.dt_rank = math.ceil(D / 16)
        self.in_proj = nn.Linear(D, 2 * Di, bias=False)
        self.conv = ShortConv(Di, config.conv_size)
        self.x_proj = nn.Linear(Di, self.dt_rank + 2 * N, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, Di)
        self.A_log = nn.Parameter(torch.empty(Di, N))
        self.D = nn.Parameter(torch.empty(Di))
        self.o_proj = nn.Linear(Di, D, bias=False)
        self.time_step_range = (config.time_step_min, config.time_step_max)
        self.fast = config.use_fast_kernels  # mamba-ssm's CUDA kernel, when installed

    def init_own_weights(self, init):
        Di, N = self.A_log.shape
        init.copy_(self.A_log, torch.log(torch.arange(1, N + 1, dtype=torch.float32)).expand(Di, N))
        init.ones_(self.D)
        init.uniform_(self.dt_proj.weight, -self.dt_rank ** -0.5, self.dt_rank ** -0.5)
        init.copy_(self.dt_proj.bias, inverse_softplus(log_uniform(Di, *self.time_step_range)))

    def _ssm_inputs(self, x):
        """From the conv output x (..., Di): the step sizes dt and the input/output maps B, C."""
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.A_log.shape[1], self.A_log.shape[1]], -1)
        return F.softplus(self.dt_proj(dt)), B, C

    def forward(self, u, state=None):
        x, z = self.in_proj(u).chunk(2, -1)
        x, window = self.conv(x, None if state is None else state.conv)
        x = F.silu(x)
        dt, B, C = self._ssm_inputs(x)
        y, h = chunk_selective_scan(x, dt, -self.A_log.exp(), B, C,
                                    initial_state=None if state is None else state.memory, fast=self.fast)
        seen = (0 if state is None else state.seen) + u.shape[1]
        return self.o_proj((y + self.D * x) * F.silu(z)), DiagonalState(h, window, seen)

    def step(self, u_t, state):
        x, z = self.in_proj(u_t).chunk(2, -1)
        x, window = self.conv.step(x, None if state is None else state.conv)
        x = F.silu(x)
        dt, B, C = self._ssm_inputs(x)
        h = state_zeros(x, x.shape[0], *self.A_log.shape) if state is None else state.memory
        y, h = recurrent_selective_scan_step(x, dt, -self.A_log.exp(), B, C, h)
        seen = (0 if state is None else state.seen) + 1
        return self.o_proj((y + self.D * x) * F.silu(z)), DiagonalState(h, window, seen)
