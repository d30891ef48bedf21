"""Every mixer: chunked = recurrent = streamed in pieces, causal, trainable, saved and reloaded
(also as remote code); the model API's edges (empty batches, bad ids, ignored labels, arguments)."""
import json
import math
from pathlib import Path

import pytest
import torch

from selectivbench.models import (IGNORE_INDEX, MIXER_CLASSES, MIXERS, AttentionState, DiagonalState, MatrixState,
                                  Mixer, SelectivBenchCache, SelectivBenchConfig,
                                  SelectivBenchForTokenClassification, SelectivBenchModel, taxonomy_markdown)
from selectivbench.models.modeling_selectivbench import OneHotInput

from selectivbench.check_mixer import check_mixer

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
def test_every_builtin_passes_the_mixer_contract(mixer):
    """The contract `selectivbench check-mixer` holds any mixer to (one place: check_mixer.py): causal,
    step = forward and a stream in pieces = one pass (logits and gradients, float64), constant state
    (or a marked KV cache), bf16 autocast, bit-identical save/load. Pieces of 1, 3, 7, 64 and 11
    steps in a per-mixer random order: every form hands its state to every other, and pieces shorter
    than conv_size (4) hand on a conv window partly from earlier pieces."""
    results = check_mixer(mixer, pieces=_piece_sizes(85, seed=MIXERS.index(mixer)))
    assert [(r.name, r.figure) for r in results if r.passed is not True] == []
    assert len(results) == 6


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
    # typical error ~0.1-0.4% of the scale for every mixer; single tokens reach several % where a
    # head's output nearly cancels and its per-head RMSNorm scales the rounding up (gla: 7%)
    error = (out.logits.float() - reference).abs()
    assert error.mean() < 0.01 * scale and error.max() < 0.1 * scale
    assert (recurrent - out.logits.float()).abs().max() < 0.05 * scale


@pytest.mark.parametrize("mixer", MIXERS)
def test_recurrent_memory_stays_float32_under_bf16_autocast(mixer):
    """The carried memory of every recurrent mixer is float32 under autocast, chunked and step by step."""
    model = make(mixer)
    ids, _ = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        states = [model.model(ids, use_cache=True).state, model.model(ids, recurrent=True, use_cache=True).state]
    memories = [s.memory for state in states for s in state if hasattr(s, "memory")]
    assert len(memories) == (0 if mixer in ("transformer", "fox") else 2 * model.config.n_layers)
    assert all(m.dtype in (torch.float32, torch.complex64) for m in memories)


@pytest.mark.parametrize("mixer", MIXERS)
def test_a_model_cast_to_bf16_runs_and_continues_its_state(mixer):
    """model.to(torch.bfloat16) (or from_pretrained(dtype=...)): forward, then one step from the carried
    state, near the float32 model (s4d once failed: torch has no bfloat16 complex numbers)."""
    model = make(mixer)
    ids, noise = batch()
    with torch.no_grad():
        reference = model(ids, input_noise=noise).logits
        model = model.to(torch.bfloat16)
        out = model(ids[:, :-1], input_noise=noise[:, :-1].to(torch.bfloat16), use_cache=True)
        last = model(ids[:, -1:], input_noise=noise[:, -1:].to(torch.bfloat16), state=out.state).logits
    logits = torch.cat([out.logits, last], 1).float()
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()
    assert (logits - reference).abs().mean() < 0.05 * reference.abs().max()


def test_gru_keeps_a_long_memory_under_bf16_autocast():
    """Decays 1 - z of about 0.999 (a 1000-step memory): in bf16 they round to exactly 1 and the gru
    forgets nothing (its final state was 43% off); computed in float32 only the projections round."""
    model = make("gru")
    with torch.no_grad():
        for block in model.model.layers:
            half = block.mixer.zh_proj.bias.shape[0] // 2
            block.mixer.zh_proj.bias[:half] = -7.0  # z = sigmoid(-7 + ...) ~ 1e-3
    ids = torch.randint(0, V, (2, 1500))
    with torch.no_grad():
        reference = model.model(ids, use_cache=True).state[0].memory
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model.model(ids, use_cache=True).state[0].memory
    assert mixed.dtype == torch.float32
    assert (mixed - reference).norm() < 0.02 * reference.norm()


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


