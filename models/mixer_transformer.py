"""The paper's Transformer baseline: its decoder layer, whole, as the block's mixer.

    q, k, v = W_q x + b, W_k x + b, W_v x + b;   q, k RMS-normed per head, then rotated by position
    o_t = sum_{s<=t} softmax_s(q_t . k_s / sqrt(d)) v_s
    h = x + RMSNorm(W_o o + b)                                   (the layer's own residual)
    y = h + dropout(W_out (swish_beta(W_gate h) * W_up h))       (SwiGLU feed-forward, 4 d_model wide)

As the paper's `TransformerDecoderLayer` (models/ssm_models.py): biases on every projection, its
RMSNorm (x / (|x| / sqrt(d) + 1e-8) * w), a swish with a trainable beta, rotary positions of base
`rope_theta` (the paper's runs: 1000) turning channel pairs (i, i + d/2) as its `Rotary` does, and
no attention dropout. The block around it adds x once more and norms (dropout -> residual -> norm),
as the paper's RecNet does around every layer.
Parallel form: scaled_dot_product_attention, causal, over the cached keys and the new ones.
Recurrent form: one query against the growing KV cache. State: `AttentionState` (keys, values).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import SeededDropout, merge_heads, rotary, split_heads
from .mixer_state import AttentionState, Mixer

TAXONOMY = dict(transition="none (attention over all past keys)", input_gating="no",
                channel_mixing="no (no recurrent state)", softmax="yes", state="KV cache, grows with t")


def causal_after(past: int, T: int, device):
    """(T, past + T) boolean mask: new step i sees the past and the new steps up to i. SDPA's
    is_causal aligns the diagonal top-left, which is wrong once there are cached keys."""
    return torch.ones(T, past + T, dtype=torch.bool, device=device).tril(past)


class PaperRMSNorm(nn.Module):
    """The paper's RMSNorm: x / (rms(x) + eps) * weight, eps outside the root (models/ssm_models.py)."""

    def __init__(self, dim: int, eps: float = 1e-8):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def init_own_weights(self, init):
        init.ones_(self.weight)

    def forward(self, x):
        return x / (x.norm(2, dim=-1, keepdim=True) * x.shape[-1] ** -0.5 + self.eps) * self.weight


class TransformerMixer(Mixer):
    def __init__(self, config):
        super().__init__()
        D, H = config.d_model, config.n_heads
        self.n_heads, self.theta = H, config.rope_theta
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(D, D) for _ in range(4))
        self.q_norm, self.k_norm, self.out_norm = PaperRMSNorm(D // H), PaperRMSNorm(D // H), PaperRMSNorm(D)
        # the paper's linear1 (d -> 8d: the swish-gated half, then the other) and linear2 (4d -> d)
        self.ffn_in, self.ffn_out = nn.Linear(D, 8 * D), nn.Linear(4 * D, D)
        self.swish_beta = nn.Parameter(torch.ones(1))
        self.dropout = SeededDropout(config.dropout)

    def init_own_weights(self, init):
        init.ones_(self.swish_beta)

    def _qkv(self, x, start: int):
        q, k, v = (split_heads(proj(x), self.n_heads) for proj in (self.q_proj, self.k_proj, self.v_proj))
        # the paper's Rotary turns by -angle where `rotary` turns by +angle: negative positions
        positions = -torch.arange(start, start + x.shape[1], device=x.device)
        return (rotary(self.q_norm(q), positions, self.theta), rotary(self.k_norm(k), positions, self.theta), v)

    def _rest(self, x, o):
        """The layer after attention: output projection, its norm and residual, then the feed-forward."""
        h = x + self.out_norm(self.o_proj(merge_heads(o)))
        gate, up = self.ffn_in(h).chunk(2, -1)
        return h + self.dropout(self.ffn_out(gate * torch.sigmoid(self.swish_beta * gate) * up))

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
        return self._rest(x, o), state

    def step(self, x_t, state):
        q, k, v = self._qkv(x_t[:, None], 0 if state is None else state.seen)
        state = AttentionState(k, v) if state is None else state.append(k, v)
        o = F.scaled_dot_product_attention(q, state.keys, state.values)
        return self._rest(x_t[:, None], o)[:, 0], state
