"""Any transformers model as the backbone (`--backbone MODEL_TYPE|CONFIG.json|HUB_ID`), trained from scratch.

The task's input encoding (one-hot, gap = zeros, noise: the same `OneHotInput` as the SelectivBench
models) goes into the backbone as `inputs_embeds`; its last hidden state goes into a linear
token-classification head, with the same loss. Only the backbone's config is read (a model type,
a local config.json, or a Hub id's config.json with `trust_remote_code=False`): never its weights,
never its code. The size flags map onto the config's own fields (`SIZE_FIELDS`); `--backbone-kwargs`
(a JSON object) sets any other field.

Checkpoints load with selectivbench installed (`BackboneForTokenClassification.from_pretrained` or
the Auto classes once `selectivbench` is imported); they carry no remote code.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch
import torch.nn as nn
from transformers import (AutoConfig, AutoModel, AutoModelForTokenClassification, PretrainedConfig,
                          PreTrainedModel)
from transformers import initialization as init
from transformers.modeling_outputs import TokenClassifierOutput
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_MAPPING

from .errors import ParameterError
from .models import SelectivBenchForTokenClassification
from .models.modeling_selectivbench import OneHotInput, token_loss

# size flag -> the config fields it sets, where the backbone's config has them
SIZE_FIELDS = {"d_model": ("hidden_size", "d_model", "n_embd"),
               "n_layers": ("num_hidden_layers", "n_layer", "num_layers"),
               "n_heads": ("num_attention_heads", "num_heads", "n_head"),
               "d_state": ("state_size", "d_state")}
# fields some config classes compute from hidden_size (llama's head_dim, mamba's intermediate_size and
# time_step_rank): a saved value would belong to the old sizes, so those are recomputed
DERIVED_FIELDS = ("head_dim", "intermediate_size", "time_step_rank")


def _bad(value, reason: str):
    raise ParameterError(f"backbone={value!r} is invalid: {reason}")


def base_config_dict(backbone: str) -> dict:
    """The backbone's config as a dict: a model type transformers knows, a config.json, or a Hub id."""
    if backbone in CONFIG_MAPPING:
        return {"model_type": backbone}
    path = Path(backbone)
    if backbone.endswith(".json") or path.is_file():
        try:
            found = json.loads(path.read_text())
            assert isinstance(found, dict) and found.get("model_type") in CONFIG_MAPPING
        except (OSError, ValueError, AssertionError):
            _bad(backbone, "allowed a readable config.json whose model_type transformers knows")
        return found
    try:  # a Hub id: its config only, never its code
        return AutoConfig.from_pretrained(backbone, trust_remote_code=False).to_dict()
    except (OSError, ValueError) as err:  # not cached/reachable, a bad repo id, unreadable, or needs its own code
        _bad(backbone, "allowed a model type transformers knows (e.g. mamba, mamba2, llama), a config.json or a "
                       f"Hub model id whose config loads without remote code ({type(err).__name__}: "
                       f"{' '.join(str(err).split())[:200]})")


def backbone_config(backbone: str, kwargs_json: str | None, d_model: int, n_layers: int, n_heads: int,
                    d_state: int) -> PretrainedConfig:
    """The backbone's transformers config at the run's sizes; ParameterError before any work if it cannot be."""
    try:
        extra = json.loads(kwargs_json) if kwargs_json else {}
        assert isinstance(extra, dict)
    except (ValueError, AssertionError):
        raise ParameterError(f"backbone_kwargs={kwargs_json!r} is invalid: allowed a JSON object of config "
                             "fields") from None
    found = base_config_dict(backbone)
    cls = CONFIG_MAPPING[found["model_type"]]
    defaults = cls().to_dict()
    try:
        wider = cls(**{n: 2 * defaults[n] for n in SIZE_FIELDS["d_model"] if isinstance(defaults.get(n), int)})
        derived = {f for f in DERIVED_FIELDS if f in defaults and wider.to_dict()[f] != defaults[f]}
    except Exception:  # a class that checks its sizes against each other (mamba2): nothing derived from one
        derived = set()
    fields = {k: v for k, v in found.items() if k not in derived}
    sizes = {"d_model": d_model, "n_layers": n_layers, "n_heads": n_heads, "d_state": d_state}
    for flag, value in sizes.items():
        fields.update({name: value for name in SIZE_FIELDS[flag] if name in defaults})
    if "expand" in defaults and "head_dim" in defaults and "num_heads" in defaults:  # mamba2: heads split d_inner
        fields["head_dim"] = fields.get("expand", defaults["expand"]) * d_model // n_heads
    fields["vocab_size"] = 2  # the token embedding is never used (inputs_embeds): the smallest valid one
    for token in ("pad_token_id", "bos_token_id", "eos_token_id"):  # ids within that vocabulary
        if isinstance(fields.get(token, defaults.get(token)), int):
            fields[token] = 0
    unknown = sorted(k for k in extra if k not in defaults and k not in found)
    if unknown:
        raise ParameterError(f"backbone_kwargs={kwargs_json!r} is invalid: allowed fields of the "
                             f"{found['model_type']} config ({', '.join(unknown)} is not one)")
    fields.update(extra)
    fields.pop("model_type", None)
    fields.pop("transformers_version", None)
    fields.pop("auto_map", None)  # it names the source's own code, which is never read: the checkpoint has none
    try:
        config = cls(**fields)
    except Exception as err:
        _bad(backbone, f"its config does not take these sizes ({type(err).__name__}: {' '.join(str(err).split())})")
    model_class = _base_model_class(config, backbone)
    if "inputs_embeds" not in inspect.signature(model_class.forward).parameters:
        _bad(backbone, f"allowed a model whose forward takes inputs_embeds ({model_class.__name__} has none)")
    return config