def test_model_draws_its_own_noise_in_training_mode_only():
    """Training mode draws U[0, input_noise) when no noise is passed; eval mode adds none, so it
    is deterministic and equals the model fed zero noise."""
    model = make("gru", input_noise=0.2)
    ids, _ = batch()
    with torch.no_grad():
        noiseless = make("gru")(ids).logits
        a, b = model.train()(ids).logits, model(ids).logits
        c, d = model.eval()(ids).logits, model(ids).logits
    assert not torch.allclose(a, b) and not torch.allclose(a, noiseless, atol=1e-3)
    assert torch.equal(c, d) and torch.allclose(c, noiseless, atol=1e-6)


@pytest.mark.parametrize("field, value, message", [
    ("mixer", "lstm", "mixer='lstm' is invalid: allowed one of"),
    ("d_model", 30, "d_model=30 is invalid: allowed a multiple of n_heads=4"),
    ("n_layers", 0, "n_layers=0 is invalid: allowed an integer >= 1"),
    ("n_layers", 2.0, "n_layers=2.0 is invalid: allowed an integer >= 1"),
    ("d_state", True, "d_state=True is invalid: allowed an integer >= 1"),
    ("input_noise", -0.1, r"input_noise=-0.1 is invalid: allowed a real number in \[0.0, 1.0\]"),
    ("input_noise", "0.2", r"input_noise='0.2' is invalid: allowed a real number in \[0.0, 1.0\]"),
    ("dropout", float("nan"), r"dropout=nan is invalid: allowed a real number in \[0.0, 1.0\)"),
    ("rope_theta", "1e4", r"rope_theta='1e4' is invalid: allowed a real number in \(0.0, inf\)"),
    ("time_step_max", 1e-4, r"time_step_max=0.0001 is invalid: allowed a real number in \[0.001, inf\)"),
    ("A_init_range", (16, 1), r"A_init_range=\(16, 1\) is invalid: allowed a pair \(low, high\)"),
    ("use_fast_kernels", 1, "use_fast_kernels=1 is invalid: allowed True or False"),
    ("use_short_conv", "yes", "use_short_conv='yes' is invalid: allowed True or False"),
    ("expand_v", 0, "expand_v=0 is invalid: allowed an integer >= 1"),
    ("expand_v", 1.5, "expand_v=1.5 is invalid: allowed an integer >= 1"),
    ("initializer_range", 0, r"initializer_range=0 is invalid: allowed a real number in \(0.0, inf\)"),
    ("norm", "batchnorm", "norm='batchnorm' is invalid"),
    ("num_labels", 1, "num_labels=1 is invalid"),
    # transformers reads head_dim before the fields are checked: it once divided by n_heads first
    ("n_heads", 0, "n_heads=0 is invalid: allowed an integer >= 1"),
    ("n_heads", None, "n_heads=None is invalid: allowed an integer >= 1"),
    ("n_heads", "4", "n_heads='4' is invalid: allowed an integer >= 1"),
])
def test_bad_config_values_raise_one_clear_error(field, value, message):
    with pytest.raises(ValueError, match=message):
        SelectivBenchConfig(**{"mixer": "gla", "d_model": 32, "n_heads": 4, field: value})


def test_taxonomy_has_a_row_per_mixer():
    table = taxonomy_markdown()
    assert all(f"| `{m}` |" in table for m in MIXERS)
    assert "identity plus low rank" in table and "fixed (diagonal, time-invariant)" in table


