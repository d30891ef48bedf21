"""GRU, in its parallel-trainable minimal form (minGRU): the gates see the input only.

    z_t = sigmoid(W_z x_t),  h~_t = W_h x_t,  h_t = (1 - z_t) * h_{t-1} + z_t * h~_t,  out = W_o h

A classic GRU also feeds h_{t-1} into its gates, which makes it non-linear and sequential; the
minGRU keeps the update/forget coupling (input gating) and is a diagonal linear recurrence.
Chunked form: `chunk_scan` with decay 1 - z = sigmoid(-W_z x). Recurrent form: h.
State: `DiagonalState` (memory h (B, d_inner)).
"""
import math

import torch.nn as nn

from .chunked_scan import chunk_scan, recurrent_scan_step
from .layers import at_least_fp32
from .mixer_state import DiagonalState, Mixer

TAXONOMY = dict(transition="data-dependent diagonal (1 - z_t)", input_gating="yes (z_t, coupled to the decay)",
                channel_mixing="no", softmax="no", state="constant: d_inner")


class GRUMixer(Mixer):
    def __init__(self, config):
        super().__init__()
        Di = config.expand * config.d_model
        self.zh_proj = nn.Linear(config.d_model, 2 * Di)  # update gate z and candidate h~
        self.o_proj = nn.Linear(Di, config.d_model, bias=False)

    def _gates(self, x):
        # the scan in float32 at least: in bf16 (autocast), every decay 1 - z above 0.998 is exactly 1
        u, h_tilde = at_least_fp32(*self.zh_proj(x).chunk(2, -1))
        z = u.sigmoid()
        return 1 - z, z * h_tilde

    def forward(self, x, state=None):
        a, b = self._gates(x)
        h, last = chunk_scan(a, b, chunk_size=max(8, int(math.sqrt(x.shape[1]))),
                             initial_state=None if state is None else state.memory.to(b.dtype))
        return self.o_proj(h.to(x.dtype)), DiagonalState(last, seen=(0 if state is None else state.seen) + x.shape[1])

    def step(self, x_t, state):
        a, b = self._gates(x_t)
        h = recurrent_scan_step(a, b, 0.0 if state is None else state.memory.to(b.dtype))
        return self.o_proj(h.to(x_t.dtype)), DiagonalState(h, seen=(0 if state is None else state.seen) + 1)
