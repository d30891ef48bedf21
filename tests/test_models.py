"""Every mixer: chunked = recurrent, causal, trainable, saved and reloaded (also as remote code)."""
import json
from pathlib import Path

import pytest
import torch

from selectivbench.models import (MIXERS, SelectivBenchConfig, SelectivBenchForTokenClassification,
                                  SelectivBenchModel, taxonomy_markdown)
from selectivbench.models.modeling_selectivbench import OneHotInput

from helpers import assert_loads_without_selectivbench

V, LABELS = 6, 9


def make(mixer, **kw):
    torch.manual_seed(0)
    cfg = SelectivBenchConfig(mixer=mixer, vocab_size=V, num_labels=LABELS, d_model=32, n_layers=2, n_heads=4,
                              d_state=8, chunk_size=8, **kw)
    return SelectivBenchForTokenClassification(cfg).eval()


def batch(T=37, B=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, V + 1, (B, T), generator=g)  # V is the silent gap id
    noise = torch.rand(B, T, V, generator=g) * 0.2
    return ids, noise


@pytest.mark.parametrize("mixer", MIXERS)
def test_chunked_and_recurrent_forms_agree(mixer):
    model = make(mixer)
    ids, noise = batch()
    with torch.no_grad():
        parallel = model(ids, input_noise=noise).logits
        recurrent = model(ids, input_noise=noise, recurrent=True).logits
        # a stream fed in two pieces, carrying the state
        first = model(ids[:, :20], input_noise=noise[:, :20], use_cache=True)
        second = model(ids[:, 20:], input_noise=noise[:, 20:], state=first.state)
    scale = parallel.abs().max()
    assert scale > 0.1
    assert torch.allclose(parallel, recurrent, atol=2e-5 * scale, rtol=0)
    assert torch.allclose(torch.cat([first.logits, second.logits], 1), recurrent, atol=2e-5 * scale, rtol=0)


@pytest.mark.parametrize("mixer", MIXERS)
def test_causal_outputs_up_to_t_ignore_later_inputs(mixer):
    model = make(mixer)
    ids, noise = batch(T=40)
    t = 23
    ids2, noise2 = ids.clone(), noise.clone()
    ids2[:, t + 1:] = (ids2[:, t + 1:] + 3) % (V + 1)
    noise2[:, t + 1:] = 0.15
    with torch.no_grad():
        a = model(ids, input_noise=noise).logits
        b = model(ids2, input_noise=noise2).logits
    assert torch.equal(a[:, : t + 1], b[:, : t + 1]) or torch.allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-6)
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:], atol=1e-3)


@pytest.mark.parametrize("mixer", MIXERS)
def test_gradients_reach_every_parameter(mixer):
    model = make(mixer).train()
    ids, noise = batch()
    labels = torch.randint(0, LABELS, ids.shape)
    labels[:, -3:] = -100
    ids[:, 1::3] = V  # silent gap steps: the first layer sees only the input bias there
    out = model(ids, input_noise=noise, labels=labels)
    out.loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing
    # no exploding gradient at init (a zero gap input through a norm once sent back 1e14)
    assert max(p.grad.norm().item() for p in model.parameters()) < 100
    assert out.loss.item() == pytest.approx(
        torch.nn.functional.cross_entropy(out.logits[:, :-3].reshape(-1, LABELS), labels[:, :-3].reshape(-1)).item(),
        rel=1e-6)


@pytest.mark.parametrize("mixer", MIXERS)
def test_mixed_precision_trains_and_matches_float32(mixer):
    """Under bf16 autocast (Accelerate's --mixed_precision bf16) every mixer runs forward and
    backward, its chunked and recurrent forms agree, and both stay near the float32 model:
    recurrences run in float32 inside, so only the bf16 projections round."""
    model = make(mixer)
    ids, noise = batch()
    reference = model(ids, input_noise=noise).logits.detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, input_noise=noise, labels=torch.zeros_like(ids))
        out.loss.backward()
        with torch.no_grad():
            recurrent = model(ids, input_noise=noise, recurrent=True).logits.float()
    scale = reference.abs().max()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert (out.logits.float() - reference).abs().max() < 0.05 * scale
    assert (recurrent - out.logits.float()).abs().max() < 0.05 * scale