@pytest.mark.parametrize("mixer", MIXERS)
def test_every_own_init_runs(mixer):
    """transformers (remote code) skips the init of a module that holds no parameter directly, so a
    module's `init_own_weights` must sit on a module that does: FoX's forget-gate bias once stayed
    at 0 this way, instead of its linspace(1, 6)."""
    from transformers import AutoModelForTokenClassification

    class Calls:  # an `init` module that records what it is asked to set
        def __init__(self):
            self.made = []

        def __getattr__(self, fn):
            return lambda tensor, *args, **kw: self.made.append(fn)

    model = make(mixer)
    for name, module in model.named_modules():
        if hasattr(module, "init_own_weights") and not list(module.parameters(recurse=False)):
            calls = Calls()
            module.init_own_weights(calls)
            assert calls.made == [], f"{name}: init_own_weights would be skipped"
    if mixer == "fox":
        built = AutoModelForTokenClassification.from_config(model.config)
        for m in (model, built):
            for layer in m.model.layers:
                assert torch.allclose(layer.mixer.f_proj.bias, torch.tensor([1.0, 8 / 3, 13 / 3, 6.0]))


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


def test_config_json_is_written_with_the_whole_auto_map(tmp_path, monkeypatch):
    """transformers writes config.json (and with push_to_hub=True uploads it) inside its own
    save_pretrained: the AutoModel entry must be there then, not patched into the file after."""
    written = []
    save = SelectivBenchConfig.save_pretrained
    monkeypatch.setattr(SelectivBenchConfig, "save_pretrained",
                        lambda self, *a, **k: (written.append(dict(self.auto_map)), save(self, *a, **k))[1])
    make("gla").save_pretrained(tmp_path)
    assert written == [json.loads((tmp_path / "config.json").read_text())["auto_map"]]
    assert set(written[0]) == {"AutoConfig", "AutoModel", "AutoModelForTokenClassification"}


def test_checkpoint_loads_as_remote_code_without_selectivbench(tmp_path):
    model = make("gated_deltanet")
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt)
    import selectivbench.models as pkg

    # every mixer and kernel travels with it (taxonomy.py is the CLI's table, not the model's), and
    # the placeholder where a plugin's source would go
    modules = {p.name for p in Path(pkg.__file__).parent.glob("*.py")} - {"__init__.py", "taxonomy.py"}
    assert modules <= {p.name for p in ckpt.glob("*.py")}
    assert_loads_without_selectivbench(ckpt, model, tmp_path, V)


STATE_TYPES = {"transformer": AttentionState, "fox": AttentionState, "s4d": DiagonalState, "mamba": DiagonalState,
               "gru": DiagonalState}


def _piece_sizes(T, seed):
    sizes = [1, 3, 7, 64, T - 75]
    order = torch.randperm(len(sizes), generator=torch.Generator().manual_seed(seed)).tolist()
    return tuple(sizes[i] for i in order)


@pytest.mark.parametrize("mixer", MIXERS)
def test_a_streamed_state_is_the_familys_and_equals_one_passes(mixer):
    """The state after a stream fed in pieces has the family's type and equals one pass's (float64)."""
    model = make(mixer).double()
    ids, noise = batch(T=85, seed=4)
    noise = noise.double()
    bounds = torch.tensor((0,) + _piece_sizes(85, seed=MIXERS.index(mixer))).cumsum(0).tolist()
    with torch.no_grad():
        one_state = model(ids, input_noise=noise, use_cache=True).state
        state = None
        for a, b in zip(bounds[:-1], bounds[1:]):
            state = model(ids[:, a:b], input_noise=noise[:, a:b], state=state, use_cache=True).state
    assert isinstance(state, SelectivBenchCache) and state.seen == 85 and len(state) == 2
    assert all(type(s) is STATE_TYPES.get(mixer, MatrixState) for s in state)
    for s, s_one in zip(state, one_state):
        for t, t_one in zip(s.tensors(), s_one.tensors()):
            assert torch.allclose(t, t_one, atol=1e-10, rtol=0)


