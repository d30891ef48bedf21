"""Which generator draws the grammar of (params, seed): `make_grammar`. `grammar_rng="symseq"` is
the paper's generator (`grammar_symseq.py`), `"selectivbench"` this project's own, here: the SPEC §1
law drawn vectorised, redrawn while invalid.
"""
from __future__ import annotations

import numpy as np

from ..errors import ParameterError
from .config import LETTERS, TaskParams
from .grammar import END, Grammar
from .grammar_symseq import symseq_grammar

MAX_DRAWS = 1000
GRAMMAR_STREAM = 0x6772616D  # separates the grammar's random stream from the samples'


def state_names(params: TaskParams) -> tuple[list[str], list[str], np.ndarray]:
    """Symbols, state names and the symbol of each state; the first k letters are ambiguous."""
    symbols = ["#"] + list(LETTERS[: params.vocab_size - 1])
    states, state_symbol = ["#"], [END]
    for a, letter in enumerate(symbols[1:], start=1):
        if a <= params.ambiguities:
            states += [f"{letter}{i}" for i in range(params.ambiguity_depth)]
            state_symbol += [a] * params.ambiguity_depth
        else:
            states.append(letter)
            state_symbol.append(a)
    return symbols, states, np.asarray(state_symbol, dtype=np.int64)


def _draw_once(params: TaskParams, rng: np.random.Generator, symbols, states, state_symbol) -> Grammar:
    S, V = len(states), len(symbols)
    emitters = [np.flatnonzero(state_symbol == a) for a in range(V)]
    n_emit = np.array([len(e) for e in emitters])
    # d of the edge law; with no ambiguous letter every symbol is plain and d plays no role
    d = params.ambiguity_depth if params.ambiguities > 0 else 1
    keep_prob = np.minimum(1.0, n_emit * params.density / d)
    pick = rng.random((S, V))
    which = np.floor(pick * n_emit).astype(np.int64)
    keep = rng.random((S, V)) < keep_prob
    offsets = np.concatenate([[0], np.cumsum(n_emit)[:-1]])
    emit_order = np.concatenate(emitters)
    target = emit_order[offsets + which]
    next_state = np.where(keep, target, -1)
    next_state[END] = -1  # '#' has no outgoing edges
    start = rng.choice(np.arange(1, S), size=params.start_states, replace=False)
    return Grammar(symbols, states, state_symbol, np.sort(start), next_state, params.to_dict())


def make_grammar(params: TaskParams) -> Grammar:
    """The grammar of (params, seed), drawn by the generator that `params.grammar_rng` names."""
    if params.grammar_rng == "symseq":
        return symseq_grammar(params)
    return selectivbench_grammar(params)


def selectivbench_grammar(params: TaskParams) -> Grammar:
    """This project's own generator of the SPEC §1 law: redraw invalid grammars up to MAX_DRAWS times."""
    symbols, states, state_symbol = state_names(params)
    rng = np.random.default_rng(np.random.SeedSequence(params.seed, spawn_key=(GRAMMAR_STREAM,)))
    last = []
    for _ in range(MAX_DRAWS):
        g = _draw_once(params, rng, symbols, states, state_symbol)
        last = g.problems(params.min_string_length, params.max_string_length)
        if not last:
            return g
    raise ParameterError(
        f"no valid grammar in {MAX_DRAWS} draws for vocab_size={params.vocab_size}, "
        f"ambiguities={params.ambiguities}, ambiguity_depth={params.ambiguity_depth}, "
        f"density={params.density}, start_states={params.start_states}, "
        f"min_string_length={params.min_string_length}, seq_len={params.seq_len} "
        f"(last draw: {'; '.join(last)}). Raise density or lower min_string_length/ambiguity_depth."
    )
