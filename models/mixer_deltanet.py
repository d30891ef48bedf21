"""DeltaNet: linear attention whose state is corrected by the delta rule (identity plus low rank).

    q, k, v = silu(conv(W_q x)), silu(conv(W_k x)), silu(conv(W_v x))    (fla's short convolutions)
    q, k = L2-normalised;  beta_t = sigmoid(w_b x_t)
    S_t = (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T,   o_t = S_t^T q_t,   out = W_o RMSNorm(o)

As fla's `DeltaNet` (use_gate=False): keys of d_head = d_model / n_heads per head, values of
expand_v * d_head (config `expand_v`), RMSNorm per head over the values, o_proj from expand_v *
d_model. With `use_short_conv` each of q, k, v goes through its own depthwise causal conv
(`q_conv1d`, `k_conv1d`, `v_conv1d`, no bias) before the silu; without it, silu alone (fla's
branch without conv). The gated variants (mixer_gated_deltanet, mixer_gated_deltaproduct) add a
scalar decay exp(g_t) and an output gate; the product variant applies `num_householder` rank-one
corrections per token, i.e. runs the same rule over num_householder sub-steps, the decay on the
first, the output after the last, with beta in (0, 2) (fla's GatedDeltaProduct allows negative
eigenvalues by default).
Chunked form: `chunk_delta_rule` (WY/UT transform) over the sub-steps. Recurrent form: the K x V state.
State: `MatrixState`: memory (B, H, d_head, expand_v * d_head); conv (B, d_model + n_h d_model +
n_h expand_v d_model, conv_size - 1), the q, k and v windows concatenated over channels (None
without the short conv).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from .chunked_delta_rule import chunk_delta_rule, recurrent_delta_step
from .layers import (RMSNorm, conv_qkv, fused_linear, gated_output, inverse_softplus, log_uniform,
                     qkv_short_convs, split_heads, state_zeros)
from .mixer_state import MatrixState, Mixer

TAXONOMY = dict(transition="identity plus low rank (delta rule)", input_gating="yes (beta writes the input)",
                channel_mixing="yes (k k^T mixes state rows)", softmax="no",
                state="constant: heads x d_head x expand_v d_head + conv window")


def l2norm(x, eps: float = 1e-6, scale: float = 1.0):
    """scale * x / sqrt(|x|^2 + eps). x can be exactly 0 (silu of a zero projection, e.g. a zero row of
    weights or a silent gap step once the input bias is learned to zero): F.normalize's
    x / max(|x|, 1e-12) would then send back 1e12 gradients; the eps keeps them bounded."""
    return x * (torch.rsqrt(x.pow(2).sum(-1, keepdim=True) + eps) * scale)


class DeltaNetMixer(Mixer):
    gated = False
    beta_scale = 1.0  # fla's allow_neg_eigval doubles beta (eigenvalues of I - beta k k^T in (-1, 1])

    def __init__(self, config, num_householder: int = 1):
        super().__init__()
        D, H = config.d_model, config.n_heads
        Dv = config.expand_v * D  # fla's value_dim: H heads of expand_v * d_head
        self.n_heads, self.num_householder, self.chunk_size = H, num_householder, config.chunk_size
        self.key_dim, self.value_dim = D, Dv  # of one sub-step, all heads (fla's names)
        self.fast = config.use_fast_kernels  # flash-linear-attention on CUDA, when installed
        self.q_proj = nn.Linear(D, D, bias=False)
        # per sub-step j: keys [j*D, (j+1)*D), values and betas alike (fla's GatedDeltaProduct layout)
        self.k_proj = nn.Linear(D, num_householder * D, bias=False)
        self.v_proj = nn.Linear(D, num_householder * Dv, bias=False)
        self.b_proj = nn.Linear(D, num_householder * H, bias=False)
        if self.gated:
            self.a_proj = nn.Linear(D, H, bias=False)  # decay step size
            self.A_log = nn.Parameter(torch.empty(H))
            self.dt_bias = nn.Parameter(torch.empty(H))
            self.g_proj = nn.Linear(D, Dv, bias=False)  # output gate
            self.time_step_range, self.A_init_range = (config.time_step_min, config.time_step_max), config.A_init_range
        self.use_short_conv = config.use_short_conv
        if self.use_short_conv:
            self.q_conv1d, self.k_conv1d, self.v_conv1d = qkv_short_convs(
                (D, num_householder * D, num_householder * Dv), config.conv_size)
        self.norm = RMSNorm(Dv // H)
        self.o_proj = nn.Linear(Dv, D, bias=False)

    def init_own_weights(self, init):
        if self.gated:
            H = self.A_log.shape[0]
            init.copy_(self.A_log, torch.log(torch.empty(H).uniform_(*self.A_init_range)))
            init.copy_(self.dt_bias, inverse_softplus(log_uniform(H, *self.time_step_range)))

    def _project(self, x, window, step: bool = False):
        """q (B,H,T,d); k (B,H,T,n,d); v (B,H,T,n,dv); beta (B,H,T,n); g (B,H,T) log decay; conv window
        (n: the Householder sub-steps per token)."""
        B, T, _ = x.shape
        H, n, D, Dv = self.n_heads, self.num_householder, self.key_dim, self.value_dim
        gates = (self.a_proj, self.g_proj) if self.gated else ()
        qkv, beta, *gates = fused_linear(x, (self.q_proj, self.k_proj, self.v_proj), self.b_proj, *gates)
        if self.use_short_conv:
            (q, k, v), window = conv_qkv((self.q_conv1d, self.k_conv1d, self.v_conv1d), qkv, window, step)
        else:
            q, k, v = F.silu(qkv).split([D, n * D, n * Dv], -1)
        q = l2norm(split_heads(q, H), scale=(D // H) ** -0.5)
        k = l2norm(k.view(B, T, n, H, -1)).permute(0, 3, 1, 2, 4)
        v = v.view(B, T, n, H, -1).permute(0, 3, 1, 2, 4)
        beta = (beta.sigmoid() * self.beta_scale).view(B, T, n, H).permute(0, 3, 1, 2)
        if self.gated:
            a, gate = gates
            g = (-self.A_log.exp() * F.softplus(a + self.dt_bias)).transpose(1, 2)
        else:
            g, gate = x.new_zeros(B, H, T), None
        return q, k, v, beta, g, gate, window

    def forward(self, x, state=None):
        q, k, v, beta, g, gate, window = self._project(x, None if state is None else state.conv)
        n = self.num_householder
        if n == 1:  # one delta step per token
            q_sub, g_sub = q, g
        else:  # sub-step j of token t sits at t * n + j; the decay acts on j = 0, the output is read at j = n - 1
            q_sub = torch.zeros_like(k).index_copy_(3, torch.tensor([n - 1], device=x.device), q[:, :, :, None])
            q_sub, g_sub = q_sub.flatten(2, 3), F.pad(g[..., None], (0, n - 1)).flatten(2, 3)
        o, memory = chunk_delta_rule(q_sub, k.flatten(2, 3), v.flatten(2, 3), beta.flatten(2, 3),
                                     g_sub if self.gated else None, self.chunk_size,
                                     initial_state=None if state is None else state.memory, fast=self.fast)
        seen = (0 if state is None else state.seen) + x.shape[1]
        y = gated_output(self.norm, self.o_proj, o[:, :, n - 1::n].to(x.dtype), gate)
        return y, MatrixState(memory, window, seen)

    def step(self, x_t, state):
        q, k, v, beta, g, gate, window = self._project(x_t[:, None], None if state is None else state.conv, step=True)
        S = state_zeros(k, x_t.shape[0], self.n_heads, k.shape[-1], v.shape[-1]) if state is None else state.memory
        for j in range(self.num_householder):
            g_j = g[:, :, 0] if j == 0 else torch.zeros_like(g[:, :, 0])
            o, S = recurrent_delta_step(q[:, :, 0], k[:, :, 0, j], v[:, :, 0, j], beta[:, :, 0, j], g_j, S)
        seen = (0 if state is None else state.seen) + 1
        y = gated_output(self.norm, self.o_proj, o[:, :, None].to(x_t.dtype), gate)
        return y[:, 0], MatrixState(S, window, seen)