def test_input_layer_is_one_hot_plus_noise_through_a_linear_map():
    torch.manual_seed(0)
    layer = OneHotInput(V, 16)
    ids, noise = batch(T=11)
    one_hot = torch.nn.functional.one_hot(ids, V + 1)[..., :V].float()  # the gap id's vector is zero
    torch.nn.init.normal_(layer.weight)
    torch.nn.init.normal_(layer.bias)
    expected = (one_hot + noise) @ layer.weight.t() + layer.bias
    assert torch.allclose(layer(ids, noise), expected, atol=1e-5)
    gap = ids == V
    assert gap.any() and torch.allclose(layer(ids)[gap], layer.bias.expand(int(gap.sum()), -1))


def test_model_draws_its_own_noise_when_given_none():
    model = make("gru", input_noise=0.2)
    ids, _ = batch()
    with torch.no_grad():
        a, b = model(ids).logits, model(ids).logits
        c, d = model(ids, input_noise=torch.zeros(*ids.shape, V)).logits, make("gru")(ids).logits
    assert not torch.allclose(a, b) and torch.allclose(c, d, atol=1e-6)


@pytest.mark.parametrize("field, value, message", [
    ("mixer", "lstm", "mixer='lstm' is invalid: allowed one of"),
    ("d_model", 30, "d_model=30 is invalid: allowed a multiple of n_heads=4"),
    ("n_layers", 0, "n_layers=0 is invalid: allowed an integer >= 1"),
    ("input_noise", -0.1, r"input_noise=-0.1 is invalid: allowed \[0.0, 1.0\]"),
    ("norm", "batchnorm", "norm='batchnorm' is invalid"),
    ("num_labels", 1, "num_labels=1 is invalid"),
])
def test_bad_config_values_raise_one_clear_error(field, value, message):
    with pytest.raises(ValueError, match=message):
        SelectivBenchConfig(**{"mixer": "gla", "d_model": 32, "n_heads": 4, field: value})


def test_taxonomy_has_a_row_per_mixer():
    table = taxonomy_markdown()
    assert all(f"| `{m}` |" in table for m in MIXERS)
    assert "identity plus low rank" in table and "fixed (diagonal, time-invariant)" in table


@pytest.mark.parametrize("mixer", MIXERS)
def test_save_and_load_round_trip(mixer, tmp_path):
    from transformers import AutoModel, AutoModelForTokenClassification

    model = make(mixer)
    ids, noise = batch()
    model.save_pretrained(tmp_path)
    again = AutoModelForTokenClassification.from_pretrained(tmp_path).eval()
    assert type(again) is SelectivBenchForTokenClassification
    with torch.no_grad():
        assert torch.equal(model(ids, input_noise=noise).logits, again(ids, input_noise=noise).logits)
        base = AutoModel.from_pretrained(tmp_path).eval()
        assert type(base) is SelectivBenchModel
        assert torch.equal(base(ids, input_noise=noise).last_hidden_state,
                           model.model(ids, input_noise=noise).last_hidden_state)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert set(auto_map) == {"AutoConfig", "AutoModel", "AutoModelForTokenClassification"}


def test_checkpoint_loads_as_remote_code_without_selectivbench(tmp_path):
    model = make("gated_deltanet")
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    import selectivbench.models as pkg

    # every mixer and kernel travels with it (taxonomy.py is the CLI's table, not the model's)
    modules = {p.name for p in Path(pkg.__file__).parent.glob("*.py")} - {"__init__.py", "taxonomy.py"}
    assert modules <= {p.name for p in ckpt.glob("*.py")}
    assert_loads_without_selectivbench(ckpt, model, tmp_path, V)
