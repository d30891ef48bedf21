"""S4D: a diagonal, time-invariant state space model per channel (complex modes, ZOH).

    h_t = exp(dt A) h_{t-1} + (exp(dt A) - 1) / A * x_t,      y_t = 2 Re(C . h_t) + D x_t

Parallel form: the recurrence is a causal convolution with kernel K_l = 2 Re(C (exp(dtA)-1)/A
exp(dtA)^l), applied with FFTs; an entering state h0 adds 2 Re(C B_bar exp(dtA)^(t+1) h0) and
leaves exp(dtA)^T h0 + sum_s exp(dtA)^(T-1-s) x_s (h kept without B_bar). Recurrent form: the
complex state h (d_state / 2 modes). State: `DiagonalState` (memory (B, d_model, d_state / 2) complex).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import at_least_fp32, log_uniform
from .mixer_state import DiagonalState, Mixer

TAXONOMY = dict(transition="fixed (diagonal, time-invariant)", input_gating="no",
                channel_mixing="no (one SSM per channel)", softmax="no", state="constant: d_model x d_state/2 complex")


class S4DMixer(Mixer):
    no_weight_decay = ("log_dt", "log_A_real", "A_imag", "D")  # the modes, their step size and the skip

    def __init__(self, config):
        super().__init__()
        H, N = config.d_model, config.d_state // 2
        self.log_dt = nn.Parameter(torch.empty(H))
        self.log_A_real = nn.Parameter(torch.empty(H, N))
        self.A_imag = nn.Parameter(torch.empty(H, N))
        self.C = nn.Parameter(torch.empty(H, N, 2))
        self.D = nn.Parameter(torch.empty(H))
        self.o_proj = nn.Linear(H, H)
        self.time_step_range = (config.time_step_min, config.time_step_max)

    def init_own_weights(self, init):
        H, N = self.A_imag.shape
        init.copy_(self.log_dt, log_uniform(H, *self.time_step_range).log())
        init.constant_(self.log_A_real, math.log(0.5))
        init.copy_(self.A_imag, math.pi * torch.arange(N, dtype=torch.float32).expand(H, N))  # S4D-Lin
        init.normal_(self.C, std=0.5 ** 0.5)
        init.ones_(self.D)

    def _discrete(self):
        # float32 at least: torch has no bfloat16 complex numbers (a model cast to bf16 or fp16 failed here)
        log_A_real, A_imag, log_dt, C = at_least_fp32(self.log_A_real, self.A_imag, self.log_dt, self.C)
        A = torch.complex(-log_A_real.exp(), A_imag)
        dtA = A * log_dt.exp()[:, None]
        return dtA.exp(), torch.view_as_complex(C) * (dtA.exp() - 1) / A  # decay, C * B_bar

    def forward(self, x, state=None):  # (B, T, H)
        T = x.shape[1]
        decay, CB = self._discrete()
        powers = torch.exp(decay.log()[..., None] * torch.arange(T + 1, device=x.device))  # (H, N, T + 1)
        kernel = 2 * torch.einsum("hn,hnl->hl", CB, powers[..., :T]).real  # (H, T)
        n = 2 * T
        (xf,) = at_least_fp32(x)
        y = torch.fft.irfft(torch.fft.rfft(xf.transpose(1, 2), n) * torch.fft.rfft(kernel.to(xf.dtype), n), n)[..., :T]
        xc = xf.to(decay.dtype)
        h = torch.einsum("bth,hnt->bhn", xc, powers[..., :T].flip(-1))  # sum_s decay^(T-1-s) x_s
        if state is not None:
            h0 = state.memory.to(decay.dtype)
            y = y + 2 * torch.einsum("hn,hnt,bhn->bht", CB, powers[..., 1:], h0).real
            h = h + powers[..., T] * h0
        y = y.transpose(1, 2).to(x.dtype) + self.D * x
        return self.o_proj(F.gelu(y)), DiagonalState(h, seen=(0 if state is None else state.seen) + T)

    def step(self, x_t, state):
        decay, CB = self._discrete()
        h = (torch.zeros(x_t.shape[0], *decay.shape, dtype=decay.dtype, device=x_t.device) if state is None
             else state.memory)
        h = decay * h + x_t[..., None].to(decay.dtype)
        y = 2 * (CB * h).sum(-1).real.to(x_t.dtype) + self.D * x_t
        return self.o_proj(F.gelu(y)), DiagonalState(h, seen=(0 if state is None else state.seen) + 1)
