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
    kk = k @ k.transpose(-1, -2)
    eye = torch.eye(C, dtype=q.dtype, device=q.device)
    system = eye + (beta[..., :, None] * kk * decay).tril(-1)
    rhs = torch.cat([beta[..., None] * v, beta[..., None] * b.exp()[..., None] * k], -1)
    sol = torch.linalg.solve_triangular(system, rhs, upper=False, unitriangular=True)
    U, W = sol[..., :V], sol[..., V:]
    qk = (q @ k.transpose(-1, -2)) * decay
    k_to_end = k * (b[..., -1:] - b).exp()[..., None]
    decay_end = b[..., -1].exp()[..., None, None]
    state = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.to(q.dtype)
    q_decayed = q * b.exp()[..., None]
    # unbind, not indexing: the backward of x[:, :, n] writes into a zero tensor the size of x for
    # every n (measured: 20% of the time of a training step)
    outs = []
    for U_n, W_n, q_n, qk_n, decay_n, k_n in zip(U.unbind(2), W.unbind(2), q_decayed.unbind(2), qk.unbind(2),
                                                 decay_end.unbind(2), k_to_end.transpose(-1, -2).unbind(2)):
        u = U_n - W_n @ state
        outs.append(q_n @ state + qk_n @ u)
        state = decay_n * state + k_n @ u
    return torch.stack(outs, 2).reshape(B, H, N * C, V)[:, :, :T].to(dtype), state


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
