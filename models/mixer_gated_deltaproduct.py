"""Gated DeltaProduct: per token, a product of n_h generalised Householder transitions and a decay.

    S_t = exp(g_t) prod_{j=1..n_h} (I - beta_tj k_tj k_tj^T) S_{t-1} + sum_j (...) beta_tj k_tj v_tj^T
    (the n_h delta-rule sub-steps of `mixer_deltanet`, the decay on the first, the output after the last)

As fla's `GatedDeltaProduct` (use_forget_gate, use_output_gate, allow_neg_eigval: beta_tj =
2 sigmoid(.) in (0, 2), so a reflection can flip the sign of a state direction): the k and v
projections and their short convolutions are n_h times wider (n_h keys and values per token).
Chunked form: `chunk_delta_rule` over the T * n_h sub-steps. Recurrent form: n_h delta steps per token.
State: `MatrixState`, laid out as in `mixer_deltanet`.
"""
from .mixer_gated_deltanet import GatedDeltaNetMixer

TAXONOMY = dict(transition="data-dependent scalar x products of n_h Householder reflections",
                input_gating="yes (beta writes the input)", channel_mixing="yes (rank n_h per token)",
                softmax="no", state="constant: heads x d_head x expand_v d_head + conv window")


class GatedDeltaProductMixer(GatedDeltaNetMixer):
    beta_scale = 2.0  # fla's GatedDeltaProduct: allow_neg_eigval=True by default

    def __init__(self, config):
        super().__init__(config, num_householder=config.num_householder)
