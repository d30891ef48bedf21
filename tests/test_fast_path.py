"""The fast-path glue on CPU: layouts, gate conventions, argument order and state shapes.

flash-linear-attention's Triton kernels need a GPU, but fla ships pure-PyTorch references of the
same operators (`fla/ops/*/naive.py`, plain recurrences). Here they stand in for the kernels: the
model with use_fast_kernels=True calls fla's API through our glue, and must give the logits and
gradients of the same model on our own reference path. mamba-ssm cannot be installed without CUDA;
its stand-in is written from the contract in `selective_scan_fn`'s docstring (u, delta: (B, D, L);
A: (D, N); B, C: (B, N, L); last state (B, D, N)).
"""
import importlib.util
import os
import sys
import types

import pytest
import torch

from selectivbench.models import SelectivBenchConfig, SelectivBenchForTokenClassification
from selectivbench.models import chunked_delta_rule, chunked_linear_attention, chunked_selective_scan

FLA_MIXERS = ("retnet", "mamba2", "gla", "deltanet", "gated_deltanet", "gated_deltaproduct")


def _fla_naive(relpath):
    """Load one of fla's reference files by path: importing `fla.ops` would import Triton."""
    root = importlib.util.find_spec("fla").submodule_search_locations[0]
    spec = importlib.util.spec_from_file_location("fla_naive_" + relpath.replace("/", "_")[:-3],
                                                  os.path.join(root, relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rescale(q, scale):
    """fla's GLA and delta-rule references fix scale = K^-0.5; the kernels take it as an argument."""
    K = q.shape[-1]
    return q * ((K ** -0.5 if scale is None else scale) * K ** 0.5)


def _fake_fla():
    gla = _fla_naive("ops/gla/naive.py")
    simple_gla = _fla_naive("ops/simple_gla/naive.py")
    delta = _fla_naive("ops/delta_rule/naive.py")
    gated_delta = _fla_naive("ops/gated_delta_rule/naive.py")

    def chunk_gla(q, k, v, g, scale=None, initial_state=None, output_final_state=False):
        return gla.naive_recurrent_gla(_rescale(q, scale), k, v, g, initial_state, output_final_state)

    def chunk_simple_gla(q, k, v, g=None, scale=None, initial_state=None, output_final_state=False):
        return simple_gla.naive_recurrent_simple_gla(q, k, v, g, scale, initial_state, output_final_state)

    def chunk_delta_rule(q, k, v, beta, scale=None, initial_state=None, output_final_state=False):
        head_first = [x.transpose(1, 2) for x in (_rescale(q, scale), k, v, beta)]  # the reference is [B, H, T, .]
        o, state = delta.delta_rule_recurrence(*head_first, initial_state, output_final_state)
        return o.transpose(1, 2), state

    def chunk_gated_delta_rule(q, k, v, g, beta, scale=None, initial_state=None, output_final_state=False):
        return gated_delta.naive_recurrent_gated_delta_rule(q, k, v, beta, g, scale, initial_state,
                                                            output_final_state)

    return {"fla": {}, "fla.ops": {}, "fla.ops.gla": {"chunk_gla": chunk_gla},
            "fla.ops.simple_gla": {"chunk_simple_gla": chunk_simple_gla},
            "fla.ops.delta_rule": {"chunk_delta_rule": chunk_delta_rule},
            "fla.ops.gated_delta_rule": {"chunk_gated_delta_rule": chunk_gated_delta_rule}}


def _fake_mamba_ssm():
    def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False):
        assert D is None and z is None and delta_bias is None and not delta_softplus
        h, ys = u.new_zeros(u.shape[0], *A.shape), []
        for t in range(u.shape[-1]):
            h = torch.exp(delta[..., t, None] * A) * h + (delta[..., t] * u[..., t])[..., None] * B[:, None, :, t]
            ys.append((h * C[:, None, :, t]).sum(-1))
        out = torch.stack(ys, -1)
        return (out, h) if return_last_state else out

    return {"mamba_ssm": {}, "mamba_ssm.ops": {},
            "mamba_ssm.ops.selective_scan_interface": {"selective_scan_fn": selective_scan_fn}}


@pytest.fixture
def fast_path_on_cpu(monkeypatch):
    for name, attrs in {**_fake_fla(), **_fake_mamba_ssm()}.items():
        monkeypatch.setitem(sys.modules, name, types.SimpleNamespace(**attrs))
    calls = []

    def asked(x, fast):
        calls.append(fast)
        return fast

    monkeypatch.setattr(chunked_linear_attention, "use_fla", asked)
    monkeypatch.setattr(chunked_delta_rule, "use_fla", asked)
    monkeypatch.setattr(chunked_selective_scan, "use_mamba_ssm", asked)
    return calls


def _logits_and_grads(mixer, fast):
    torch.manual_seed(0)
    cfg = SelectivBenchConfig(mixer=mixer, vocab_size=6, num_labels=9, d_model=32, n_layers=2, n_heads=2,
                              d_state=8, chunk_size=8, use_fast_kernels=fast)
    model = SelectivBenchForTokenClassification(cfg)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 7, (2, 29), generator=g)
    out = model(ids, labels=torch.randint(0, 9, (2, 29), generator=g))
    out.loss.backward()
    return out.logits.detach(), {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("mixer", FLA_MIXERS + ("mamba",))
def test_fast_path_glue_matches_reference_path(mixer, fast_path_on_cpu):
    logits, grads = _logits_and_grads(mixer, fast=False)
    fast_logits, fast_grads = _logits_and_grads(mixer, fast=True)
    assert True in fast_path_on_cpu  # the glue was taken
    assert torch.allclose(fast_logits, logits, atol=1e-5 * logits.abs().max(), rtol=0)
    for name, g in grads.items():
        assert torch.allclose(fast_grads[name], g, atol=1e-4 * g.abs().max() + 1e-7, rtol=0), name


@pytest.mark.parametrize("mixer", FLA_MIXERS + ("mamba",))
def test_fast_path_carries_the_state_between_pieces(mixer, fast_path_on_cpu):
    """A stream fed in pieces through the fast path (initial_state in, final state out; mamba-ssm
    starts from zero, so the glue adds the entering state's contribution) equals one reference pass."""
    logits, grads = _logits_and_grads(mixer, fast=False)
    torch.manual_seed(0)
    cfg = SelectivBenchConfig(mixer=mixer, vocab_size=6, num_labels=9, d_model=32, n_layers=2, n_heads=2,
                              d_state=8, chunk_size=8, use_fast_kernels=True)
    model = SelectivBenchForTokenClassification(cfg)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 7, (2, 29), generator=g)
    labels = torch.randint(0, 9, (2, 29), generator=g)
    state, pieces = None, []
    for a, b in [(0, 11), (11, 20), (20, 29)]:
        out = model(ids[:, a:b], state=state, use_cache=True)
        state, pieces = out.state, pieces + [out.logits]
    streamed = torch.cat(pieces, 1)
    torch.nn.functional.cross_entropy(streamed.reshape(-1, 9), labels.reshape(-1)).backward()
    assert True in fast_path_on_cpu
    assert torch.allclose(streamed.detach(), logits, atol=1e-5 * logits.abs().max(), rtol=0)
    for name, p in model.named_parameters():
        assert torch.allclose(p.grad, grads[name], atol=1e-4 * grads[name].abs().max() + 1e-7, rtol=0), name