@pytest.mark.parametrize("mixer", MIXERS)
def test_every_mixer_follows_the_protocol_and_fla_names(mixer):
    model = make(mixer)
    mixer_module = model.model.layers[0].mixer
    assert isinstance(mixer_module, Mixer) and type(mixer_module) is MIXER_CLASSES[mixer]
    names = {n.split(".")[4] for n, _ in model.named_parameters() if n.startswith("model.layers.0.mixer.")}
    assert "o_proj" in names  # the output projection: one name across mixers (fla's)
    assert not names & {"out", "out_proj", "gate", "gate_proj", "forget", "qkv", "qkvg", "vg", "qk", "zh"}


@pytest.mark.parametrize("mixer", MIXERS)
@pytest.mark.parametrize("shape", [(2, 0), (0, 5), (0, 0)])
def test_empty_batches_give_empty_logits(mixer, shape):
    model = make(mixer)
    ids = torch.zeros(shape, dtype=torch.long)
    out = model(ids, labels=torch.full(shape, IGNORE_INDEX), use_cache=True, output_hidden_states=True)
    assert out.logits.shape == (*shape, LABELS) and out.loss.item() == 0.0
    assert len(out.hidden_states) == 3 and all(h.shape == (*shape, 32) for h in out.hidden_states)
    assert isinstance(out.state, SelectivBenchCache) and out.state.seen == 0


def test_a_float64_model_computes_its_loss_in_float64():
    model = make("gru").double()
    ids, noise = batch()
    labels = torch.randint(0, LABELS, ids.shape, generator=torch.Generator().manual_seed(3))
    labels[0, :5] = IGNORE_INDEX
    out = model(ids, labels=labels, input_noise=noise.double())
    expected = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
    assert out.loss.dtype == torch.float64 and out.loss.item() == pytest.approx(expected.item(), rel=1e-14)


@pytest.mark.parametrize("bad", [-1, V + 1])
def test_ids_outside_the_vocabulary_raise(bad):
    ids, _ = batch()
    ids[1, 5] = bad
    with pytest.raises(ValueError, match=rf"input_ids contains {bad}: allowed 0..{V - 1} \(symbols, "
                                         rf"vocab_size={V}\) and {V} \(the silent gap id\)"):
        make("gla")(ids)


def test_all_ignored_labels_give_a_zero_loss_and_zero_gradients():
    model = make("mamba2").train()
    ids, noise = batch()
    out = model(ids, input_noise=noise, labels=torch.full_like(ids, IGNORE_INDEX))
    out.loss.backward()
    assert out.loss.item() == 0.0
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_return_dict_false_gives_the_tuple_transformers_gives():
    model = make("deltanet")
    ids, noise = batch()
    labels = torch.randint(0, LABELS, ids.shape)
    with torch.no_grad():
        out = model(ids, input_noise=noise, labels=labels, use_cache=True)
        loss, logits, state = model(ids, input_noise=noise, labels=labels, use_cache=True, return_dict=False)
        (hidden,) = model.model(ids, input_noise=noise, return_dict=False)
    assert torch.equal(loss, out.loss) and torch.equal(logits, out.logits) and isinstance(state, SelectivBenchCache)
    assert torch.equal(hidden, model.model(ids, input_noise=noise).last_hidden_state)


def test_attention_mask_right_padding_is_honoured_and_any_other_mask_rejected():
    model = make("gated_deltanet")
    ids, noise = batch()
    mask = torch.ones_like(ids)
    mask[0, 30:] = 0  # right padding: causal outputs before it are unchanged
    with torch.no_grad():
        assert torch.equal(model(ids, input_noise=noise, attention_mask=mask).logits,
                           model(ids, input_noise=noise).logits)
    left = mask.flip(1)
    for bad, kwargs in [(left, {}), (mask, {"use_cache": True}), (mask[:, :5], {})]:
        with pytest.raises(ValueError, match="attention_mask is invalid: allowed None, or ones then zeros"):
            model(ids, attention_mask=bad, **kwargs)


def test_unknown_arguments_are_rejected():
    ids, _ = batch()
    with pytest.raises(TypeError, match="head_mask"):
        make("gla")(ids, head_mask=None)


