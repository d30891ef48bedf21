"""Causal softmax attention with rotary positions (the paper's Transformer baseline).

    o_t = sum_{s<=t} softmax_s(q_t . k_s / sqrt(d)) v_s        (q, k rotated by position)

Parallel form: scaled_dot_product_attention with a causal mask. Recurrent form: a growing KV cache.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import KVCache, merge_heads, rotary, split_heads

TAXONOMY = dict(transition="none (attention over all past keys)", input_gating="no",
                channel_mixing="no (no recurrent state)", softmax="yes", state="KV cache, grows with t")


class TransformerMixer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_heads, self.theta = config.n_heads, config.rope_theta
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.out = nn.Linear(config.d_model, config.d_model, bias=False)

    def _qkv(self, x, positions):
        q, k, v = (split_heads(t, self.n_heads) for t in self.qkv(x).chunk(3, -1))
        return rotary(q, positions, self.theta), rotary(k, positions, self.theta), v

    def forward(self, x):
        q, k, v = self._qkv(x, torch.arange(x.shape[1], device=x.device))
        return self.out(merge_heads(F.scaled_dot_product_attention(q, k, v, is_causal=True)))

    def step(self, x_t, state):
        t = 0 if state is None else state.length
        q, k, v = self._qkv(x_t[:, None], torch.tensor([t], device=x_t.device))
        if state is None:
            state = KVCache(k, v)
        else:
            k, v = state.append(k, v)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.out(merge_heads(o))[:, 0], state
