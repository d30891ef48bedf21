"""SelectivBench sequence models as transformers PreTrainedModels.

    input_ids -> one-hot (gap id -> zero vector) + uniform noise -> linear
              -> n_layers x (mixer -> dropout -> residual -> norm) -> linear classifier

`forward(input_ids)` runs every mixer in its parallel/chunked form. `forward(input_ids,
state=..., use_cache=True)` (or `recurrent=True`) runs the step-by-step recurrent form and returns
the state, so a stream can be fed in pieces with constant memory (a growing KV cache for the
attention mixers).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers.modeling_outputs import TokenClassifierOutput
from transformers.utils import ModelOutput

from .configuration_selectivbench import SelectivBenchConfig
from .layers import RMSNorm
from .mixer_deltanet import DeltaNetMixer
from .mixer_fox import FoxMixer
from .mixer_gated_deltanet import GatedDeltaNetMixer
from .mixer_gated_deltaproduct import GatedDeltaProductMixer
from .mixer_gla import GLAMixer
from .mixer_gru import GRUMixer
from .mixer_mamba import MambaMixer
from .mixer_mamba2 import Mamba2Mixer
from .mixer_retnet import RetNetMixer
from .mixer_s4d import S4DMixer
from .mixer_transformer import TransformerMixer

MIXER_CLASSES = {
    "transformer": TransformerMixer, "s4d": S4DMixer, "retnet": RetNetMixer, "mamba": MambaMixer,
    "mamba2": Mamba2Mixer, "gla": GLAMixer, "deltanet": DeltaNetMixer, "gated_deltanet": GatedDeltaNetMixer,
    "gated_deltaproduct": GatedDeltaProductMixer, "gru": GRUMixer, "fox": FoxMixer,
}


@dataclass
class SelectivBenchModelOutput(ModelOutput):
    """last_hidden_state (B, T, d_model); hidden_states per layer if asked; state if recurrent."""

    last_hidden_state: Optional[torch.FloatTensor] = None
    hidden_states: Optional[tuple[torch.FloatTensor, ...]] = None
    state: Optional[list] = None


@dataclass
class SelectivBenchTokenClassifierOutput(TokenClassifierOutput):
    """TokenClassifierOutput plus the recurrent state (when run step by step)."""

    state: Optional[list] = None


class OneHotInput(nn.Module):
    """SPEC §4 input layer: W (one_hot(id) + noise) + b, with the gap id's one-hot all zeros.

    Computed as a row lookup plus W @ noise, never materialising the one-hot vectors.
    """

    def __init__(self, vocab_size: int, d_model: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_model, vocab_size))
        self.bias = nn.Parameter(torch.empty(d_model))

    def init_own_weights(self, init):
        # PyTorch's Linear init. The bias must not start at zero: it is all a silent gap step feeds
        # the first layer, and normalising an exact zero vector sends back ~1/sqrt(eps) gradients.
        bound = self.weight.shape[1] ** -0.5
        init.uniform_(self.weight, -bound, bound)
        init.uniform_(self.bias, -bound, bound)

    def forward(self, input_ids, noise=None):
        table = torch.cat([self.weight.t(), self.weight.new_zeros(1, self.weight.shape[0])])
        x = F.embedding(input_ids, table) + self.bias
        if noise is not None:
            x = x + noise.to(x.dtype) @ self.weight.t()
        return x


class SelectivBenchBlock(nn.Module):
    def __init__(self, config: SelectivBenchConfig):
        super().__init__()
        self.mixer = MIXER_CLASSES[config.mixer](config)
        self.dropout = nn.Dropout(config.dropout)
        self.norm = nn.LayerNorm(config.d_model) if config.norm == "layernorm" else RMSNorm(config.d_model)

    def forward(self, x):
        return self.norm(x + self.dropout(self.mixer(x)))

    def step(self, x_t, state):
        y, state = self.mixer.step(x_t, state)
        return self.norm(x_t + self.dropout(y)), state


class SelectivBenchPreTrainedModel(PreTrainedModel):
    config_class = SelectivBenchConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["SelectivBenchBlock"]
    accepts_loss_kwargs = False  # the loss is a mean over this batch's tokens

    def _init_weights(self, module):
        from transformers import initialization as init

        if isinstance(module, nn.Linear):
            init.normal_(module.weight, std=self.config.initializer_range or module.in_features ** -0.5)
            if module.bias is not None:
                init.zeros_(module.bias)
        else:
            super()._init_weights(module)
        if hasattr(module, "init_own_weights"):
            module.init_own_weights(init)

    def save_pretrained(self, save_directory, *args, **kwargs):
        super().save_pretrained(save_directory, *args, **kwargs)
        # transformers records only the saved class; a checkpoint should open with AutoModel too
        path = os.path.join(save_directory, "config.json")
        if self._auto_class is not None and os.path.exists(path):
            with open(path) as f:
                cfg = json.load(f)
            auto_map = cfg.setdefault("auto_map", {})
            auto_map.setdefault("AutoConfig", "configuration_selectivbench.SelectivBenchConfig")
            auto_map.setdefault("AutoModel", "modeling_selectivbench.SelectivBenchModel")
            auto_map.setdefault("AutoModelForTokenClassification",
                                "modeling_selectivbench.SelectivBenchForTokenClassification")
            with open(path, "w") as f:
                json.dump(cfg, f, indent=2, sort_keys=True)


class SelectivBenchModel(SelectivBenchPreTrainedModel):
    def __init__(self, config: SelectivBenchConfig):
        super().__init__(config)
        self.embed = OneHotInput(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(SelectivBenchBlock(config) for _ in range(config.n_layers))
        self.post_init()

    def forward(self, input_ids, input_noise=None, state=None, use_cache=None, recurrent=False,
                output_hidden_states=None, return_dict=None, element_index=None, **unused):
        """input_ids (B, T) with the gap id `vocab_size`; input_noise (B, T, vocab_size) or None to
        draw U[0, config.input_noise); element_index is accepted (and ignored) for the metric."""
        if input_noise is None and self.config.input_noise > 0:
            input_noise = torch.rand(*input_ids.shape, self.config.vocab_size, device=input_ids.device)
            input_noise = input_noise * self.config.input_noise
        x = self.embed(input_ids, input_noise)
        hidden = [x] if output_hidden_states else None
        if recurrent or use_cache or state is not None:
            state = list(state) if state is not None else [None] * len(self.layers)
            outs = []
            for x_t in x.unbind(1):
                for i, layer in enumerate(self.layers):
                    x_t, state[i] = layer.step(x_t, state[i])
                outs.append(x_t)
            x = torch.stack(outs, 1)
        else:
            for layer in self.layers:
                x = layer(x)
                if hidden is not None:
                    hidden.append(x)
        return SelectivBenchModelOutput(last_hidden_state=x, hidden_states=tuple(hidden) if hidden else None,
                                        state=state)


class SelectivBenchForTokenClassification(SelectivBenchPreTrainedModel):
    def __init__(self, config: SelectivBenchConfig):
        super().__init__(config)
        self.model = SelectivBenchModel(config)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        self.post_init()

    def forward(self, input_ids, labels=None, input_noise=None, state=None, use_cache=None, recurrent=False,
                output_hidden_states=None, return_dict=None, element_index=None, **unused):
        out = self.model(input_ids, input_noise=input_noise, state=state, use_cache=use_cache,
                         recurrent=recurrent, output_hidden_states=output_hidden_states)
        logits = self.classifier(out.last_hidden_state)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
        return SelectivBenchTokenClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                                  state=out.state)