def test_state_of_another_batch_size_is_rejected():
    model = make("gla")
    ids, _ = batch()
    state = model(ids, use_cache=True).state
    with pytest.raises(ValueError, match="state batch size 2 is invalid: allowed the batch size of input_ids, 1"):
        model(ids[:1], state=state)


@pytest.mark.parametrize("recurrent", [False, True])
def test_hidden_states_on_both_paths(recurrent):
    model = make("mamba")
    ids, noise = batch()
    with torch.no_grad():
        out = model.model(ids, input_noise=noise, output_hidden_states=True, recurrent=recurrent)
        chunked = model.model(ids, input_noise=noise, output_hidden_states=True)
    assert len(out.hidden_states) == 3 and torch.equal(out.hidden_states[-1], out.last_hidden_state)
    assert torch.equal(out.hidden_states[0], model.model.embed(ids, noise))
    for h, h_chunked in zip(out.hidden_states, chunked.hidden_states):
        assert torch.allclose(h, h_chunked, atol=1e-5)


def test_init_ranges_come_from_the_config():
    torch.manual_seed(0)
    cfg = SelectivBenchConfig(mixer="mamba2", d_model=32, n_heads=4, d_state=8, time_step_min=0.01,
                              time_step_max=0.02, A_init_range=(2.0, 3.0))
    mixer = SelectivBenchModel(cfg).layers[0].mixer
    dt = torch.nn.functional.softplus(mixer.dt_bias)
    assert ((dt > 0.01 - 1e-6) & (dt < 0.02 + 1e-6)).all()
    assert ((mixer.A_log.exp() >= 2.0 - 1e-5) & (mixer.A_log.exp() <= 3.0 + 1e-5)).all()
    again = SelectivBenchConfig.from_dict(cfg.to_dict())
    assert again.A_init_range == (2.0, 3.0)


def _mixer_parameters(mixer, **kw):
    cfg = SelectivBenchConfig(mixer=mixer, vocab_size=5, num_labels=3, d_model=16, n_heads=2, d_state=4, n_layers=1,
                              **kw)
    return {n: tuple(p.shape) for n, p in SelectivBenchModel(cfg).layers[0].mixer.named_parameters()}


# The square blocks without short convolutions these mixers had before the paper's fla configuration
# (recorded from that code at d_model=16, n_heads=2; its fused kvb_proj (34, 16) / qkv_proj (48, 16) are
# now fla's separate projections, of the same sizes): use_short_conv=False, expand_v=1 rebuilds them.
_DELTA = {"q_proj.weight": (16, 16), "k_proj.weight": (16, 16), "v_proj.weight": (16, 16), "b_proj.weight": (2, 16),
          "norm.weight": (8,), "o_proj.weight": (16, 16)}
_GATES = {"A_log": (2,), "dt_bias": (2,), "a_proj.weight": (2, 16), "g_proj.weight": (16, 16)}
SQUARE_BLOCKS = {
    "deltanet": _DELTA,
    "gated_deltanet": {**_DELTA, **_GATES},
    "gated_deltaproduct": {**_DELTA, **_GATES, "k_proj.weight": (32, 16), "v_proj.weight": (32, 16),
                           "b_proj.weight": (4, 16)},
    "retnet": {"q_proj.weight": (16, 16), "k_proj.weight": (16, 16), "v_proj.weight": (16, 16),
               "g_proj.weight": (16, 16), "norm.weight": (8,), "o_proj.weight": (16, 16)},
}


@pytest.mark.parametrize("mixer", sorted(SQUARE_BLOCKS))
def test_no_short_conv_and_expand_v_1_rebuild_the_square_blocks(mixer):
    assert _mixer_parameters(mixer, use_short_conv=False, expand_v=1) == SQUARE_BLOCKS[mixer]


