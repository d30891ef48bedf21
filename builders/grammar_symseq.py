"""`grammar_rng="symseq"`: the grammar that the paper's own code draws for (params, seed).

The paper's generator (`symseqbench/symseq/grammar_generation.py` of github
`symseqbench/selectivbench`) is reproduced draw for draw, without networkx or scikit-learn:

1. one numpy `default_rng(seed)`; Python's `random` is seeded once with `rng.integers(0, 100)`;
2. each attempt: `random.sample` picks the k ambiguous letters; the states are the plain letters in
   alphabetical order, then `X0..X{d-1}` for each ambiguous letter X in sampled order, then '#';
3. for every source state (that order, '#' included) and every symbol (letters, then '#'): the
   target is element 0 of `rng.permutation(n)` over the n states emitting the symbol, and the
   edge is kept when `rng.random() < n * (density / d)` (the paper's `transition_density` is
   density / d); edges out of '#' are dropped afterwards;
4. the start states are `rng.choice(states, start_states, replace=False)` over all states;
5. the attempt is redrawn (same generators, up to 100,000 times) unless every state has a path to
   '#', '#' is not a start state, and every start state's shortest path to '#' has at least
   `min_string_length` edges.

State order: our `Grammar` keeps '#' at index 0; the other states follow in the paper's order, so
`states[1:] == paper_states[:-1]` (the paper puts '#' last). Start states keep the paper's order.
"""
from __future__ import annotations

import math
import random

import numpy as np
from tqdm.auto import tqdm

from ..errors import ParameterError
from .config import LETTERS, TaskParams
from .grammar import END, Grammar, distance_to_end

PAPER_MAX_DRAWS = 100_000  # the paper's n_max_iter


def paper_states(letters: list[str], ambiguous: list[str], depth: int) -> list[str]:
    """The paper's state names in its order: plain letters, each ambiguous letter's d states, '#'."""
    plain = [x for x in letters if x not in ambiguous]
    return plain + [f"{x}{i}" for x in ambiguous for i in range(depth)] + ["#"]


def _draw_edges(rng: np.random.Generator, emitters: list[np.ndarray], keep_below: list[float],
                num_states: int) -> np.ndarray:
    """(S, V) targets in the paper's state order, -1 where no edge; one draw pair per (state, symbol).

    Sources and symbols are visited in the paper's order: symbols as listed in `emitters`
    (letters then '#'), so column j of the result is that symbol.
    """
    permutation, uniform = rng.permutation, rng.random
    # a permutation of one element draws nothing: its first entry is 0
    slots = [(x, keep_below[j], len(x) > 1) for j, x in enumerate(emitters)]
    targets = []
    for _src in range(num_states):
        row = []
        for x, threshold, shuffled in slots:
            first = int(permutation(len(x))[0]) if shuffled else 0
            row.append(int(x[first]) if uniform() < threshold else -1)
        targets.append(row)
    return np.asarray(targets, dtype=np.int64)


def _check_expressible(params: TaskParams, num_states: int) -> None:
    """Reject, before any draw, settings for which the paper's generator can never succeed."""
    if params.min_string_length > num_states - 1:  # a shortest path visits each non-'#' state once
        raise ParameterError(
            f"min_string_length={params.min_string_length} is invalid: allowed [1, {num_states - 1}] "
            f"(no start state of a grammar with {num_states - 1} letter states can need more edges)")


def _log_pass_bound(density: float, params: TaskParams, num_states: int) -> float:
    """log of an upper bound on the probability that one draw passes: every letter state needs an
    edge out and some state an edge into '#'. Each edge is kept with probability min(n density / d, 1)
    for the n states emitting its symbol (1, or d for an ambiguous letter)."""
    d, k, V = params.ambiguity_depth, params.ambiguities, params.vocab_size
    p_one, p_amb = min(density / d, 1.0), min(density, 1.0)
    log_no_edge = (V - k) * math.log1p(-p_one) + k * math.log1p(-p_amb) if p_one < 1 and p_amb < 1 else -math.inf
    # log(1 - e^x) as log(-expm1(x)): log1p(-exp(x)) fails once exp(x) rounds to 1 (density 1e-20)
    log_1m_exp = lambda x: math.log(-math.expm1(x)) if x < 0 else -math.inf  # noqa: E731
    log_q_out = (num_states - 1) * log_1m_exp(log_no_edge)
    log_q_end = log_1m_exp((num_states - 1) * math.log1p(-p_one)) if p_one < 1 else 0.0
    return min(log_q_out, log_q_end)


