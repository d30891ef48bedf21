"""RG-LRU, the real-gated linear recurrent unit of Griffin (De et al., 2024), as a SelectivBench plugin.

    r_t = sigmoid(W_r x_t),  i_t = sigmoid(W_i x_t),  a_t = sigmoid(L)^(8 r_t)   (one decay per channel)
    h_t = a_t * h_{t-1} + sqrt(1 - a_t^2) * (i_t * W_v x_t),   y_t = W_o h_t

    selectivbench check-mixer examples/rglru_mixer.py:RGLRUMixer
    selectivbench train --mixer examples/rglru_mixer.py:RGLRUMixer --config complexity --output-dir runs/rglru
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from selectivbench.models import DiagonalState, Mixer

TAXONOMY = dict(transition="data-dependent diagonal (a^(8 r_t))", input_gating="yes (i_t, and sqrt(1 - a_t^2))",
                channel_mixing="no", softmax="no", state="constant: d_model")


class RGLRUMixer(Mixer):  # --mixer name: rglru
    no_weight_decay = ("a_logit",)  # its decay rates: weight decay would pull every a towards 0.5
    def __init__(self, config):
        super().__init__()
        self.in_proj = nn.Linear(config.d_model, 3 * config.d_model)  # r, i and the value v
        self.a_logit = nn.Parameter(torch.empty(config.d_model))
        self.o_proj = nn.Linear(config.d_model, config.d_model, bias=False)
        self.chunk_size = config.chunk_size

    def init_own_weights(self, init):
        init.uniform_(self.a_logit, 2.0, 6.0)  # a = sigmoid(L) in [0.88, 0.998]: slow and fast memories

    def _gates(self, x):  # the recurrence in float32 at least (bf16 would round decays near 1 to 1)
        r, i, v = self.in_proj(x).to(torch.promote_types(x.dtype, torch.float32)).chunk(3, -1)
        log_a = 8 * r.sigmoid() * F.logsigmoid(self.a_logit.to(r.dtype))
        return log_a, (-torch.expm1(2 * log_a)).sqrt() * i.sigmoid() * v

    def forward(self, x, state=None):  # chunked: h_t = sum_s exp(log a_s+1 + ... + log a_t) b_s
        log_a, b = self._gates(x)
        h = b.new_zeros(b.shape[0], b.shape[2]) if state is None else state.memory.to(b.dtype)
        out = []
        for log_a_c, b_c in zip(log_a.split(self.chunk_size, 1), b.split(self.chunk_size, 1)):
            cum = log_a_c.cumsum(1)
            later = torch.ones(cum.shape[1], cum.shape[1], dtype=torch.bool, device=x.device).triu(1)
            decay = (cum[:, :, None] - cum[:, None]).masked_fill(later[..., None], -torch.inf).exp()
            out.append((decay * b_c[:, None]).sum(2) + cum.exp() * h[:, None])
            h = out[-1][:, -1]
        seen = (0 if state is None else state.seen) + x.shape[1]
        return self.o_proj(torch.cat(out, 1).to(x.dtype)), DiagonalState(h, seen=seen)

    def step(self, x_t, state):
        log_a, b = self._gates(x_t)
        h = b if state is None else log_a.exp() * state.memory.to(b.dtype) + b
        return self.o_proj(h.to(x_t.dtype)), DiagonalState(h, seen=(0 if state is None else state.seen) + 1)
