"""`selectivbench check-mixer TARGET`: the contract every token mixer is held to, built-in or plugin.

Each check builds a small model of the mixer (2 layers, d_model 32) and measures one figure:

    causal      an output never depends on a later input (max |change| of the outputs up to t, float64)
    step        the per-token `step` loop equals the chunked `forward` (max |difference|, float64)
    pieces      a stream fed in pieces of 1, 7, 64 and 13 steps with the carried state equals one pass,
                logits and gradients (max |difference|, float64)
    state size  the carried state has the same bytes after 16 and 64 steps (or is marked as a cache
                that grows: an `AttentionState`, or `state_grows = True`)
    bf16        under bf16 autocast, forward and backward give finite outputs and gradients
    save/load   save_pretrained then from_pretrained gives bit-identical logits

`check_mixer` returns the results (the project's tests run it on the eleven built-ins); the command
prints them as a table and exits 0 when every check holds, 1 when one fails, 2 for bad input.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass

import torch

from .errors import ParameterError
from .models import (AttentionState, SelectivBenchConfig, SelectivBenchForTokenClassification, has_step)
from .models.mixer_state import state_tensors

VOCAB, LABELS = 6, 9
PIECES = (1, 7, 64, 13)  # 85 steps: a one-token piece (the step path), then chunked pieces
LOGIT_TOLERANCE = 1e-10  # float64, times max(1, the logits' scale)
GRAD_TOLERANCE = 1e-9  # float64, times max(1, each gradient's scale)


@dataclass
class CheckResult:
    name: str
    passed: bool | None  # None: does not apply (a mixer without step)
    figure: str  # what was measured
    detail: str = ""


def build(target: str, dtype=torch.float64, **sizes) -> SelectivBenchForTokenClassification:
    """The small model the checks run (its mixer resolved from `target`), seeded, in eval mode."""
    torch.manual_seed(0)
    fields = dict(vocab_size=VOCAB, num_labels=LABELS, d_model=32, n_layers=2, n_heads=4, d_state=8, chunk_size=8)
    config = SelectivBenchConfig(mixer=target, **{**fields, **sizes})
    return SelectivBenchForTokenClassification(config).to(dtype).eval()


def inputs(T: int, seed: int = 1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB + 1, (2, T), generator=g)  # VOCAB is the silent gap id
    return ids, (torch.rand(2, T, VOCAB, generator=g) * 0.2).to(dtype)


def _scale(t: torch.Tensor) -> float:
    return max(1.0, t.abs().max().item())


def check_causal(model) -> CheckResult:
    ids, noise = inputs(40)
    t = 23
    ids2, noise2 = ids.clone(), noise.clone()
    ids2[:, t + 1:] = (ids2[:, t + 1:] + 3) % (VOCAB + 1)
    noise2[:, t + 1:] = 0.15
    with torch.no_grad():
        a, b = model(ids, input_noise=noise).logits, model(ids2, input_noise=noise2).logits
    diff = (a[:, : t + 1] - b[:, : t + 1]).abs().max().item()
    tol = LOGIT_TOLERANCE * _scale(a)
    return CheckResult("causal", diff <= tol, f"max |change| at t <= {t} when inputs after it change: {diff:.3g}",
                       f"tolerance {tol:.3g}")


def check_step(model) -> CheckResult:
    if not all(has_step(layer.mixer) for layer in model.model.layers):
        return CheckResult("step = forward", None, "no step (a parallel form only)")
    ids, noise = inputs(37)
    with torch.no_grad():
        chunked = model(ids, input_noise=noise).logits
        recurrent = model(ids, input_noise=noise, recurrent=True).logits
    diff, tol = (chunked - recurrent).abs().max().item(), LOGIT_TOLERANCE * _scale(chunked)
    return CheckResult("step = forward", diff <= tol, f"max |step - forward|: {diff:.3g}", f"tolerance {tol:.3g}")


def check_pieces(model, pieces: tuple = PIECES) -> CheckResult:
    T = sum(pieces)
    ids, noise = inputs(T, seed=4)
    weights = torch.randn(2, T, LABELS, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    bounds = torch.tensor((0,) + tuple(pieces)).cumsum(0).tolist()

    def logits_and_grads(pieces):
        model.zero_grad()
        state, outs = None, []
        for a, b in pieces:
            out = model(ids[:, a:b], input_noise=noise[:, a:b], state=state, use_cache=True)
            state, outs = out.state, outs + [out.logits]
        logits = torch.cat(outs, 1)
        (logits * weights).sum().backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    one_logits, one_grads = logits_and_grads([(0, T)])
    logits, grads = logits_and_grads(list(zip(bounds[:-1], bounds[1:])))
    model.zero_grad()
    diff = (logits - one_logits).abs().max().item()
    grad_diff = max((((grads[n] - g).abs().max().item() / _scale(g)) if n in grads else float("inf"))
                    for n, g in one_grads.items()) if one_grads else 0.0
    passed = diff <= LOGIT_TOLERANCE * _scale(one_logits) and grad_diff <= GRAD_TOLERANCE
    return CheckResult("pieces = one pass", passed,
                       f"pieces {'+'.join(map(str, pieces))}: max |logits diff| {diff:.3g}, "
                       f"max |grad diff| / scale {grad_diff:.3g}",
                       f"tolerances {LOGIT_TOLERANCE:g} x scale, {GRAD_TOLERANCE:g}")


def check_state_size(model) -> CheckResult:
    sizes = {}
    with torch.no_grad():
        for T in (16, 64):
            state = model.model(inputs(T)[0], use_cache=True).state
            sizes[T] = sum(t.numel() * t.element_size() for s in state for t in state_tensors(s))
    grows_marked = any(isinstance(s, AttentionState) for s in state) or \
        getattr(type(model.model.layers[0].mixer), "state_grows", False)
    figure = f"state bytes after 16 steps: {sizes[16]}, after 64: {sizes[64]}"
    if sizes[16] == sizes[64]:
        return CheckResult("state size", True, figure, "constant")
    return CheckResult("state size", bool(grows_marked), figure,
                       "a cache that grows (marked)" if grows_marked else
                       "grows, but the mixer is not marked as a cache (AttentionState or state_grows = True)")


def check_bf16(target: str, sizes: dict) -> CheckResult:
    model = build(target, torch.float32, **sizes)
    ids, noise = inputs(37, dtype=torch.float32)
    with torch.no_grad():
        reference = model(ids, input_noise=noise).logits
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, input_noise=noise, labels=torch.zeros_like(ids))
        out.loss.backward()
    finite = bool(torch.isfinite(out.logits).all()) and all(
        torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    error = (out.logits.float() - reference).abs().max().item() / max(reference.abs().max().item(), 1e-30)
    return CheckResult("bf16 autocast", finite, f"finite outputs and gradients: {finite}; "
                       f"max |bf16 - fp32| / scale {error:.3g}")


def check_save_load(target: str, sizes: dict) -> CheckResult:
    """In float32, as models are trained and saved."""
    model = build(target, torch.float32, **sizes)
    ids, noise = inputs(19, seed=3, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as folder:
        try:
            model.save_pretrained(folder)
        except ValueError as err:  # a plugin whose imports cannot travel
            return CheckResult("save/load", False, "save_pretrained refused", str(err))
        again = SelectivBenchForTokenClassification.from_pretrained(folder, trust_remote_code=False).eval()
    with torch.no_grad():
        a, b = model(ids, input_noise=noise).logits, again(ids, input_noise=noise).logits
    return CheckResult("save/load", torch.equal(a, b), f"max |saved - loaded|: {(a - b).abs().max().item():.3g}",
                       "bit-identical required")


def probe(target: str, sizes: dict) -> SelectivBenchForTokenClassification:
    """The float64 model, or one ParameterError naming `target` and why it cannot even run."""
    try:
        model = build(target, **sizes)
    except ValueError as err:  # the config names the field (mixer=... for a plugin that does not resolve)
        raise ParameterError(" ".join(str(err).split())) from None
    except Exception as err:  # the plugin's own constructor raised
        raise ParameterError(f"mixer={target!r} is invalid: its constructor raised {type(err).__name__}: {err}") \
            from None
    try:
        with torch.no_grad():
            model(inputs(5)[0])
    except Exception as err:
        raise ParameterError(f"mixer={target!r} is invalid: its forward raised {type(err).__name__}: {err}") from None
    return model


def check_mixer(target: str, pieces: tuple = PIECES, only: tuple | None = None, **sizes) -> list[CheckResult]:
    """Every check of the contract on `target` (a built-in name or any `--mixer` plugin form), in the
    order of the module docstring. `pieces`: the step counts of the streamed pieces. `only`: the names
    of the checks to run (default all; `score` runs ("causal",) alone). `sizes`: config fields of the
    small model (d_model=32, n_layers=2, n_heads=4, d_state=8 by default). Raises ParameterError when
    the mixer cannot be imported, is not a Mixer, or cannot run at all."""
    model = probe(target, sizes)
    checks = [("causal", lambda: check_causal(model)), ("step = forward", lambda: check_step(model)),
              ("pieces = one pass", lambda: check_pieces(model, pieces)), ("state size", lambda: check_state_size(model)),
              ("bf16 autocast", lambda: check_bf16(target, sizes)), ("save/load", lambda: check_save_load(target, sizes))]
    unknown = set(only or ()) - {name for name, _ in checks}
    if unknown:
        raise ValueError(f"only={only!r}: no check named {sorted(unknown)} (allowed {[name for name, _ in checks]})")
    checks = [(name, check) for name, check in checks if only is None or name in only]
    results = []
    for name, check in checks:
        try:
            results.append(check())
        except Exception as err:  # a check the mixer breaks by raising is failed, with the error as its figure
            results.append(CheckResult(name, False, f"raised {type(err).__name__}", " ".join(str(err).split())))
    return results


def results_table(target: str, mixer: str, results: list[CheckResult]) -> str:
    verdict = {True: "pass", False: "FAIL", None: "n/a"}
    lines = [f"check-mixer {target} (mixer {mixer!r})", "| check | result | measured | note |", "|---|---|---|---|"]
    lines += [f"| {r.name} | {verdict[r.passed]} | {r.figure} | {r.detail} |" for r in results]
    failed = [r for r in results if r.passed is False]
    lines.append(f"FAILED: {', '.join(f'{r.name} ({r.figure})' for r in failed)}" if failed
                 else f"all {sum(r.passed is True for r in results)} applicable checks hold")
    return "\n".join(lines)
