"""The (gated) delta rule, behind DeltaNet, Gated DeltaNet and Gated DeltaProduct.

Recurrence (per head; S is K x V, beta_t in (0, 1), g_t <= 0 a scalar log gate):

    S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T        o_t = S_t^T q_t

Chunked form (WY / UT transform). Inside a chunk with b_t = g_1 + ... + g_t and S_0 entering,
write S_t = exp(b_t) S_0 + sum_{j<=t} exp(b_t - b_j) k_j u_j^T. The new values u solve a unit
lower-triangular system:

    (I + L) u = beta * v - (beta * exp(b) * k) S_0,   L_tj = beta_t exp(b_t - b_j) k_t.k_j  (j < t)

so u = U - W S_0 with U, W from one triangular solve per chunk, and

    o_t   = exp(b_t) q_t^T S_0 + sum_{j<=t} exp(b_t - b_j) (q_t.k_j) u_j
    S_end = exp(b_C) S_0 + sum_j exp(b_C - b_j) k_j u_j^T
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .layers import at_least_fp32, use_fla


def recurrent_delta_step(q, k, v, beta, g, state):
    """One step. q, k: (B, H, K); v: (B, H, V); beta, g: (B, H); state: (B, H, K, V)."""
    state = g.exp()[..., None, None] * state
    kS = (k[..., None] * state).sum(-2)  # k^T S: (B, H, V)
    state = state + beta[..., None, None] * k[..., None] * (v - kS)[..., None, :]
    return (q[..., None] * state).sum(-2), state


def chunk_delta_rule(q, k, v, beta, g=None, chunk_size: int = 16, initial_state=None, fast: bool = False):
    """q, k: (B, H, T, K); v: (B, H, T, V); beta, g: (B, H, T). Returns o (B, H, T, V), final state.

    With fast=True on CUDA, runs flash-linear-attention's (gated) delta rule kernels instead."""
    if use_fla(q, fast):
        return _fla_delta_rule(q, k, v, beta, g, initial_state)
    dtype = q.dtype
    B, H, T, K = q.shape
    V = v.shape[-1]
    C = chunk_size
    if g is None:
        g = beta.new_zeros(beta.shape)
    q, k, v, beta, g = at_least_fp32(q, k, v, beta, g)
    pad = (-T) % C
    if pad:  # padded steps have beta = 0 and g = 0: they leave the state alone
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        beta, g = F.pad(beta, (0, pad)), F.pad(g, (0, pad))
    N = (T + pad) // C
    q, k, v = (x.reshape(B, H, N, C, x.shape[-1]) for x in (q, k, v))
    beta, g = beta.reshape(B, H, N, C), g.reshape(B, H, N, C)
    b = g.cumsum(-1)
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    decay = (b[..., :, None] - b[..., None, :]).masked_fill(~causal, float("-inf")).exp()  # exp(b_t - b_j)
    qk, kk = (torch.cat([q, k], -2) @ k.transpose(-1, -2)).split(C, -2)  # one batched product for both
    strictly_lower = (beta[..., :, None] * kk * decay).tril(-1)
    rhs = torch.cat([beta[..., None] * v, beta[..., None] * b.exp()[..., None] * k], -1)
    U, W = (unit_lower_inverse(strictly_lower) @ rhs).split([V, K], -1)
    qk = qk * decay
    # the hand-over S_end = d S + k_end^T (U - W S) = (d I - k_end^T W) S + k_end^T U: the two
    # matrices are built for all chunks at once, so the sequential loop is one product per chunk
    k_end = (k * (b[..., -1:] - b).exp()[..., None]).transpose(-1, -2)
    carry = torch.diag_embed(b[..., -1:].exp().expand(*b.shape[:-1], K)) - k_end @ W  # (B, H, N, K, K)
    fresh = k_end @ U  # (B, H, N, K, V)
    state = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.to(q.dtype)
    # unbind, not indexing: the backward of x[:, :, n] writes into a zero tensor the size of x for
    # every n (measured: 20% of the time)
    entering = []
    for carry_n, fresh_n in zip(carry.unbind(2), fresh.unbind(2)):
        entering.append(state)
        state = fresh_n + carry_n @ state
    entering = torch.stack(entering, 2)  # (B, H, N, K, V)
    u = U - W @ entering
    o = (q * b.exp()[..., None]) @ entering + qk @ u
    return o.reshape(B, H, N * C, V)[:, :, :T].to(dtype), state


def unit_lower_inverse(L):
    """(I + L)^-1 for strictly lower-triangular L (..., C, C): blocked inversion, bottom-up. The
    inverse of a diagonal block of size 2s is [[A^-1, 0], [-D^-1 L_DA A^-1, D^-1]] from those of
    its two blocks of size s, for all blocks at once: log2(C) levels of batched products, against
    a batched triangular solve measured 4x slower (forward and backward) on 16 x 16 chunks. C not
    a power of two falls back to the solve."""
    C = L.shape[-1]
    eye = torch.eye(C, dtype=L.dtype, device=L.device)
    if C & (C - 1):
        return torch.linalg.solve_triangular(eye + L, eye.expand_as(L), upper=False, unitriangular=True)
    inv = torch.ones(*L.shape[:-2], C, 1, 1, dtype=L.dtype, device=L.device)  # (..., blocks, s, s)
    s = 1
    while s < C:
        m = C // (2 * s)
        blocks = L.reshape(*L.shape[:-2], m, 2 * s, m, 2 * s).diagonal(dim1=-4, dim2=-2).movedim(-1, -3)
        upper_inv, lower_inv = inv[..., 0::2, :, :], inv[..., 1::2, :, :]
        off = -(lower_inv @ blocks[..., s:, :s] @ upper_inv)
        inv = torch.cat([torch.cat([upper_inv, torch.zeros_like(upper_inv)], -1), torch.cat([off, lower_inv], -1)], -2)
        s *= 2
    return inv[..., 0, :, :]


def _fla_delta_rule(q, k, v, beta, g, initial_state):
    from fla.ops.delta_rule import chunk_delta_rule as fla_delta
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule as fla_gated_delta

    q, k, v = (x.transpose(1, 2) for x in (q, k, v))  # fla wants (B, T, H, .)
    beta = beta.transpose(1, 2).contiguous()
    if g is None:
        o, state = fla_delta(q, k, v, beta, scale=1.0, initial_state=initial_state, output_final_state=True)
    else:
        o, state = fla_gated_delta(q, k, v, g.transpose(1, 2).contiguous(), beta, scale=1.0,
                                   initial_state=initial_state, output_final_state=True)
    return o.transpose(1, 2), state
