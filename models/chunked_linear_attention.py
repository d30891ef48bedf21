"""Gated linear attention, the recurrence behind RetNet, GLA and Mamba2 (SSD).

Recurrence (per head; S is a K x V matrix, g_t <= 0 a log gate, scalar or per key channel):

    S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T          o_t = S_t^T q_t

Chunked form: split time into chunks of C steps and let b_t = g_1 + ... + g_t inside a chunk.
Then, with S_0 the state entering the chunk,

    o_t   = (q_t * exp(b_t))^T S_0  +  sum_{s<=t} [sum_c q_tc k_sc exp(b_tc - b_sc)] v_s
    S_end = diag(exp(b_C)) S_0      +  sum_s (k_s * exp(b_C - b_s)) v_s^T

Every exponent is <= 0, so nothing overflows whatever the gate range. With a per-channel gate
the bracket costs C x C x K exponentials per chunk; when every chunk decays by less than e^-60 in
every channel (GLA's gates: about e^-0.05 a step), it factorises instead,
exp(b_tc - b_sc) = exp(b_tc) exp(-b_sc), and becomes one matrix product (q * exp(b)) (k * exp(-b))^T
whose factors stay inside float32's range (4x faster at T=1024 here). Only the C-step state
hand-over is sequential; everything else is batched over chunks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .layers import at_least_fp32, use_fla

FACTORISE_ABOVE = -60.0  # smallest chunk log-decay for exp(b) exp(-b): e^60 is far from float32's e^88


def recurrent_gla_step(q, k, v, g, state):
    """One step. q, k, g: (B, H, K) (g may be (B, H, 1)); v: (B, H, V); state: (B, H, K, V)."""
    state = g.exp()[..., None] * state + k[..., None] * v[..., None, :]
    return (q[..., None] * state).sum(-2), state


def chunk_gla(q, k, v, g, chunk_size: int = 16, initial_state=None, fast: bool = False):
    """q, k: (B, H, T, K); v: (B, H, T, V); g: (B, H, T, K) or (B, H, T, 1), log gates <= 0.

    Returns o (B, H, T, V) and the final state (B, H, K, V). With fast=True on CUDA, runs
    flash-linear-attention's chunk_gla / chunk_simple_gla kernels instead (same math).
    """
    if use_fla(q, fast):
        return _fla_gla(q, k, v, g, initial_state)
    dtype = q.dtype
    q, k, v, g = at_least_fp32(q, k, v, g)
    B, H, T, K = q.shape
    V = v.shape[-1]
    C = chunk_size
    pad = (-T) % C
    if pad:
        q, k, v, g = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v, g))
    N = (T + pad) // C
    q, k, v, g = (x.reshape(B, H, N, C, x.shape[-1]) for x in (q, k, v, g))
    b = g.cumsum(-2)
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    q_decayed = q * b.exp()  # q_t * exp(b_t): reads the entering state, and the factorised product
    if g.shape[-1] == 1:  # scalar gate: the decay is a C x C matrix per chunk
        diff = (b[..., :, None, 0] - b[..., None, :, 0]).masked_fill(~causal, float("-inf"))
        scores = (q @ k.transpose(-1, -2)) * diff.exp()
    elif b[..., -1, :].min() > FACTORISE_ABOVE:  # per-channel gate, mild decays: one product
        scores = (q_decayed @ (k * (-b).exp()).transpose(-1, -2)).masked_fill(~causal, 0.0)
    else:  # per-channel gate, strong decays: the decay of every pair, per key channel
        diff = (b[..., :, None, :] - b[..., None, :, :]).masked_fill(~causal[..., None], float("-inf"))
        scores = (q[..., :, None, :] * k[..., None, :, :] * diff.exp()).sum(-1)
    o = scores @ v
    b_end = b[..., -1:, :]
    chunk_kv = (k * (b_end - b).exp()).transpose(-1, -2) @ v  # (B, H, N, K, V)
    decay_end = b_end.squeeze(-2).exp()[..., None]  # (B, H, N, K or 1, 1)
    state = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.to(q.dtype)
    entering = []
    for decay_n, kv_n in zip(decay_end.unbind(2), chunk_kv.unbind(2)):  # unbind: see chunk_delta_rule
        entering.append(state)
        state = decay_n * state + kv_n
    o = o + q_decayed @ torch.stack(entering, 2)
    return o.reshape(B, H, N * C, V)[:, :, :T].to(dtype), state


def _fla_gla(q, k, v, g, initial_state):
    from fla.ops.gla import chunk_gla as fla_chunk_gla
    from fla.ops.simple_gla import chunk_simple_gla

    q, k, v, g = (x.transpose(1, 2) for x in (q, k, v, g))  # fla wants (B, T, H, .)
    if g.shape[-1] == 1:
        o, state = chunk_simple_gla(q, k, v, g=g[..., 0].contiguous(), scale=1.0, initial_state=initial_state,
                                    output_final_state=True)
    else:
        o, state = fla_chunk_gla(q, k, v, g, scale=1.0, initial_state=initial_state, output_final_state=True)
    return o.transpose(1, 2), state