def test_gla_without_conv_is_the_square_block_with_the_papers_key_width():
    # the old gla had fla's default expand_k = 0.5 (keys d_model / 2 wide); the paper's is 1
    assert _mixer_parameters("gla", use_short_conv=False, expand_v=1) == {
        "q_proj.weight": (16, 16), "k_proj.weight": (16, 16), "v_proj.weight": (16, 16), "g_proj.weight": (16, 16),
        "gk_proj.0.weight": (16, 16), "gk_proj.1.weight": (16, 16), "gk_proj.1.bias": (16,),
        "norm.weight": (8,), "o_proj.weight": (16, 16)}


# Parameters of the paper's fla / mamba-ssm layers at hidden_size 16, 2 heads (head_dim 8),
# conv_size 4, expand_v 2 (key_dim 16, value_dim 32, head_v_dim 16), counted by hand from the
# layers' __init__ (nn.Linear without bias, ShortConvolution without bias, norms with a weight only):
FLA_PARAMETERS = {
    # DeltaNet(expand_k=1, expand_v=2), use_gate=False: q_proj, k_proj 16*16 = 256 each, v_proj 16*32 = 512,
    # b_proj 16*2 = 32, q/k/v_conv1d 16*4 + 16*4 + 32*4 = 256, o_norm RMSNorm(16) 16, o_proj 32*16 = 512
    "deltanet": 256 + 256 + 512 + 32 + 256 + 16 + 512,
    # GatedDeltaNet(head_dim=8, expand_v=2), use_gate=True: DeltaNet's, plus a_proj 16*2 = 32, A_log 2,
    # dt_bias 2, g_proj 16*32 = 512 (o_norm is FusedRMSNormGated(16): 16)
    "gated_deltanet": 256 + 256 + 512 + 32 + 256 + 16 + 512 + 32 + 2 + 2 + 512,
    # GatedDeltaProduct(head_dim=8, expand_v=2, num_householder=4): q_proj 256, k_proj 16*16*4 = 1024,
    # v_proj 16*32*4 = 2048, b_proj 16*2*4 = 128, a_proj 32, A_log 2, dt_bias 2, q_conv1d 16*4 = 64,
    # k_conv1d 64*4 = 256, v_conv1d 128*4 = 512, g_proj 512, o_norm 16, o_proj 512
    "gated_deltaproduct": 256 + 1024 + 2048 + 128 + 32 + 2 + 2 + 64 + 256 + 512 + 512 + 16 + 512,
    # GatedLinearAttention(expand_k=1, expand_v=2): q_proj, k_proj 256 each, v_proj 512, g_proj 512,
    # convs 256, gk_proj Linear(16, 16, no bias) 256 + Linear(16, 16) 256 + 16, o_proj 512,
    # g_norm_swish_gate FusedRMSNormGated(16) 16
    "gla": 256 + 256 + 512 + 512 + 256 + 256 + 256 + 16 + 512 + 16,
    # MultiScaleRetention(expand_k=1, expand_v=2): q, k 256 each, v 512, g_proj 512, convs 256, o_proj 512,
    # g_norm_swish_gate 16 (the rotary embedding has no parameters)
    "retnet": 256 + 256 + 512 + 512 + 256 + 512 + 16,
    # Mamba2(16, d_state=4, d_conv=4, expand=2, headdim=8): d_inner 32, nheads 32/8 = 4, ngroups 1:
    # in_proj 16*(2*32 + 2*4 + 4) = 1216, conv1d over 32 + 2*4 = 40 channels 40*4 + bias 40 = 200,
    # dt_bias, A_log, D 4 each, norm RMSNormGated(32) 32, out_proj 32*16 = 512
    "mamba2": 1216 + 200 + 12 + 32 + 512,
}


