"""Gated DeltaProduct: per token, a product of n_h generalised Householder transitions and a decay.

    S_t = exp(g_t) prod_{j=1..n_h} (I - beta_tj k_tj k_tj^T) S_{t-1} + sum_j (...) beta_tj k_tj v_tj^T
    (the n_h delta-rule sub-steps of `mixer_deltanet`, the decay on the first, the output after the last)

Chunked form: `chunk_delta_rule` over the T * n_h sub-steps. Recurrent form: n_h delta steps per token.
"""
from .mixer_gated_deltanet import GatedDeltaNetMixer

TAXONOMY = dict(transition="data-dependent scalar x products of n_h Householder reflections",
                input_gating="yes (beta writes the input)", channel_mixing="yes (rank n_h per token)",
                softmax="no", state="constant: heads x d_head x d_head")


class GatedDeltaProductMixer(GatedDeltaNetMixer):
    def __init__(self, config):
        super().__init__(config, n_householder=config.num_householder)
