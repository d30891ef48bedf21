"""SelectivBench sequence models as transformers PreTrainedModels.

    input_ids -> one-hot (gap id -> zero vector) + uniform noise -> linear
              -> n_layers x (mixer -> dropout -> residual -> norm) -> linear classifier

`forward(input_ids)` runs every mixer in its parallel/chunked form. A stream can be fed in pieces:
`use_cache=True` returns the state after the piece (a `SelectivBenchCache`: one mixer state per
layer, see `mixer_state.py`), and `state=` continues from it, still in the chunked form: memory
stays constant for the recurrent mixers (a growing KV cache for the attention mixers). The
per-token loop of every mixer's `step` runs only when asked for (`recurrent=True`: the readable
recurrence, used as the tests' oracle) or for a one-token piece.

`models/` is shipped as the checkpoints' remote code: it must stay importable on its own (only
relative imports of its own files, and the libraries transformers needs).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import TokenClassifierOutput
from transformers.utils import ModelOutput

from .configuration_selectivbench import IGNORE_INDEX, SelectivBenchConfig
from .layers import RMSNorm, SeededDropout, at_least_fp32
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
from .mixer_state import SelectivBenchCache, declared_no_decay, has_step
from .mixer_transformer import TransformerMixer
from .plugins import plugin_available, plugin_class, travelling_source, trust_saved_plugin

MIXER_CLASSES = {
    "transformer": TransformerMixer, "s4d": S4DMixer, "retnet": RetNetMixer, "mamba": MambaMixer,
    "mamba2": Mamba2Mixer, "gla": GLAMixer, "deltanet": DeltaNetMixer, "gated_deltanet": GatedDeltaNetMixer,
    "gated_deltaproduct": GatedDeltaProductMixer, "gru": GRUMixer, "fox": FoxMixer,
}


@dataclass
class SelectivBenchModelOutput(ModelOutput):
    """last_hidden_state (B, T, d_model); hidden_states (the input layer's output, then every
    block's) when asked; state (a SelectivBenchCache) when use_cache."""

    last_hidden_state: Optional[torch.FloatTensor] = None
    hidden_states: Optional[tuple[torch.FloatTensor, ...]] = None
    state: Optional[SelectivBenchCache] = None


@dataclass
class SelectivBenchTokenClassifierOutput(TokenClassifierOutput):
    """TokenClassifierOutput plus the state after the last step (a SelectivBenchCache) when use_cache."""

    state: Optional[SelectivBenchCache] = None


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


def mixer_class(config: SelectivBenchConfig) -> type:
    """The class of the config's mixer: a built-in, or a plugin. Loaded as remote code, a checkpoint's
    plugin is its own copy (`mixer_plugin.py`, written by save_pretrained); in the installed package
    that file is a placeholder, and the plugin is the one this process already knows with the recorded
    source (`plugins.plugin_class`: registered, resolved from a user's spec, or installed)."""
    if config.mixer in MIXER_CLASSES:
        return MIXER_CLASSES[config.mixer]
    # written as a static relative import so that transformers copies the file with the remote code
    from .mixer_plugin import __name__ as saved_module
    import sys

    saved = sys.modules[saved_module]
    if not getattr(saved, "PLACEHOLDER", False):
        return getattr(saved, config.mixer_plugin["class"])
    return plugin_class(config.mixer_plugin)


class SelectivBenchBlock(nn.Module):
    def __init__(self, config: SelectivBenchConfig):
        super().__init__()
        self.mixer = mixer_class(config)(config)
        declared_no_decay(self.mixer)  # a mixer naming a parameter it lacks fails here, before any training
        self.dropout = SeededDropout(config.dropout)
        self.norm = {"layernorm": nn.LayerNorm, "rmsnorm": RMSNorm}[config.norm](config.d_model)

    def forward(self, x, state=None):
        y, state = self.mixer(x, state)
        return self.norm(x + self.dropout(y)), state

    def step(self, x_t, state):
        y, state = self.mixer.step(x_t, state)
        return self.norm(x_t + self.dropout(y)), state


AUTO_MAP = {"AutoConfig": "configuration_selectivbench.SelectivBenchConfig",
            "AutoModel": "modeling_selectivbench.SelectivBenchModel",
            "AutoModelForTokenClassification": "modeling_selectivbench.SelectivBenchForTokenClassification"}


class SelectivBenchPreTrainedModel(PreTrainedModel):
    config_class = SelectivBenchConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["SelectivBenchBlock"]
    # Trainer passes num_items_in_batch (the labelled steps of an optimizer step over its micro-batches
    # and processes): the loss is then a share of that step's mean, so every step weighs alike
    accepts_loss_kwargs = True

    def __init__(self, config: SelectivBenchConfig, *inputs, **kwargs):
        # from_pretrained(path, **overrides) sets the overrides on the config after its own checks ran
        config.validate_fields()
        super().__init__(config, *inputs, **kwargs)

    def _init_weights(self, module):
        from transformers import initialization as init

        if isinstance(module, nn.Linear) and self.config.linear_init == "torch":  # nn.Linear.reset_parameters
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                init.uniform_(module.bias, -module.in_features ** -0.5, module.in_features ** -0.5)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, std=self.config.initializer_range or module.in_features ** -0.5)
            if module.bias is not None:
                init.zeros_(module.bias)
        else:
            super()._init_weights(module)
        if hasattr(module, "init_own_weights"):
            module.init_own_weights(init)

    def save_pretrained(self, save_directory, *args, **kwargs):
        # transformers records only the saved class; a checkpoint should open with AutoModel too. Set
        # before saving, so that config.json is written complete (and so uploaded with push_to_hub=True)
        plugin = self.config.mixer_plugin
        # checked before anything is written: a plugin that cannot travel leaves no half checkpoint
        source = travelling_source(type(self._first_mixer())) if plugin else None
        if self._auto_class is not None:
            self.config.auto_map = {**AUTO_MAP, **(getattr(self.config, "auto_map", None) or {})}
        super().save_pretrained(save_directory, *args, **kwargs)
        if source is not None:  # over the placeholder transformers copied
            (Path(save_directory) / plugin["file"]).write_text(source)

    def no_weight_decay_names(self) -> set[str]:
        """The names of the parameters weight decay leaves alone: every one of fewer than two dimensions
        (norm weights, biases, per-channel gains) and those each mixer names in its `no_weight_decay`
        (the recurrence's decay rates and step sizes). The rule lives with the model, as nanoGPT's
        `configure_optimizers`; a trainer builds its parameter groups from it."""
        names = {name for name, p in self.named_parameters() if p.ndim < 2}
        for prefix, module in self.named_modules():
            if isinstance(module, SelectivBenchBlock):
                names.update(f"{prefix}.mixer.{name}" for name in declared_no_decay(module.mixer))
        return names

    def _first_mixer(self):
        return next(m.mixer for m in self.modules() if isinstance(m, SelectivBenchBlock))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """As transformers', and with trust_remote_code=True a plugin this process does not know is
        taken from the checkpoint's own copy (`mixer_plugin.py`); without it, one clear error."""
        config = kwargs.get("config")
        if kwargs.get("trust_remote_code") and not isinstance(config, PretrainedConfig):
            config = SelectivBenchConfig.from_pretrained(pretrained_model_name_or_path, trust_remote_code=False)
        plugin = getattr(config, "mixer_plugin", None)
        if kwargs.get("trust_remote_code") and plugin and not plugin_available(plugin):
            trust_saved_plugin(pretrained_model_name_or_path, plugin)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)


