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
        return causal_conv(x, self.weight, self.bias, window)

    def step(self, x_t, window):  # x_t (B, C); window (B, C, kernel - 1) of past inputs
        return causal_conv_step(x_t, self.weight, self.bias, window)


def causal_conv(x, weight, bias=None, window=None):
    """y_t = bias + sum_s weight[:, 0, K-1-s] x_{t-s} over x (B, T, C) preceded by `window` (B, C, K-1)
    (None: zeros); returns y (B, T, C) and the window after x. Computed as the step form: outside
    autocast, in the precision of input and weight together (a half-precision input with float32
    weights gives float32)."""
    K = weight.shape[-1]
    dtype = torch.promote_types(x.dtype, weight.dtype)
    before = x.new_zeros(x.shape[0], K - 1, x.shape[2]) if window is None else window.transpose(1, 2).to(x.dtype)
    past = torch.cat([before, x], 1)  # (B, K-1+T, C)
    with torch.autocast(x.device.type, enabled=False):
        y = _CausalConv.apply(past.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype))
    # a copy, never a view: a window sliced from `past` would keep the whole sequence's input alive
    return y, past[:, past.shape[1] - (K - 1):].transpose(1, 2).clone(memory_format=torch.contiguous_format)


def _depthwise(x, weight, bias=None, pad: int = 0):
    """Depthwise correlation over time of x (B, L, C) with weight (C, 1, K), padded by `pad` zeros on
    both sides. Through torch's conv2d: x's (B, L, C) layout is channels-last for conv2d's
    (B, C, 1, L) view, so oneDNN (CPU) and cuDNN read and write it without a transpose."""
    y = F.conv2d(x.transpose(1, 2).unsqueeze(2), weight.unsqueeze(2), bias, padding=(0, pad), groups=x.shape[-1])
    return y.squeeze(2).transpose(1, 2)


class _CausalConv(torch.autograd.Function):
    """y = depthwise correlation of past (B, K-1+T, C) with weight (C, 1, K), plus bias. The backward
    is written out because autograd's depthwise weight gradient is the slow part (conv and silu of
    q, k and v, B=8, T=256, 512 channels, forward and backward: 3.6-4.1 ms through autograd, 2.9-3.4
    ms here, 2 threads): the input's gradient is the correlation of the zero-padded g with the
    flipped kernel (one more conv), the weight's is one sum over batch and time per tap."""

    @staticmethod
    def forward(ctx, past, weight, bias):
        ctx.save_for_backward(past, weight)
        ctx.has_bias = bias is not None
        return _depthwise(past, weight, bias)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        past, weight = ctx.saved_tensors
        K, T = weight.shape[-1], g.shape[1]
        with torch.autocast(g.device.type, enabled=False):
            g = g.contiguous()
            g_past = _depthwise(g, weight.flip(-1), pad=K - 1) if ctx.needs_input_grad[0] else None
            g_weight = (torch.stack([(past[:, s:s + T] * g).sum((0, 1)) for s in range(K)], -1)[:, None]
                        if ctx.needs_input_grad[1] else None)
            g_bias = g.sum((0, 1)) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return g_past, g_weight, g_bias


def causal_conv_step(x_t, weight, bias, window):
    """One step of `causal_conv`: x_t (B, C), window (B, C, K-1) or None; returns y_t and the new window."""
    if window is None:
        window = x_t.new_zeros(*x_t.shape, weight.shape[-1] - 1)
    full = torch.cat([window.to(x_t.dtype), x_t[..., None]], -1)
    y = (full * weight[:, 0]).sum(-1)
    return (y if bias is None else y + bias), full[..., 1:]


def qkv_short_convs(channels: tuple, kernel: int) -> tuple:
    """fla's q_conv1d, k_conv1d, v_conv1d: one bias-free causal conv per projection."""
    return tuple(ShortConv(c, kernel, bias=False) for c in channels)


def conv_qkv(convs, qkv, window, step: bool):
    """fla's short-conv front end: q, k and v, given side by side in qkv (B, T, C_q + C_k + C_v),
    each through its own causal conv (run as one conv over all channels), then silu. `window` holds
    the three windows concatenated over channels, (B, C_q + C_k + C_v, kernel - 1) (None: nothing
    seen). step=True runs the step form on T = 1. Returns (q, k, v) and the new window."""
    weight = torch.cat([c.weight for c in convs])
    if step:
        y, window = causal_conv_step(qkv[:, 0], weight, None, window)
        y = y[:, None]
    else:
        y, window = causal_conv(qkv, weight, None, window)
    return F.silu(y).split([c.weight.shape[0] for c in convs], -1), window


def fused_linear(x, *groups):
    """The outputs of several bias-free projections of x from one matrix product, each keeping its
    own fla name and weight (11% faster forward+backward than one product each). A group given as
    a tuple of projections comes back as one tensor, their outputs side by side."""
    groups = [g if isinstance(g, tuple) else (g,) for g in groups]
    assert all(p.bias is None for g in groups for p in g), "fused_linear takes bias-free projections"
    y = F.linear(x, torch.cat([p.weight for g in groups for p in g]))
    return y.split([sum(p.out_features for p in g) for g in groups], -1)


def gated_output(norm, o_proj, o, gate=None):
    """fla's output stage: o (B, H, T, dv) normed per head, heads merged, times silu(gate) when
    there is an output gate (B, T, H dv), then o_proj."""
    o = merge_heads(norm(o))
    return o_proj(o if gate is None else o * F.silu(gate))


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


def _mul32(x, c: int):
    """x * c mod 2**32 for int64 x in [0, 2**32), in two halves so that no product leaves int64."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & 0xFFFFFFFF


def hash32(x):
    """A bijective 32-bit integer hash (Wellons' lowbias32) of int64 tensors holding 32-bit values."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


class SeededDropout(nn.Dropout):
    """nn.Dropout whose mask, while `sample_seeds` (one 32-bit seed per sample) is set, is a pure
    function of (sample seed, this module's `salt`, position, feature): no generator state, so the
    masks do not depend on which process or batch a sample is in, nor on the padded length. Without
    seeds (or in eval mode) it is nn.Dropout."""

    def __init__(self, p: float = 0.5, salt: int = 0):
        super().__init__(p)
        self.salt, self.sample_seeds, self.position = salt, None, 0

    def forward(self, x):
        if not self.training or self.p == 0 or self.sample_seeds is None:
            return super().forward(x)
        steps = x if x.dim() == 3 else x.unsqueeze(1)  # (B, D): one step at self.position (the recurrent form)
        B, T, D = steps.shape
        seeds = self.sample_seeds.to(device=x.device, dtype=torch.long).reshape(B, 1, 1)
        cells = (torch.arange(self.position, self.position + T, device=x.device).view(T, 1) * D
                 + torch.arange(D, device=x.device)) & 0xFFFFFFFF
        bits = hash32(hash32((seeds + self.salt * 0x9E3779B9) & 0xFFFFFFFF) ^ hash32(cells))
        keep = bits >= round(self.p * 2**32)
        return (steps * keep / (1 - self.p)).reshape(x.shape)