def _check_drawable(params: TaskParams, num_states: int) -> None:
    """Reject a density at which a draw passes with probability below 1e-6 / 100,000: the loop would
    run for hours and then fail. The message names the smallest density that is allowed."""
    floor = math.log(1e-6 / PAPER_MAX_DRAWS)
    if _log_pass_bound(params.density, params, num_states) >= floor:
        return
    low, high = 0.0, 1.0  # the bound grows with the density: bisect (on a log scale) for the smallest allowed
    for _ in range(200):
        mid = math.sqrt(max(low, 1e-300) * high)
        low, high = (low, mid) if _log_pass_bound(mid, params, num_states) >= floor else (mid, high)
    raise ParameterError(
        f"density={params.density} is invalid: allowed [{high:.3g}, 1] for this alphabet (below it a draw of the "
        f"paper's generator passes with probability under 1e-11, and it tries {PAPER_MAX_DRAWS:,} times: every "
        f"one of the {num_states - 1} letter states needs an edge out, one an edge into '#')")


def symseq_grammar(params: TaskParams) -> Grammar:
    """The grammar the paper's code draws for `params` (see the module docstring)."""
    depth, k = params.ambiguity_depth, params.ambiguities
    letters = list(LETTERS[: params.vocab_size - 1])
    _check_expressible(params, len(paper_states(letters, letters[:k], depth)))
    _check_drawable(params, len(paper_states(letters, letters[:k], depth)))
    rng = np.random.default_rng(params.seed)
    py_random = random.Random(int(rng.integers(0, 100)))
    density_per_state = params.density / depth  # the paper's transition_density, divided first
    symbol_index = {x: a for a, x in enumerate(["#"] + letters)}
    # a bar only once drawing takes a while: a rare grammar (a min_string_length close to seq_len) can
    # need many of the 100,000 draws, each a few tenths of a second on the paper's large alphabets
    for _ in tqdm(range(PAPER_MAX_DRAWS), delay=10, desc="drawing grammars (paper's generator)", leave=False):
        ambiguous = py_random.sample(letters, k) if k else []
        names = paper_states(letters, ambiguous, depth)
        emits = np.array([symbol_index[n[0]] for n in names])
        emitters = [np.flatnonzero(emits == symbol_index[x]) for x in letters + ["#"]]
        keep_below = [len(x) * density_per_state for x in emitters]
        paper_targets = _draw_edges(rng, emitters, keep_below, len(names))
        paper_start = rng.choice(len(names), params.start_states, replace=False)
        g = _as_grammar(params, letters, names, emits, paper_targets, paper_start)
        dist = distance_to_end(g.next_state)
        if _paper_accepts(dist, g.start_states, params.min_string_length):
            _check_fits(dist[g.start_states], params)
            return g
    raise ParameterError(
        f"no valid grammar in {PAPER_MAX_DRAWS} draws of the paper's generator (grammar_rng='symseq') for "
        f"vocab_size={params.vocab_size}, ambiguities={k}, ambiguity_depth={depth}, density={params.density}, "
        f"start_states={params.start_states}, min_string_length={params.min_string_length}")


def _as_grammar(params, letters, names, emits, paper_targets, paper_start):
    """Our layout: '#' moves from the paper's last index to 0, every other state shifts up by one."""
    num_states = len(names)
    ours = (np.arange(num_states) + 1) % num_states  # paper index -> our index
    # paper rows/columns: sources in paper order, symbols letters then '#'; ours: '#' first in both
    next_state = np.where(paper_targets >= 0, ours[paper_targets], -1)
    next_state = np.roll(np.roll(next_state, 1, axis=0), 1, axis=1)
    next_state[END] = -1  # the paper drops the edges out of '#'
    states = ["#"] + names[:-1]
    state_symbol = np.roll(emits, 1)
    return Grammar(["#"] + letters, states, state_symbol, ours[paper_start], next_state, params.to_dict())


def _paper_accepts(dist: np.ndarray, starts: np.ndarray, min_string_length: int) -> bool:
    """The paper's validity check: every state reaches '#'; starts are not '#' and far enough from it."""
    return bool((dist >= 0).all() and END not in starts and (dist[starts] >= min_string_length).all())


def _check_fits(start_dist: np.ndarray, params: TaskParams) -> None:
    """The paper does not bound string length; our sampler needs every start to fit seq_len."""
    longest = int(start_dist.max()) + 1
    if longest > params.max_string_length:
        raise ParameterError(
            f"seq_len={params.seq_len} is invalid: allowed [{longest}, inf) for this grammar "
            f"(a start state needs {longest} elements to reach '#')")
