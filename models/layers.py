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
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


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


class KVCache:
    """Keys and values of the past steps, (B, H, t, d), in a buffer that doubles when full, so a
    stream of T steps copies O(T) elements instead of O(T^2)."""

    def __init__(self, *tensors):
        self.length = tensors[0].shape[2]
        self.buffers = [t.clone() for t in tensors]

    def append(self, *tensors):
        n = tensors[0].shape[2]
        if self.length + n > self.buffers[0].shape[2]:
            cap = max(2 * self.buffers[0].shape[2], self.length + n)
            self.buffers = [torch.cat([b[:, :, : self.length], b.new_empty(*b.shape[:2], cap - self.length,
                                                                              *b.shape[3:])], 2)
                            for b in self.buffers]
        for b, t in zip(self.buffers, tensors):
            b[:, :, self.length:self.length + n] = t
        self.length += n
        return [b[:, :, : self.length] for b in self.buffers]

    def tensors(self):
        return [b[:, :, : self.length] for b in self.buffers]


class ShortConv(nn.Module):
    """Depthwise causal convolution over time; the step form keeps the last kernel-1 inputs."""

    def __init__(self, channels: int, kernel: int):
        super().__init__()
        self.kernel = kernel
        # own parameters, not an nn.Conv1d: transformers only calls init on modules that hold some
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel))
        self.bias = nn.Parameter(torch.empty(channels))

    def init_own_weights(self, init):
        bound = self.kernel ** -0.5  # PyTorch's conv default; the generic 0.02 std would mute it
        init.uniform_(self.weight, -bound, bound)
        init.uniform_(self.bias, -bound, bound)

    def forward(self, x):  # (B, T, C)
        # shifted multiply-adds rather than conv1d: the output stays (B, T, C)-contiguous, which the
        # element-wise gates after it need to run at full speed (measured 3x slower on conv1d's layout)
        T, w = x.shape[1], self.weight[:, 0]
        past = F.pad(x, (0, 0, self.kernel - 1, 0))
        y = torch.addcmul(self.bias, past[:, :T], w[:, 0])
        for k in range(1, self.kernel):
            y = torch.addcmul(y, past[:, k:k + T], w[:, k])
        return y

    def step(self, x_t, window):  # x_t (B, C); window (B, C, kernel - 1) of past inputs
        if window is None:
            window = x_t.new_zeros(*x_t.shape, self.kernel - 1)
        full = torch.cat([window, x_t[..., None]], -1)
        return (full * self.weight[:, 0]).sum(-1) + self.bias, full[..., 1:]


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
    return torch.exp(torch.rand(n) * (torch.log(torch.tensor(high)) - torch.log(torch.tensor(low)))
                     + torch.log(torch.tensor(low)))


