"""The chunked kernels against their plain recurrences, in float64, with T not a multiple of the chunk."""
import pytest
import torch

from selectivbench.models.chunked_delta_rule import chunk_delta_rule, recurrent_delta_step
from selectivbench.models.chunked_linear_attention import chunk_gla, recurrent_gla_step
from selectivbench.models.chunked_scan import chunk_scan, recurrent_scan_step
from selectivbench.models.chunked_selective_scan import chunk_selective_scan, recurrent_selective_scan_step

B, H, T, K, V = 2, 3, 45, 8, 5


def rand(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("gate_dim", [K, 1])
@pytest.mark.parametrize("chunk", [4, 16, 64])
@pytest.mark.parametrize("strength", [0.05, 4.0])
def test_chunk_gla_equals_recurrence(gate_dim, chunk, strength):
    """Mild per-channel decays take the factorised product, strong ones (exp(-4 * 64) would
    overflow it) the pairwise decays: both must equal the recurrence."""
    q, k, v = rand(B, H, T, K, seed=0), rand(B, H, T, K, seed=1), rand(B, H, T, V, seed=2)
    g = -rand(B, H, T, gate_dim, seed=3).abs() * strength
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


def _scan_inputs():
    a, b = torch.sigmoid(rand(B, T, 4, 3, seed=0) * 3), rand(B, T, 4, 3, seed=1)
    return a, b, rand(B, 4, 3, seed=2)


def _plain_scan(a, b, h0):
    state, hs = h0, []
    for t in range(a.shape[1]):
        state = recurrent_scan_step(a[:, t], b[:, t], state)
        hs.append(state)
    return torch.stack(hs, 1), state


@pytest.mark.parametrize("chunk", [1, 7, 45, 100])
def test_chunk_scan_equals_recurrence(chunk):
    a, b, h0 = _scan_inputs()
    h, last = chunk_scan(a, b, chunk, initial_state=h0)
    h_ref, last_ref = _plain_scan(a, b, h0)
    assert torch.allclose(h, h_ref, atol=1e-12) and torch.allclose(last, last_ref, atol=1e-12)


def _grads(fn, inputs, seed):
    """Gradients of a fixed random projection of every output of fn (so that no output is left out)."""
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    outs = fn(*inputs)
    loss = sum((o * rand(*o.shape, seed=seed + i)).sum() for i, o in enumerate(outs))
    return torch.autograd.grad(loss, inputs, allow_unused=True, materialize_grads=True)


@pytest.mark.parametrize("chunk", [1, 7, 100])
def test_chunk_scan_backward_equals_autograd_of_recurrence(chunk):
    """The hand-written backward (a reverse scan) against autograd through the plain loop."""
    inputs = _scan_inputs()
    ours = _grads(lambda a, b, h0: chunk_scan(a, b, chunk, initial_state=h0), inputs, seed=10)
    reference = _grads(_plain_scan, inputs, seed=10)
    for g, g_ref in zip(ours, reference):
        assert torch.allclose(g, g_ref, atol=1e-11)


def _selective_inputs(Di=6, N=4):
    x, B_, C_ = rand(B, T, Di, seed=0), rand(B, T, N, seed=1), rand(B, T, N, seed=2)
    dt = torch.nn.functional.softplus(rand(B, T, Di, seed=3))  # up to ~4: decays down to e^-60 a step
    A = -rand(Di, N, seed=4).exp()
    return x, dt, A, B_, C_, rand(B, Di, N, seed=5)


def _plain_selective_scan(x, dt, A, B_, C_, h0):
    h, ys = h0, []
    for t in range(x.shape[1]):
        y, h = recurrent_selective_scan_step(x[:, t], dt[:, t], A, B_[:, t], C_[:, t], h)
        ys.append(y)
    return torch.stack(ys, 1), h


@pytest.mark.parametrize("chunk", [1, 7, 45, 100])
def test_chunk_selective_scan_equals_recurrence(chunk):
    *args, h0 = _selective_inputs()
    y, last = chunk_selective_scan(*args, chunk_size=chunk, initial_state=h0)
    y_ref, last_ref = _plain_selective_scan(*args, h0)
    assert torch.allclose(y, y_ref, atol=1e-12) and torch.allclose(last, last_ref, atol=1e-12)


@pytest.mark.parametrize("chunk", [1, 7, 100])
def test_chunk_selective_scan_backward_equals_autograd_of_recurrence(chunk):
    """Backward recomputes each block's states and runs the adjoint recurrence: every input's
    gradient (x, dt, A, B, C and the initial state) must equal autograd through the plain loop."""
    inputs = _selective_inputs()
    ours = _grads(lambda *a: chunk_selective_scan(*a[:5], chunk_size=chunk, initial_state=a[5]), inputs, seed=20)
    reference = _grads(_plain_selective_scan, inputs, seed=20)
    for g, g_ref in zip(ours, reference):
        assert torch.allclose(g, g_ref, atol=1e-10)


def test_chunk_selective_scan_passes_gradcheck():
    inputs = [t[:1, :9, :3].clone() if t.dim() == 3 and t.shape[-1] == 6 else t for t in _selective_inputs()]
    x, dt, A, B_, C_, h0 = inputs
    inputs = [t.detach().requires_grad_() for t in (x, dt, A[:3], B_[:1, :9], C_[:1, :9], h0[:1, :3])]
    assert torch.autograd.gradcheck(lambda *a: chunk_selective_scan(*a[:5], chunk_size=4, initial_state=a[5]), inputs)


def _delta_inputs(gated):
    q, v = rand(B, H, T, K, seed=0), rand(B, H, T, V, seed=2)
    k = torch.nn.functional.normalize(rand(B, H, T, K, seed=1), dim=-1)
    beta = torch.sigmoid(rand(B, H, T, seed=3))
    g = -rand(B, H, T, seed=4).abs() if gated else torch.zeros(B, H, T, dtype=torch.float64)
    return q, k, v, beta, g, rand(B, H, K, V, seed=5)


def _plain_delta_rule(q, k, v, beta, g, s0):
    state, outs = s0, []
    for t in range(q.shape[2]):
        y, state = recurrent_delta_step(q[:, :, t], k[:, :, t], v[:, :, t], beta[:, :, t], g[:, :, t], state)
        outs.append(y)
    return torch.stack(outs, 2), state


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("chunk", [4, 16])
def test_chunk_delta_rule_backward_equals_autograd_of_recurrence(gated, chunk):
    """The written-out backward (adjoint state loop, then the chunk-local terms and the log decays)
    against autograd through the plain recurrence: q, k, v, beta, g and the entering state."""
    inputs = _delta_inputs(gated)
    ours = _grads(lambda q, k, v, beta, g, s0: chunk_delta_rule(q, k, v, beta, g if gated else None, chunk,
                                                                initial_state=s0), inputs, seed=30)
    reference = _grads(_plain_delta_rule, inputs, seed=30)
    for name, g, g_ref in zip(("q", "k", "v", "beta", "g", "state"), ours, reference):
        if name == "g" and not gated:
            continue  # no gate given: chunk_delta_rule never saw this input
        assert torch.allclose(g, g_ref, atol=1e-10), name


def test_chunk_delta_rule_passes_gradcheck():
    q, k, v, beta, g, s0 = (t[:1, :2, :11] if t.dim() >= 3 and t.shape[2] == T else t[:1, :2] for t in _delta_inputs(True))
    inputs = [t.detach().clone().requires_grad_() for t in (q, k, v, beta, g, s0)]
    assert torch.autograd.gradcheck(lambda *a: chunk_delta_rule(*a[:5], 4, initial_state=a[5]), inputs)


@pytest.mark.parametrize("T_steps", [1, 3, 9])
@pytest.mark.parametrize("with_window", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_short_conv_equals_padded_convolution(T_steps, with_window, bias):
    """The short conv (torch's depthwise conv2d on a channels-last view) against the padded
    convolution written as shifted products, through autograd: output, carried window and every
    gradient, T below the kernel too."""
    from selectivbench.models.layers import ShortConv

    conv = ShortConv(5, 4, bias=bias).double()
    for i, p in enumerate(conv.parameters()):
        p.data = rand(*p.shape, seed=40 + i)
    x = rand(2, T_steps, 5, seed=50).requires_grad_()
    window = rand(2, 5, 3, seed=51).requires_grad_() if with_window else None
    past = torch.cat([window.transpose(1, 2) if with_window else torch.zeros(2, 3, 5, dtype=torch.float64), x], 1)
    w = conv.weight[:, 0]
    reference = sum(past[:, k:k + T_steps] * w[:, k] for k in range(4)) + (conv.bias if bias else 0)
    y, last = conv(x, window)
    assert torch.allclose(y, reference, atol=1e-12)
    assert torch.equal(last, past[:, -3:].transpose(1, 2))
    inputs = [x, conv.weight] + ([conv.bias] if bias else []) + ([window] if with_window else [])
    g_y, g_last = rand(*y.shape, seed=52), rand(*last.shape, seed=53)
    ours = torch.autograd.grad((y * g_y).sum() + (last * g_last).sum(), inputs)
    expected = torch.autograd.grad((reference * g_y).sum() + (past[:, -3:].transpose(1, 2) * g_last).sum(), inputs)
    for g, g_ref in zip(ours, expected):
        assert torch.allclose(g, g_ref, atol=1e-12)