@pytest.mark.parametrize("mixer", sorted(FLA_PARAMETERS))
def test_default_blocks_have_the_parameters_of_the_papers_fla_layers(mixer):
    householder = {"num_householder": 4} if mixer == "gated_deltaproduct" else {}
    shapes = _mixer_parameters(mixer, **householder)
    assert sum(math.prod(s) for s in shapes.values()) == FLA_PARAMETERS[mixer]
    if mixer != "mamba2":  # fla's names for the short convolutions, depthwise, no bias
        n = householder.get("num_householder", 1)
        assert {k: v for k, v in shapes.items() if "conv1d" in k} == {
            "q_conv1d.weight": (16, 1, 4), "k_conv1d.weight": (16 * n, 1, 4), "v_conv1d.weight": (32 * n, 1, 4)}


@pytest.mark.parametrize("mixer", sorted(SQUARE_BLOCKS) + ["gla"])
@pytest.mark.parametrize("short_conv", [True, False])
def test_state_layout_and_both_forms_with_and_without_the_short_conv(mixer, short_conv):
    """memory (B, H, d_head, expand_v d_head); conv: the q, k, v windows (conv_size - 1 steps) or None."""
    model = make(mixer, use_short_conv=short_conv, expand_v=3)
    ids, noise = batch(T=9)
    with torch.no_grad():
        out = model(ids, input_noise=noise, use_cache=True)
        recurrent = model(ids, input_noise=noise, recurrent=True, use_cache=True)
    assert torch.allclose(out.logits, recurrent.logits, atol=2e-5 * out.logits.abs().max(), rtol=0)
    n = 2 if mixer == "gated_deltaproduct" else 1
    for s, s_rec in zip(out.state, recurrent.state):
        assert tuple(s.memory.shape) == (2, 4, 8, 24)
        assert (s.conv is None) if not short_conv else tuple(s.conv.shape) == (2, 32 + n * (32 + 96), 3)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(s.tensors(), s_rec.tensors()))


def _papers_decoder_layer(m, x):
    """The paper's TransformerDecoderLayer.forward (models/ssm_models.py), written out here from its
    code with the mixer's weights: its Rotary (halves, y1 = x1 cos + x2 sin, base 1/theta powers),
    its RMSNorm (eps outside the root), attention, output norm and residual, SwiGLU with trainable beta."""
    B, T, D = x.shape
    H = m.n_heads

    def rms(norm, t):
        return t / (t.norm(2, dim=-1, keepdim=True) * t.shape[-1] ** -0.5 + 1e-8) * norm.weight

    def rope(t):  # (B, T, H, hd); its angles in float32, as its buffer
        hd = t.shape[-1]
        freqs = torch.outer(torch.arange(T), (1 / m.theta) ** (torch.arange(0, hd, 2) / hd))
        cos, sin = freqs.cos()[None, :, None], freqs.sin()[None, :, None]
        x1, x2 = t.chunk(2, dim=-1)
        return torch.cat((x1 * cos + x2 * sin, x1 * (-sin) + x2 * cos), 3)

    q, k, v = (proj(x).view(B, T, H, D // H) for proj in (m.q_proj, m.k_proj, m.v_proj))
    q, k = rope(rms(m.q_norm, q)), rope(rms(m.k_norm, k))
    att = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                           is_causal=True)
    x = x + rms(m.out_norm, m.o_proj(att.transpose(1, 2).reshape(B, T, D)))
    x1, x2 = m.ffn_in(x).chunk(2, dim=-1)
    return x + m.ffn_out(x1 * torch.sigmoid(m.swish_beta * x1) * x2)


def test_transformer_is_the_papers_decoder_layer():
    torch.manual_seed(0)
    cfg = SelectivBenchConfig(mixer="transformer", vocab_size=5, num_labels=3, d_model=16, n_heads=2, n_layers=1,
                              rope_theta=1000.0, linear_init="torch")
    mixer = SelectivBenchModel(cfg).double().layers[0].mixer
    with torch.no_grad():
        mixer.swish_beta.fill_(0.7)  # trainable in the paper: any value must give the same layer
        for norm in (mixer.q_norm, mixer.k_norm, mixer.out_norm):
            norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 11, 16, dtype=torch.float64)
    y, _ = mixer(x)
    # both take the rotary angles in float32: equal up to float32 rounding of an angle
    assert torch.allclose(y, _papers_decoder_layer(mixer, x), atol=1e-6, rtol=0)
    assert not torch.allclose(y, _papers_decoder_layer(mixer, x.flip(1)).flip(1), atol=1e-3)  # causal and ordered
    # its parameters: q, k, v, o with biases, two head norms and the output norm, linear1 (16 -> 128)
    # and linear2 (64 -> 16) with biases, and the swish beta
    shapes = _mixer_parameters("transformer")
    assert sum(math.prod(s) for s in shapes.values()) == 4 * (16 * 16 + 16) + 8 + 8 + 16 + 16 * 128 + 128 + 64 * 16 + 16 + 1


