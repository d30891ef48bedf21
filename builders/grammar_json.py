"""Checks of a grammar read from JSON (SPEC §7), before any of it is used.

`parse_grammar_dict` returns the arrays of a `Grammar` or raises `InvalidGrammar` with one message
that says what is wrong; `Grammar.load` / `Grammar.from_json_dict` put the file name in front and
raise it as a `ParameterError`.
"""
from __future__ import annotations

import functools

import numpy as np

from ..errors import ParameterError, fail, is_int
from .config import LETTERS, TaskParams

KEYS = ("symbols", "states", "state_symbol", "start_states", "edges", "params")
PROB_TOLERANCE = 1e-9  # relative: JSON round-trips floats exactly, this only absorbs other writers' rounding


class InvalidGrammar(ValueError):
    """What is wrong with a grammar dict (without the file name)."""


_fail = functools.partial(fail, error=InvalidGrammar)


def _check_keys(d) -> None:
    if not isinstance(d, dict):
        _fail("grammar", type(d).__name__, f"a JSON object with keys {list(KEYS)}")
    missing = [k for k in KEYS if k not in d]
    if missing:
        raise InvalidGrammar(f"missing key(s) {missing}: a grammar JSON has keys {list(KEYS)}")
    for k in KEYS[:-1]:
        if not isinstance(d[k], list):
            _fail(k, type(d[k]).__name__, "a list")


def _check_names(symbols, states) -> None:
    if not all(isinstance(x, str) for x in symbols + states):
        _fail("symbols/states", "a non-string name", "strings")
    if symbols != ["#"] + list(LETTERS[: len(symbols) - 1]) or len(symbols) < 2:
        _fail("symbols", symbols, f"['#'] followed by the first V-1 of {LETTERS!r}")
    if not states or states[0] != "#":
        _fail("states[0]", states[0] if states else None, "'#' (state 0 is the end state)")
    if len(set(states)) != len(states):
        _fail("states", next(x for i, x in enumerate(states) if x in states[:i]), "distinct names")


def _check_state_symbol(state_symbol, states, symbols) -> np.ndarray:
    if len(state_symbol) != len(states):
        _fail("state_symbol", f"{len(state_symbol)} entries", f"one per state ({len(states)})")
    bad = next((i for i, a in enumerate(state_symbol) if not is_int(a) or not 0 <= a < len(symbols)), None)
    if bad is not None:
        _fail(f"state_symbol[{bad}]", state_symbol[bad], f"a symbol index in [0, {len(symbols)})")
    for s, a in enumerate(state_symbol):
        if (a == 0) != (s == 0) or states[s].rstrip("0123456789") != symbols[a]:
            _fail(f"state_symbol[{s}]", a, f"the symbol of state {states[s]!r} (only state 0, '#', emits '#')")
    return np.asarray(state_symbol, dtype=np.int64)


def _check_start_states(start_states, num_states) -> np.ndarray:
    if not start_states:
        _fail("start_states", start_states, "at least one state")
    bad = next((x for x in start_states if not is_int(x) or not 1 <= x < num_states), None)
    if bad is not None:
        _fail("start_states", start_states, f"state indices in [1, {num_states}) ('#' cannot start)")
    if len(set(start_states)) != len(start_states):
        _fail("start_states", start_states, "distinct states")
    return np.asarray(start_states, dtype=np.int64)


def _edge_arrays(edges, num_states) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    for i, e in enumerate(edges):
        if not (isinstance(e, list) and len(e) == 3 and is_int(e[0]) and is_int(e[1])
                and isinstance(e[2], (int, float)) and not isinstance(e[2], bool)):
            _fail(f"edges[{i}]", e, "[source index, target index, probability]")
        if not (0 <= e[0] < num_states and 0 <= e[1] < num_states):
            _fail(f"edges[{i}]", e, f"state indices in [0, {num_states})")
        if e[0] == 0:
            _fail(f"edges[{i}]", e, "no edge out of state 0 ('#' ends every string)")
    if not edges:
        _fail("edges", edges, "at least one edge")
    src = np.array([e[0] for e in edges], dtype=np.int64)
    dst = np.array([e[1] for e in edges], dtype=np.int64)
    prob = np.array([e[2] for e in edges], dtype=np.float64)
    return src, dst, prob


def _next_state(src, dst, state_symbol, symbols) -> np.ndarray:
    """(S, V) target of each (state, symbol); a DFA has at most one, and each edge is listed once."""
    sym = state_symbol[dst]
    key = src * len(symbols) + sym
    order = np.argsort(key, kind="stable")
    repeated = np.flatnonzero(key[order][1:] == key[order][:-1])
    if repeated.size:
        first, i = (int(x) for x in order[[repeated[0], repeated[0] + 1]])
        twice = "repeats" if dst[first] == dst[i] else "gives its source a second target for the symbol of"
        _fail(f"edges[{i}]", [int(src[i]), int(dst[i])],
              f"one edge per (source, symbol): it {twice} edges[{first}] (the grammar is a DFA)")
    next_state = np.full((len(state_symbol), len(symbols)), -1, dtype=np.int64)
    next_state[src, sym] = dst
    return next_state


def _check_probabilities(src, prob, next_state) -> None:
    out_degree = (next_state >= 0).sum(1)
    expected = 1.0 / out_degree[src]
    wrong = np.flatnonzero(~(np.abs(prob - expected) <= PROB_TOLERANCE * expected))  # NaN is wrong too
    if wrong.size:
        i = int(wrong[0])
        _fail(f"edges[{i}] probability", float(prob[i]),
              f"1/out-degree of state {int(src[i])} = {expected[i]!r} (every edge of a state is equally likely)")


def _check_params(raw, symbols, states, start_states) -> dict:
    if not isinstance(raw, dict):
        _fail("params", type(raw).__name__, "a JSON object of TaskParams fields")
    # files written before grammar_rng existed were all drawn by the project's generator
    raw = {"grammar_rng": "selectivbench", **raw}
    try:
        p = TaskParams.from_dict(raw)
    except (ParameterError, TypeError) as e:
        raise InvalidGrammar(f"params: {e}") from None
    k, d = p.ambiguities, p.ambiguity_depth
    num_states = 1 + (p.vocab_size - 1 - k) + k * d
    for name, value, allowed in [("vocab_size", len(symbols), p.vocab_size), ("states", len(states), num_states),
                                 ("start_states", len(start_states), p.start_states)]:
        if value != allowed:
            raise InvalidGrammar(f"params do not match the grammar: it has {value} {name.replace('_', ' ')}, "
                                 f"params (vocab_size={p.vocab_size}, ambiguities={k}, ambiguity_depth={d}, "
                                 f"start_states={p.start_states}) give {allowed}")
    return raw


def parse_grammar_dict(d) -> dict:
    """The keyword arguments of `Grammar` from a SPEC §7 dict, every index and probability checked."""
    _check_keys(d)
    symbols, states = list(d["symbols"]), list(d["states"])
    _check_names(symbols, states)
    state_symbol = _check_state_symbol(d["state_symbol"], states, symbols)
    start_states = _check_start_states(d["start_states"], len(states))
    src, dst, prob = _edge_arrays(d["edges"], len(states))
    next_state = _next_state(src, dst, state_symbol, symbols)
    _check_probabilities(src, prob, next_state)
    params = _check_params(d["params"], symbols, states, start_states)
    return dict(symbols=symbols, states=states, state_symbol=state_symbol, start_states=start_states,
                next_state=next_state, params=params)