class SelectivBenchModel(SelectivBenchPreTrainedModel):
    def __init__(self, config: SelectivBenchConfig):
        super().__init__(config)
        self.embed = OneHotInput(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(SelectivBenchBlock(config) for _ in range(config.n_layers))
        self.dropouts = [m for m in self.modules() if isinstance(m, SeededDropout)]  # a plain list: no submodules
        for salt, module in enumerate(self.dropouts):  # each its own masks
            module.salt = salt
        # a plugin may have a parallel form only: one-token pieces then take it too
        self._can_step = all(has_step(layer.mixer) for layer in self.layers)
        self.post_init()

    def _seed_dropout(self, seeds, position: int = 0) -> None:
        for module in self.dropouts:
            module.sample_seeds, module.position = seeds, position

    def forward(self, input_ids, input_noise=None, state=None, use_cache=None, recurrent=False,
                output_hidden_states=None, return_dict=None, attention_mask=None, element_index=None, index=None,
                dropout_seed=None):
        """input_ids (B, T): symbols 0..vocab_size-1, and the silent gap id `vocab_size`.

        input_noise (B, T, vocab_size): noise added to the one-hot inputs. None: in training mode
            U[0, config.input_noise) is drawn; in eval mode no noise is added (deterministic).
        state: a SelectivBenchCache from an earlier call (use_cache=True); the pieces fed with the
            carried state give the outputs of one pass over the whole stream.
        use_cache: return the state after the last step (default: True when a state was passed).
        recurrent: run the per-token loop of every mixer's `step` instead of the chunked form
            (same outputs; the readable recurrence). A one-token piece always takes it.
        output_hidden_states: also return the input layer's output and every block's (both forms).
        return_dict: False returns a tuple of the non-None outputs, as transformers models do.
        attention_mask: the models are causal, so a right-padding mask (ones, then zeros) needs no
            masking and is accepted when no state is returned; any other mask raises ValueError.
        element_index, index: dataset columns the metric and the collator use; not model inputs.
        dropout_seed (B,): one 32-bit seed per sample (the collator's); in training mode every dropout
            mask is then a function of (that seed, layer, position, feature), so the number of processes
            or the batch a sample lands in cannot change it. None: torch's generator, as nn.Dropout.
        """
        use_cache = state is not None if use_cache is None else use_cache
        return_dict = self.config.return_dict if return_dict is None else return_dict
        self._check_inputs(input_ids, input_noise, state, attention_mask, use_cache, recurrent, dropout_seed)
        if input_noise is None and self.training and self.config.input_noise > 0:
            input_noise = torch.rand(*input_ids.shape, self.config.vocab_size, device=input_ids.device)
            input_noise = input_noise * self.config.input_noise
        x = self.embed(input_ids, input_noise)
        states = list(state) if state is not None else [None] * len(self.layers)
        self._seed_dropout(dropout_seed)
        try:
            if x.shape[0] == 0 or x.shape[1] == 0:  # nothing to mix: the state stays as it is
                hidden = [x] * (len(self.layers) + 1)
            elif recurrent or (x.shape[1] == 1 and self._can_step):
                x, hidden = self._recurrent(x, states, dropout_seed)
            else:
                hidden = [x]
                for i, layer in enumerate(self.layers):
                    x, states[i] = layer(x, states[i])
                    hidden.append(x)
        finally:
            self._seed_dropout(None)
        out = SelectivBenchModelOutput(last_hidden_state=x,
                                       hidden_states=tuple(hidden) if output_hidden_states else None,
                                       state=SelectivBenchCache(states) if use_cache else None)
        return out if return_dict else out.to_tuple()

    def _recurrent(self, x, states, dropout_seed=None):
        """The per-token loop; fills `states` in place. Returns the last hidden states and every layer's."""
        per_layer = [[] for _ in range(len(self.layers) + 1)]
        for t, x_t in enumerate(x.unbind(1)):
            self._seed_dropout(dropout_seed, position=t)  # the masks of the chunked form's step t
            per_layer[0].append(x_t)
            for i, layer in enumerate(self.layers):
                x_t, states[i] = layer.step(x_t, states[i])
                per_layer[i + 1].append(x_t)
        hidden = [torch.stack(steps, 1) for steps in per_layer]
        return hidden[-1], hidden

    def _check_inputs(self, input_ids, input_noise, state, attention_mask, use_cache, recurrent=False,
                      dropout_seed=None):
        """One clear error before any work."""
        V = self.config.vocab_size
        if recurrent and not self._can_step:
            raise ValueError(f"recurrent=True is invalid for mixer {self.config.mixer!r}: it has no step (a parallel "
                             "form only); allowed recurrent=False")
        if not torch.is_tensor(input_ids) or input_ids.dim() != 2 or input_ids.is_floating_point():
            raise ValueError(f"input_ids={_describe(input_ids)} is invalid: allowed an integer tensor (batch, time)")
        if input_ids.numel() and (input_ids.min() < 0 or input_ids.max() > V):
            bad = input_ids[(input_ids < 0) | (input_ids > V)][0].item()
            raise ValueError(f"input_ids contains {bad}: allowed 0..{V - 1} (symbols, vocab_size={V}) "
                             f"and {V} (the silent gap id)")
        if input_noise is not None and (not torch.is_tensor(input_noise)
                                        or tuple(input_noise.shape) != (*input_ids.shape, V)):
            raise ValueError(f"input_noise={_describe(input_noise)} is invalid: allowed a tensor of shape "
                             f"{(*input_ids.shape, V)} (batch, time, vocab_size)")
        if dropout_seed is not None and (not torch.is_tensor(dropout_seed) or dropout_seed.is_floating_point()
                                         or tuple(dropout_seed.shape) != (input_ids.shape[0],)):
            raise ValueError(f"dropout_seed={_describe(dropout_seed)} is invalid: allowed an integer tensor of shape "
                             f"{(input_ids.shape[0],)} (one seed per sample)")
        if state is not None:
            if not isinstance(state, SelectivBenchCache) or len(state) != len(self.layers):
                raise ValueError(f"state={_describe(state)} is invalid: allowed a SelectivBenchCache of "
                                 f"{len(self.layers)} layers returned with use_cache=True")
            if state.batch_size() not in (None, input_ids.shape[0]):
                raise ValueError(f"state batch size {state.batch_size()} is invalid: allowed the batch size of "
                                 f"input_ids, {input_ids.shape[0]}")
        if attention_mask is not None:
            mask = torch.as_tensor(attention_mask, device=input_ids.device)
            right_padding = mask.shape == input_ids.shape and bool(((mask == 0) | (mask == 1)).all()) and bool(
                (mask[:, 1:] <= mask[:, :-1]).all())
            if not right_padding or (use_cache and not bool(mask.all())):
                raise ValueError("attention_mask is invalid: allowed None, or ones then zeros per row (right "
                                 "padding: the models are causal, padded steps never reach earlier outputs), "
                                 "and all ones when use_cache returns the state")


def _describe(value):
    return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}" if torch.is_tensor(value) else repr(value)


