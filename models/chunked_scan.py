"""Element-wise (diagonal) linear recurrence, behind the minGRU.

Recurrence, per channel:   h_t = a_t * h_{t-1} + b_t,   0 <= a_t <= 1.

Chunked form (a two-level scan): split T into N chunks of C steps. (1) Scan every chunk from a
zero state, all chunks at once: C sequential steps on (N, B, ...) tensors. (2) Hand the chunk-end
states over: N sequential steps. (3) Add each chunk's entering state times the running product of
its decays (a cumprod of numbers <= 1: it can underflow to 0, never overflow). C + N sequential
steps instead of T.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def recurrent_scan_step(a, b, state):
    return a * state + b


def chunk_scan(a, b, chunk_size: int = 32, initial_state=None):
    """a, b: (B, T, *channels). Returns h (B, T, *channels) and the final state (B, *channels)."""
    B, T = a.shape[:2]
    ch = a.shape[2:]
    C = min(chunk_size, T)
    pad = (-T) % C
    if pad:  # padded steps keep the state: a = 1, b = 0
        widths = (0, 0) * len(ch) + (0, pad)
        a, b = F.pad(a, widths, value=1.0), F.pad(b, widths)
    N = (T + pad) // C
    # time-major and contiguous, so that every step of the loops reads one dense block
    a, b = (x.reshape(B, N, C, *ch).movedim(2, 0).contiguous() for x in (a, b))  # (C, B, N, ...)
    h = torch.zeros_like(b[0])
    local = []
    for a_t, b_t in zip(a, b):
        h = torch.addcmul(b_t, a_t, h)
        local.append(h)
    local = torch.stack(local)
    from_start = a.cumprod(0)  # product of the decays since the chunk start
    state = b.new_zeros(B, *ch) if initial_state is None else initial_state
    entering = []
    for n in range(N):
        entering.append(state)
        state = torch.addcmul(local[-1, :, n], from_start[-1, :, n], state)
    h = torch.addcmul(local, from_start, torch.stack(entering, 1))
    return h.movedim(0, 2).reshape(B, N * C, *ch)[:, :T], state
