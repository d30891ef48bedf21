"""Element-wise (diagonal) linear recurrence, behind Mamba's selective scan and the minGRU.

Recurrence, per channel:   h_t = exp(a_t) * h_{t-1} + b_t,   a_t <= 0.

Chunked form (a two-level scan): split T into N chunks of C steps. (1) Scan every chunk from a
zero state, all chunks at once: C sequential steps on (B, N, ...) tensors. (2) Hand the chunk-end
states over: N sequential steps. (3) Add each chunk's entering state times exp(cumsum a), which is
<= 1. C + N sequential steps instead of T, and no exponent is ever positive.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def recurrent_scan_step(a, b, state):
    return a.exp() * state + b


def chunk_scan(a, b, chunk_size: int = 32, initial_state=None):
    """a, b: (B, T, *channels). Returns h (B, T, *channels) and the final state (B, *channels)."""
    B, T = a.shape[:2]
    ch = a.shape[2:]
    C = min(chunk_size, T)
    pad = (-T) % C
    if pad:  # padded steps keep the state: a = 0, b = 0
        widths = (0, 0) * len(ch) + (0, pad)
        a, b = F.pad(a, widths), F.pad(b, widths)
    N = (T + pad) // C
    a, b = a.reshape(B, N, C, *ch), b.reshape(B, N, C, *ch)
    decay = a.exp()
    h = torch.zeros_like(b[:, :, 0])
    local = []
    for a_t, b_t in zip(decay.unbind(2), b.unbind(2)):
        h = a_t * h + b_t
        local.append(h)
    local = torch.stack(local, 2)
    to_end = a.cumsum(2).exp()  # prod of decays from the chunk start, <= 1
    state = b.new_zeros(B, *ch) if initial_state is None else initial_state
    entering = []
    for n in range(N):
        entering.append(state)
        state = to_end[:, n, -1] * state + local[:, n, -1]
    h = local + to_end * torch.stack(entering, 1)[:, :, None]
    return h.reshape(B, N * C, *ch)[:, :T], state
