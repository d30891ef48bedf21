"""Small building blocks shared by the mixers: RMSNorm, rotary embedding, short causal conv."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        (xf,) = at_least_fp32(x)  # half precision is normalised in float32, float64 stays float64
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


def rotary(x, positions, theta: float):
    """Rotate channel pairs (i, i + d/2) of x (..., T, d) by angle position * theta^(-2i/d)."""
    d = x.shape[-1]
    inv_freq = theta ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


def split_heads(x, n_heads: int):
    """(B, T, H * d) -> (B, H, T, d)."""
    B, T, _ = x.shape
    return x.view(B, T, n_heads, -1).transpose(1, 2)


def merge_heads(x):
    """(B, H, T, d) -> (B, T, H * d)."""
    B, H, T, d = x.shape
    return x.transpose(1, 2).reshape(B, T, H * d)


class ShortConv(nn.Module):
    """Depthwise causal convolution over time; the step form keeps the last kernel-1 inputs.
    `bias=False` is fla's ShortConvolution (conv_bias=False); mamba's conv has a bias."""

    def __init__(self, channels: int, kernel: int, bias: bool = True):
        super().__init__()
        self.kernel = kernel
        # own parameters, not an nn.Conv1d: transformers only calls init on modules that hold some
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel))
        self.bias = nn.Parameter(torch.empty(channels)) if bias else None

    def init_own_weights(self, init):
        bound = self.kernel ** -0.5  # PyTorch's conv default; the generic 0.02 std would mute it
        init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            init.uniform_(self.bias, -bound, bound)

    def forward(self, x, window=None):
        """x (B, T, C); window (B, C, kernel - 1) the inputs before x (None: zeros). Returns y
        (B, T, C) and the window after x."""
        K = self.kernel
        y = _CausalConv.apply(x, self.weight[:, 0], self.bias, None if window is None else window.to(x.dtype))
        if x.shape[1] >= K - 1:
            last = x[:, x.shape[1] - (K - 1):]
        else:
            before = x.new_zeros(x.shape[0], K - 1, x.shape[2]) if window is None else window.transpose(1, 2).to(x.dtype)
            last = torch.cat([before, x], 1)[:, -(K - 1):]
        return y, last.transpose(1, 2)

    def step(self, x_t, window):  # x_t (B, C); window (B, C, kernel - 1) of past inputs
        if window is None:
            window = x_t.new_zeros(*x_t.shape, self.kernel - 1)
        full = torch.cat([window.to(x_t.dtype), x_t[..., None]], -1)
        y = (full * self.weight[:, 0]).sum(-1)
        return (y if self.bias is None else y + self.bias), full[..., 1:]


class _CausalConv(torch.autograd.Function):
    """y_t = bias + sum_s w[:, K-1-s] x_{t-s} (s = 0 .. K-1; x_{t-s} from the window when t < s),
    as K shifted multiply-adds in place on a (B, T, C) output (conv1d's (B, C, T) layout measured 3x
    slower for the element-wise gates after it), with the backward written out: autograd through
    a padded copy spent most of the time filling and copying the zero-padded gradients."""

    @staticmethod
    def forward(ctx, x, w, bias, window):
        T, K = x.shape[1], w.shape[1]
        y = x * w[:, K - 1] if bias is None else torch.addcmul(bias, x, w[:, K - 1])
        for s in range(1, K):
            if s < T:
                y[:, s:].addcmul_(x[:, :T - s], w[:, K - 1 - s])
            if window is not None:  # steps t < s read the window's entry K-1+t-s
                m = min(s, T)
                y[:, :m].addcmul_(window[:, :, K - 1 - s:K - 1 - s + m].transpose(1, 2), w[:, K - 1 - s])
        ctx.save_for_backward(x, w, window)
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, g):
        x, w, window = ctx.saved_tensors
        T, K = x.shape[1], w.shape[1]
        g_x = g * w[:, K - 1]
        g_w = torch.empty_like(w)
        g_w[:, K - 1] = (g * x).sum((0, 1))
        g_window = None if window is None else torch.zeros_like(window)
        for s in range(1, K):
            tap = torch.zeros_like(w[:, 0])
            if s < T:
                g_x[:, :T - s].addcmul_(g[:, s:], w[:, K - 1 - s])
                tap += (g[:, s:] * x[:, :T - s]).sum((0, 1))
            if window is not None:
                m = min(s, T)
                seen = window[:, :, K - 1 - s:K - 1 - s + m].transpose(1, 2)
                tap += (g[:, :m] * seen).sum((0, 1))
                g_window[:, :, K - 1 - s:K - 1 - s + m] += (g[:, :m] * w[:, K - 1 - s]).transpose(1, 2)
            g_w[:, K - 1 - s] = tap
        g_bias = g.sum((0, 1)) if ctx.has_bias else None
        return g_x.to(x.dtype), g_w, g_bias, g_window


def qkv_short_convs(channels: tuple, kernel: int) -> tuple:
    """fla's q_conv1d, k_conv1d, v_conv1d: one bias-free causal conv per projection."""
    return tuple(ShortConv(c, kernel, bias=False) for c in channels)


def conv_qkv(convs, tensors, window, step: bool):
    """fla's short-conv front end: each of q, k, v (B, T, C_i) through its own causal conv, then silu.
    `window` holds the three windows concatenated over channels, (B, C_q + C_k + C_v, kernel - 1)
    (None: nothing seen). step=True runs the step form on T = 1. Returns (q, k, v) and the new window."""
    windows = (None,) * 3 if window is None else window.split([c.weight.shape[0] for c in convs], 1)
    outs, new_windows = [], []
    for conv, x, w in zip(convs, tensors, windows):
        if step:
            y, w = conv.step(x[:, 0], w)
            y = y[:, None]
        else:
            y, w = conv(x, w)
        outs.append(F.silu(y))
        new_windows.append(w)
    return outs, torch.cat(new_windows, 1)


def use_fla(x, fast: bool) -> bool:
    """flash-linear-attention's Triton kernels: on CUDA half-precision tensors (mixed precision), when
    installed and asked. float32 runs the reference (fla's delta rule refuses float32). fla-core
    installs without Triton (its kernels' compiler): both must be there."""
    return fast and x.is_cuda and x.dtype in (torch.bfloat16, torch.float16) and _installed("fla", "triton")


def use_mamba_ssm(x, fast: bool) -> bool:
    """mamba-ssm's CUDA selective-scan kernel: on CUDA tensors (any float dtype), when installed and asked."""
    return fast and x.is_cuda and _installed("mamba_ssm")


def _installed(*modules) -> bool:
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in modules)


def at_least_fp32(*tensors):
    """Half-precision inputs are computed in float32 (float64 stays float64)."""
    return [t.to(torch.promote_types(t.dtype, torch.float32)) for t in tensors]


def inverse_softplus(x):
    return x + torch.log(-torch.expm1(-x))


def log_uniform(n: int, low: float, high: float):
    """n numbers whose logarithms are uniform on [log low, log high]."""
    return torch.exp(torch.rand(n) * (torch.log(torch.tensor(high)) - torch.log(torch.tensor(low)))
                     + torch.log(torch.tensor(low)))




def state_zeros(like, *shape):
    """A zero recurrent state of `shape`, in float32 at least (states accumulate over many steps)."""
    return torch.zeros(*shape, dtype=torch.promote_types(like.dtype, torch.float32), device=like.device)