def _base_model_class(config, backbone):
    try:
        return MODEL_MAPPING[type(config)]
    except KeyError:
        _bad(backbone, f"allowed a model type with a base model in transformers ({config.model_type} has none)")


class BackboneConfig(PretrainedConfig):
    """A transformers backbone (`backbone`: its config as a dict) between SelectivBench's one-hot input
    layer and a token-classification head. `backbone_source`: the --backbone value it came from."""

    model_type = "selectivbench_backbone"

    def __init__(self, backbone: dict | None = None, backbone_source: str | None = None, vocab_size: int = 41,
                 input_noise: float = 0.0, num_labels: int | None = None, **kwargs):
        self.backbone = backbone if backbone is not None else {"model_type": "llama"}
        self.backbone_source = backbone_source
        self.vocab_size = vocab_size
        self.input_noise = input_noise
        if num_labels is None:
            num_labels = len(kwargs["id2label"]) if kwargs.get("id2label") else 2
        super().__init__(num_labels=num_labels, **kwargs)

    @classmethod
    def for_task(cls, task, backbone: PretrainedConfig, source: str) -> "BackboneConfig":
        states = list(task.grammar.states)
        return cls(backbone=backbone.to_dict(), backbone_source=source, vocab_size=task.params.vocab_size,
                   input_noise=task.params.noise, num_labels=len(states), id2label=dict(enumerate(states)),
                   label2id={s: i for i, s in enumerate(states)})

    def backbone_config(self) -> PretrainedConfig:
        fields = dict(self.backbone)
        return CONFIG_MAPPING[fields.pop("model_type")](**fields)  # transformers' own classes: no remote code

    # what the run records, the evaluation table and the model card read
    @property
    def mixer(self) -> str:
        return f"backbone:{self.backbone['model_type']}"

    @property
    def d_model(self) -> int:
        return self.backbone_config().hidden_size

    @property
    def n_layers(self) -> int:
        return self.backbone_config().num_hidden_layers

    @property
    def n_heads(self):
        return self.backbone.get("num_attention_heads", self.backbone.get("num_heads", "-"))

    @property
    def d_state(self):
        return self.backbone.get("state_size", "-")

    @property
    def norm(self) -> str:
        return f"{self.backbone['model_type']}'s own norm"


class BackboneForTokenClassification(PreTrainedModel):
    config_class = BackboneConfig
    base_model_prefix = "backbone_model"
    main_input_name = "input_ids"
    accepts_loss_kwargs = True

    def __init__(self, config: BackboneConfig):
        super().__init__(config)
        inner = config.backbone_config()
        self.embed = OneHotInput(config.vocab_size, inner.hidden_size)
        self.backbone = AutoModel.from_config(inner, trust_remote_code=False)
        self.classifier = nn.Linear(inner.hidden_size, config.num_labels)
        self.post_init()

    def _init_weights(self, module):
        if module is self.classifier:
            init.normal_(module.weight, std=module.in_features ** -0.5)
            init.zeros_(module.bias)
        elif hasattr(module, "init_own_weights"):
            module.init_own_weights(init)

    def no_weight_decay_names(self) -> set[str]:
        """As `SelectivBenchForTokenClassification.no_weight_decay_names`: parameters of fewer than two
        dimensions, and the recurrence parameters transformers' SSM layers name as mamba-ssm does."""
        return {name for name, p in self.named_parameters()
                if p.ndim < 2 or name.rpartition(".")[2] in ("A_log", "dt_bias", "D")}

    def forward(self, input_ids, labels=None, input_noise=None, attention_mask=None, element_index=None, index=None,
                num_items_in_batch=None, return_dict=None, dropout_seed=None):
        """As `SelectivBenchForTokenClassification.forward` without states: input_ids (B, T) with the gap id
        `vocab_size`; input_noise (B, T, vocab_size), drawn in training mode when None; labels with -100.
        dropout_seed is not used: a backbone's dropout is transformers' own (its masks follow the process
        count; the N-process promise holds for backbones with dropout 0)."""
        if input_noise is None and self.training and self.config.input_noise > 0:
            input_noise = torch.rand(*input_ids.shape, self.config.vocab_size, device=input_ids.device)
            input_noise = input_noise * self.config.input_noise
        hidden = self.backbone(inputs_embeds=self.embed(input_ids, input_noise)).last_hidden_state
        logits = self.classifier(hidden)
        loss = None if labels is None else token_loss(logits, labels, num_items_in_batch)
        return TokenClassifierOutput(loss=loss, logits=logits)


AutoConfig.register(BackboneConfig.model_type, BackboneConfig, exist_ok=True)
AutoModelForTokenClassification.register(BackboneConfig, BackboneForTokenClassification, exist_ok=True)


def model_class_of(checkpoint) -> type:
    """The class a checkpoint folder was saved from (by its config.json's model_type)."""
    try:
        model_type = json.loads((Path(checkpoint) / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        model_type = None
    return BackboneForTokenClassification if model_type == BackboneConfig.model_type \
        else SelectivBenchForTokenClassification
