"""Rules the model keeps itself: which parameters weight decay leaves alone, and the layout each
state family holds."""
import pytest
import torch
import torch.nn as nn

from selectivbench.models import (MIXERS, DiagonalState, MatrixState, Mixer, PluginError, SelectivBenchConfig,
                                  SelectivBenchForTokenClassification, register_mixer)
from selectivbench.training.loop import param_groups

# the recurrence's own parameters of two or more dimensions (decay rates, modes): never decayed
RECURRENCE_MATRICES = {"s4d": {"log_A_real", "A_imag"}, "mamba": {"A_log"}}
# every mixer's declared recurrence parameters (those of one dimension are exempt anyway)
DECLARED = {"s4d": ("log_dt", "log_A_real", "A_imag", "D"), "mamba": ("A_log", "D"),
            "mamba2": ("A_log", "dt_bias", "D"), "gated_deltanet": ("A_log", "dt_bias"),
            "gated_deltaproduct": ("A_log", "dt_bias")}


def make(mixer):
    torch.manual_seed(0)
    config = SelectivBenchConfig(mixer=mixer, vocab_size=6, num_labels=9, d_model=32, n_layers=2, n_heads=4,
                                 d_state=8, chunk_size=8)
    return SelectivBenchForTokenClassification(config)


def groups_by_name(model, weight_decay=0.1):
    """{decayed names}, {names left alone}, from the optimizer groups train builds."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    decay, keep = param_groups(model, weight_decay)
    assert (decay["weight_decay"], keep["weight_decay"]) == (weight_decay, 0.0)
    return {name_of[id(p)] for p in decay["params"]}, {name_of[id(p)] for p in keep["params"]}


@pytest.mark.parametrize("mixer", MIXERS)
def test_each_mixers_recurrence_parameters_are_in_the_no_decay_group(mixer):
    model = make(mixer)
    decayed, kept = groups_by_name(model)
    params = dict(model.named_parameters())
    assert decayed.isdisjoint(kept) and decayed | kept == set(params)  # every parameter once
    for layer in range(2):
        prefix = f"model.layers.{layer}.mixer."
        assert {f"{prefix}{n}" for n in DECLARED.get(mixer, ())} <= kept
        matrices_kept = {n[len(prefix):] for n in kept if n.startswith(prefix) and params[n].ndim >= 2}
        assert matrices_kept == RECURRENCE_MATRICES.get(mixer, set())
    # outside the declared ones: exactly the parameters of fewer than two dimensions are left alone
    assert {n for n in kept if n.rpartition(".")[2] not in DECLARED.get(mixer, ())} == \
        {n for n, p in params.items() if p.ndim < 2 and n.rpartition(".")[2] not in DECLARED.get(mixer, ())}
    assert model.no_weight_decay_names() == kept


class DecayRateMixer(Mixer):
    """h_t = sigmoid(L) * h_{t-1} + W x_t, with its decay logits L a matrix (one per channel pair)."""

    no_weight_decay = ("logits",)

    def __init__(self, config):
        super().__init__()
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.logits = nn.Parameter(torch.zeros(config.d_model, 1))

    def forward(self, x, state=None):
        h = torch.zeros_like(x[:, 0]) if state is None else state.memory
        out = []
        for b_t in self.proj(x).unbind(1):
            h = self.logits[:, 0].sigmoid() * h + b_t
            out.append(h)
        return torch.stack(out, 1), DiagonalState(h, seen=x.shape[1])


class MissingNameMixer(DecayRateMixer):
    no_weight_decay = ("logits", "gamma")


def test_a_plugin_names_its_own_no_decay_parameters():
    register_mixer("decayrate", DecayRateMixer)
    decayed, kept = groups_by_name(make("decayrate"))
    assert {"model.layers.0.mixer.logits", "model.layers.1.mixer.logits"} <= kept
    assert "model.layers.0.mixer.proj.weight" in decayed and "model.layers.0.mixer.proj.bias" in kept


def test_a_no_decay_name_that_is_no_parameter_fails_when_the_model_is_built():
    register_mixer("missingname", MissingNameMixer)
    with pytest.raises(ValueError, match=r"MissingNameMixer\.no_weight_decay=\('logits', 'gamma'\) is invalid: "
                                         r"'gamma' is not one of its parameters; allowed names among "
                                         r"\['logits', 'proj.bias', 'proj.weight'\]"):
        make("missingname")


def test_a_no_decay_declaration_that_is_not_names_is_refused_by_resolution():
    bad = type("BadDeclaration", (DecayRateMixer,), {"no_weight_decay": "logits"})
    with pytest.raises(PluginError, match=r"no_weight_decay='logits' is invalid: allowed a tuple of its parameter "
                                          r"names"):
        register_mixer("baddeclaration", bad)


def test_a_mamba_backbones_decay_rates_stay_out_of_weight_decay():
    from selectivbench.backbone import BackboneConfig, BackboneForTokenClassification, backbone_config

    inner = backbone_config("mamba", None, 16, 1, 2, 4)
    model = BackboneForTokenClassification(BackboneConfig(backbone=inner.to_dict(), vocab_size=6, num_labels=5))
    decayed, kept = groups_by_name(model)
    a_log = [n for n in kept if n.endswith(".A_log")]
    assert a_log and all(dict(model.named_parameters())[n].ndim == 2 for n in a_log)
    assert any(n.endswith("in_proj.weight") for n in decayed)


@pytest.mark.parametrize("state, message", [
    (lambda: MatrixState(torch.zeros(2, 8)),
     "MatrixState memory of shape (2, 8) is invalid: allowed a tensor (batch, heads, key size, value size)"),
    (lambda: DiagonalState(torch.zeros(2, 4, 8, 8)),
     "DiagonalState memory of shape (2, 4, 8, 8) is invalid: allowed a tensor (batch, channels) or (batch, "
     "channels, state per channel)"),
    (lambda: DiagonalState(0.0), "DiagonalState memory of 0.0 is invalid: allowed a tensor"),
    (lambda: MatrixState(torch.zeros(2, 4, 8, 8), conv=torch.zeros(2, 3)),
     "MatrixState conv of shape (2, 3) is invalid: allowed None or a tensor (batch, channels, conv_size - 1)"),
])
def test_a_state_of_the_wrong_familys_layout_is_one_clear_error(state, message):
    with pytest.raises(ValueError) as err:
        state()
    assert str(err.value).startswith(message)


def test_each_family_keeps_its_layout():
    matrix = MatrixState(torch.zeros(2, 4, 8, 16), conv=torch.zeros(2, 5, 3), seen=7)
    diagonal = DiagonalState(torch.zeros(2, 32, 8, dtype=torch.complex64))
    assert [t.shape for t in matrix.tensors()] == [(2, 4, 8, 16), (2, 5, 3)] and matrix.seen == 7
    assert [t.shape for t in diagonal.tensors()] == [(2, 32, 8)] and diagonal.seen == 0
    assert DiagonalState(torch.zeros(2, 32)).tensors()[0].shape == (2, 32)


def test_every_config_field_is_documented_with_its_type_and_default():
    """As transformers' configs: 'd_state (`int`, *optional*, defaults to 16):', the default the signature has."""
    import inspect
    import re

    doc = SelectivBenchConfig.__doc__
    fields = [p for p in inspect.signature(SelectivBenchConfig.__init__).parameters.values()
              if p.name not in ("self", "kwargs")]
    for field in fields:
        entry = re.search(rf"\n        {field.name} \(`[^`]+`, \*optional\*(?:, defaults to `?([^`\n]+?)`?)?\):\n", doc)
        assert entry, field.name
        documented = entry.group(1)
        if field.default is None:
            assert documented is None or field.name == "num_labels", field.name
        else:
            assert documented == (f'"{field.default}"' if isinstance(field.default, str) else str(field.default)), \
                field.name
    assert len(re.findall(r"\n        \w+ \(`", doc)) == len(fields)