@pytest.mark.parametrize("linear_init", ["normal", "torch"])
def test_linear_init_is_the_papers_or_the_normal_one(linear_init):
    torch.manual_seed(0)
    cfg = SelectivBenchConfig(mixer="transformer", vocab_size=5, num_labels=3, d_model=64, n_heads=4, n_layers=1,
                              linear_init=linear_init)
    layer = SelectivBenchModel(cfg).layers[0].mixer.ffn_out  # 256 -> 64, with a bias
    bound = 256 ** -0.5
    if linear_init == "torch":  # nn.Linear's own: uniform in +-1/sqrt(fan_in), weights and bias alike
        assert layer.weight.abs().max() <= bound and layer.weight.std().item() == pytest.approx(bound / 3 ** 0.5, rel=0.02)
        assert layer.bias.abs().max() <= bound and layer.bias.abs().max() > bound / 2
    else:  # normal of std 1/sqrt(fan_in), zero bias
        assert layer.weight.std().item() == pytest.approx(bound, rel=0.02) and (layer.bias == 0).all()


@pytest.mark.parametrize("override, pattern", [
    ({"norm": "LayerNorm"}, r"norm='LayerNorm' is invalid: allowed one of \('layernorm', 'rmsnorm'\)"),
    ({"use_short_conv": "False"}, r"use_short_conv='False' is invalid: allowed True or False"),
    ({"chunk_size": 0}, r"chunk_size=0 is invalid: allowed an integer >= 1"),
])
def test_from_pretrained_overrides_are_checked_like_the_constructors_fields(tmp_path, override, pattern):
    """transformers sets from_pretrained's config overrides after the config's own checks: the model
    checks them again (a misspelt norm used to build an RMSNorm, the string 'False' a short conv)."""
    from transformers import AutoModelForTokenClassification

    make("deltanet").save_pretrained(tmp_path)
    for load in (SelectivBenchForTokenClassification.from_pretrained, AutoModelForTokenClassification.from_pretrained):
        with pytest.raises(ValueError, match=pattern):
            load(tmp_path, **override)
    assert SelectivBenchForTokenClassification.from_pretrained(tmp_path, norm="rmsnorm").model.layers[0].norm.eps == 1e-6


def bytes_kept_alive(state) -> int:
    """The bytes of the distinct storages behind a state's tensors: what holding it costs."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for s in state for t in s.tensors()}
    return sum(storages.values())


@pytest.mark.parametrize("mixer", MIXERS)
@pytest.mark.parametrize("conv_size, B", [(1, 2), (2, 1), (4, 2)])
def test_a_carried_state_holds_its_own_bytes_and_no_more(mixer, conv_size, B):
    """state.nbytes() is what the state keeps alive: a conv window sliced as a view of the whole input
    (conv_size 2 at batch 1, any batch at conv_size 1), or attention keys viewed from the q/k/v
    projection, used to keep a whole sequence's activations."""
    model = make(mixer, conv_size=conv_size)
    ids, _ = batch(T=64, B=B)
    with torch.no_grad():
        state = model.model(ids, use_cache=True).state
        assert bytes_kept_alive(state) == state.nbytes()
        state = model.model(ids[:, :5], state=state).state  # appended: attention buffers may double
        assert bytes_kept_alive(state) <= 2 * state.nbytes()