class SelectivBenchForTokenClassification(SelectivBenchPreTrainedModel):
    def __init__(self, config: SelectivBenchConfig):
        super().__init__(config)
        self.model = SelectivBenchModel(config)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        self.post_init()

    def forward(self, input_ids, labels=None, input_noise=None, state=None, use_cache=None, recurrent=False,
                output_hidden_states=None, return_dict=None, attention_mask=None, element_index=None, index=None,
                num_items_in_batch=None, dropout_seed=None):
        """As `SelectivBenchModel.forward`, plus labels (B, T) with IGNORE_INDEX (-100) at skipped steps:
        the loss is the mean cross-entropy over the other steps (0.0 when every step is ignored), or
        their summed cross-entropy over `num_items_in_batch` when given (Trainer's count of the
        labelled steps of the whole optimizer step)."""
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if labels is not None and (not torch.is_tensor(labels) or labels.shape != input_ids.shape):
            raise ValueError(f"labels={_describe(labels)} is invalid: allowed a tensor shaped like input_ids, "
                             f"{tuple(input_ids.shape)}")
        out = self.model(input_ids, input_noise=input_noise, state=state, use_cache=use_cache, recurrent=recurrent,
                         output_hidden_states=output_hidden_states, return_dict=True, attention_mask=attention_mask,
                         dropout_seed=dropout_seed)
        logits = self.classifier(out.last_hidden_state)
        loss = None if labels is None else token_loss(logits, labels, num_items_in_batch)
        result = SelectivBenchTokenClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                                    state=out.state)
        return result if return_dict else result.to_tuple()


def token_loss(logits, labels, num_items=None):
    """Mean cross-entropy over the steps whose label is not IGNORE_INDEX (or the sum over `num_items`);
    0.0 (with zero gradients) when there are none, where a plain mean would give 0 / 0 = nan."""
    total = F.cross_entropy(at_least_fp32(logits)[0].flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX,
                            reduction="sum")
    count = (labels != IGNORE_INDEX).sum() if num_items is None else torch.as_tensor(num_items, device=total.device)
    return total / count.clamp_min(1)
