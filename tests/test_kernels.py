"""The chunked kernels against their plain recurrences, in float64, with T not a multiple of the chunk."""
import pytest
import torch

from selectivbench.models.chunked_delta_rule import chunk_delta_rule, recurrent_delta_step
from selectivbench.models.chunked_linear_attention import chunk_gla, recurrent_gla_step
from selectivbench.models.chunked_scan import chunk_scan, recurrent_scan_step

B, H, T, K, V = 2, 3, 45, 8, 5


def rand(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("gate_dim", [K, 1])
@pytest.mark.parametrize("chunk", [4, 16, 64])
def test_chunk_gla_equals_recurrence(gate_dim, chunk):
    q, k, v = rand(B, H, T, K, seed=0), rand(B, H, T, K, seed=1), rand(B, H, T, V, seed=2)
    g = -rand(B, H, T, gate_dim, seed=3).abs() * 4  # strong decays: exp(-4 * 64) would overflow a naive form
    s0 = rand(B, H, K, V, seed=4)
    o, s = chunk_gla(q, k, v, g, chunk, initial_state=s0)
    state, outs = s0, []
    for t in range(T):
        y, state = recurrent_gla_step(q[:, :, t], k[:, :, t], v[:, :, t], g[:, :, t], state)
        outs.append(y)
    assert torch.isfinite(o).all()
    assert torch.allclose(o, torch.stack(outs, 2), atol=1e-10) and torch.allclose(s, state, atol=1e-10)


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("chunk", [4, 16])
def test_chunk_delta_rule_equals_recurrence(gated, chunk):
    q, v = rand(B, H, T, K, seed=0), rand(B, H, T, V, seed=2)
    k = torch.nn.functional.normalize(rand(B, H, T, K, seed=1), dim=-1)
    beta = torch.sigmoid(rand(B, H, T, seed=3))
    g = -rand(B, H, T, seed=4).abs() if gated else None
    s0 = rand(B, H, K, V, seed=5)
    o, s = chunk_delta_rule(q, k, v, beta, g, chunk, initial_state=s0)
    state, outs = s0, []
    for t in range(T):
        g_t = g[:, :, t] if gated else torch.zeros(B, H, dtype=torch.float64)
        y, state = recurrent_delta_step(q[:, :, t], k[:, :, t], v[:, :, t], beta[:, :, t], g_t, state)
        outs.append(y)
    assert torch.allclose(o, torch.stack(outs, 2), atol=1e-10) and torch.allclose(s, state, atol=1e-10)


@pytest.mark.parametrize("chunk", [1, 7, 45, 100])
def test_chunk_scan_equals_recurrence(chunk):
    a, b = torch.sigmoid(rand(B, T, 4, 3, seed=0) * 3), rand(B, T, 4, 3, seed=1)
    h0 = rand(B, 4, 3, seed=2)
    h, last = chunk_scan(a, b, chunk, initial_state=h0)
    state, hs = h0, []
    for t in range(T):
        state = recurrent_scan_step(a[:, t], b[:, t], state)
        hs.append(state)
    assert torch.allclose(h, torch.stack(hs, 1), atol=1e-12) and torch.allclose(last, state, atol=1e-12)
