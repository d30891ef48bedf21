"""Forgetting attention (FoX): softmax attention whose logits decay with a data-dependent forget gate.

    o_t = sum_{s<=t} softmax_s(q_t . k_s / sqrt(d) + c_t - c_s) v_s,   c_t = sum_{i<=t} log f_i,
    f_t = sigmoid(w_f . x_t + b_f) per head

Parallel form: the bias folds into the dot product,

    q_t . k_s / sqrt(d) + c_t - c_s = [q_t / sqrt(d), c_t, 1] . [k_s, 1, -c_s],

so scaled_dot_product_attention runs its causal kernel on head size d + 2 (v padded with zeros:
the fused CPU kernel wants equal sizes) and no T x T bias is ever built: at T = 1024 it runs 5x
faster than an explicit bias, and evaluation on 4,000-step sequences fits in memory. It is computed in
float32: c_t - c_s is a difference of two large sums. Recurrent form: the bias c_t - c_s as an
explicit mask over the cache. State: `AttentionState` (keys, values, c_s of every cached step).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import at_least_fp32, merge_heads, split_heads
from .mixer_state import AttentionState, Mixer
from .mixer_transformer import causal_after

TAXONOMY = dict(transition="data-dependent scalar (forget gate on attention logits)", input_gating="no",
                channel_mixing="no (no recurrent state)", softmax="yes", state="KV cache, grows with t")


class ForgetGateProjection(nn.Linear):
    """w_f x + b_f, one forget-gate logit per head. Its own class so that the bias init below runs:
    transformers skips init for a remote-code module without parameters of its own (FoxMixer)."""

    def init_own_weights(self, init):
        # forget gates start near 1 (long memory), spread across heads as in FoX
        init.copy_(self.bias, torch.linspace(1.0, 6.0, self.out_features))


class FoxMixer(Mixer):
    def __init__(self, config):
        super().__init__()
        self.n_heads = config.n_heads
        self.qkv_proj = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.f_proj = ForgetGateProjection(config.d_model, config.n_heads)
        self.o_proj = nn.Linear(config.d_model, config.d_model, bias=False)

    def _qkvc(self, x, state):
        """q, k, v (B, H, T, d) and c (B, H, T, 1), the cumulative log forget gate since the start."""
        q, k, v = (split_heads(t, self.n_heads) for t in self.qkv_proj(x).chunk(3, -1))
        log_f = F.logsigmoid(at_least_fp32(self.f_proj(x))[0]).transpose(1, 2)[..., None]
        c = log_f.cumsum(2)
        if state is not None:
            c = c + state.log_forget[:, :, -1:]
        return q, k, v, c

    def forward(self, x, state=None):
        q, k, v, c = self._qkvc(x, state)
        past = 0 if state is None else state.seen
        state = AttentionState(k, v, c) if state is None else state.append(k, v, c)
        dtype, d = q.dtype, q.shape[-1]
        keys, values, c_keys = state.tensors()
        q, keys, values = at_least_fp32(q, keys, values)
        c, c_keys = c.to(q.dtype), c_keys.to(q.dtype)
        q = torch.cat([q * d ** -0.5, c, torch.ones_like(c)], -1)
        keys = torch.cat([keys, torch.ones_like(c_keys), -c_keys], -1)
        values = F.pad(values, (0, 2))
        mask = None if past == 0 else causal_after(past, x.shape[1], x.device)
        with torch.autocast(x.device.type, enabled=False):
            o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=past == 0, scale=1.0)
        return self.o_proj(merge_heads(o[..., :d].to(dtype))), state

    def step(self, x_t, state):
        q, k, v, c = self._qkvc(x_t[:, None], state)
        state = AttentionState(k, v, c) if state is None else state.append(k, v, c)
        keys, values, c_keys = state.tensors()
        bias = (c - c_keys).transpose(2, 3).to(q.dtype)  # (B, H, 1, t): c_t - c_s
        o = F.scaled_dot_product_attention(q, keys, values, attn_mask=bias)
        return self.o_proj(merge_heads(o))[:, 0], state
