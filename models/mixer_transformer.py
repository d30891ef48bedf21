"""Causal softmax attention with rotary positions (the paper's Transformer baseline).

    o_t = sum_{s<=t} softmax_s(q_t . k_s / sqrt(d)) v_s        (q, k rotated by position)

Parallel form: scaled_dot_product_attention, causal, over the cached keys and the new ones.
Recurrent form: one query against the growing KV cache. State: `AttentionState` (keys, values).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import merge_heads, rotary, split_heads
from .mixer_state import AttentionState, Mixer

TAXONOMY = dict(transition="none (attention over all past keys)", input_gating="no",
                channel_mixing="no (no recurrent state)", softmax="yes", state="KV cache, grows with t")


def causal_after(past: int, T: int, device):
    """(T, past + T) boolean mask: new step i sees the past and the new steps up to i. SDPA's
    is_causal aligns the diagonal top-left, which is wrong once there are cached keys."""
    return torch.ones(T, past + T, dtype=torch.bool, device=device).tril(past)


class TransformerMixer(Mixer):
    def __init__(self, config):
        super().__init__()
        self.n_heads, self.theta = config.n_heads, config.rope_theta
        self.qkv_proj = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.o_proj = nn.Linear(config.d_model, config.d_model, bias=False)

    def _qkv(self, x, start: int):
        q, k, v = (split_heads(t, self.n_heads) for t in self.qkv_proj(x).chunk(3, -1))
        positions = torch.arange(start, start + x.shape[1], device=x.device)
        return rotary(q, positions, self.theta), rotary(k, positions, self.theta), v

    def forward(self, x, state=None):
        past = 0 if state is None else state.seen
        q, k, v = self._qkv(x, past)
        if state is None:
            state = AttentionState(k, v)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            state = state.append(k, v)
            o = F.scaled_dot_product_attention(q, state.keys, state.values,
                                               attn_mask=causal_after(past, x.shape[1], x.device))
        return self.o_proj(merge_heads(o)), state

    def step(self, x_t, state):
        q, k, v = self._qkv(x_t[:, None], 0 if state is None else state.seen)
        state = AttentionState(k, v) if state is None else state.append(k, v)
        o = F.scaled_dot_product_attention(q, state.keys, state.values)
        return self.o_proj(merge_heads(o))[:, 0], state
