"""Random artificial grammars (SPEC §1): a DFA over hidden states that emit symbols.

`next_state[s, a]` is the state reached from state `s` by symbol `a`, or -1: from any state each
symbol leads to at most one state, so the hidden state is a function of the previous state and
the current symbol. Outgoing edges of a state are equally likely. State 0 and symbol 0 are '#'.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ParameterError
from .config import LETTERS, TaskParams
from .grammar_json import InvalidGrammar, parse_grammar_dict

END = 0  # index of '#' among the symbols and among the states
MAX_DRAWS = 1000
GRAMMAR_STREAM = 0x6772616D  # separates the grammar's random stream from the samples'


@dataclass
class Grammar:
    symbols: list[str]
    states: list[str]
    state_symbol: np.ndarray  # (S,) symbol emitted by each state
    start_states: np.ndarray  # (n_start,) distinct non-'#' states
    next_state: np.ndarray  # (S, V) target state or -1
    params: dict

    # --- structure ---
    @property
    def num_states(self) -> int:
        return len(self.states)

    @property
    def num_symbols(self) -> int:
        return len(self.symbols)

    @property
    def out_degree(self) -> np.ndarray:
        return (self.next_state >= 0).sum(1)

    @property
    def num_edges(self) -> int:
        return int((self.next_state >= 0).sum())

    def transition_matrix(self) -> np.ndarray:
        """(S, S) probabilities P[s, s'] = 1/out_degree(s) on each edge; the '#' row is zero."""
        S = self.num_states
        P = np.zeros((S, S))
        src, sym = np.nonzero(self.next_state >= 0)
        P[src, self.next_state[src, sym]] = 1.0 / self.out_degree[src]
        return P

    def edges(self) -> list[tuple[int, int, float]]:
        src, sym = np.nonzero(self.next_state >= 0)
        deg = self.out_degree
        return [(int(s), int(self.next_state[s, a]), 1.0 / int(deg[s])) for s, a in zip(src, sym)]

    def forbidden_symbols(self, state: int) -> np.ndarray:
        """Symbols with zero probability after `state` (all of them after '#')."""
        if state == END:
            return np.arange(self.num_symbols)
        return np.flatnonzero(self.next_state[state] < 0)

    # --- SPEC §7 JSON ---
    def to_json_dict(self) -> dict:
        return {
            "symbols": list(self.symbols),
            "states": list(self.states),
            "state_symbol": [int(x) for x in self.state_symbol],
            "start_states": [int(x) for x in self.start_states],
            "edges": [[s, d, p] for s, d, p in self.edges()],
            "params": dict(self.params),
        }

    def save(self, path) -> None:
        """Write the JSON atomically: a reader never sees half a file."""
        from ..files import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_json_dict(), indent=1))

    @classmethod
    def from_json_dict(cls, d: dict, source: str = "grammar JSON") -> "Grammar":
        """Build from a SPEC §7 dict; anything malformed raises one ParameterError naming `source`."""
        try:
            return cls(**parse_grammar_dict(d))
        except InvalidGrammar as e:
            raise ParameterError(f"{source}: {e}") from None

    @classmethod
    def load(cls, path) -> "Grammar":
        path = Path(path)
        try:
            d = json.loads(path.read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ParameterError(f"{path}: not valid JSON ({e})") from None
        return cls.from_json_dict(d, source=str(path))

    # --- validity (SPEC §1) ---
    def distance_to_end(self) -> np.ndarray:
        """Shortest number of edges from each state to '#' (-1 when unreachable)."""
        return distance_to_end(self.next_state)

    def problems(self, min_string_length: int, max_string_length: int) -> list[str]:
        dist = self.distance_to_end()
        out = []
        if (dist < 0).any():
            out.append(f"{int((dist < 0).sum())} state(s) have no path to '#'")
        d_start = dist[self.start_states]
        if (d_start < min_string_length).any():
            out.append(f"a start state reaches '#' in fewer than min_string_length={min_string_length} edges")
        if (d_start > max_string_length - 1).any():
            out.append(f"a start state cannot reach '#' within seq_len={max_string_length} elements")
        return out

    # --- statistics ---
    def topological_entropy(self) -> float:
        """log2 spectral radius of the 0/1 transition matrix with '#' wired back to the start states."""
        A = (self.transition_matrix() > 0).astype(np.float64)
        A[END, self.start_states] = 1.0
        return float(np.log2(max(np.abs(np.linalg.eigvals(A)).max(), 1.0)))


def distance_to_end(next_state: np.ndarray) -> np.ndarray:
    """Shortest number of edges from each state to '#' (-1: no path), by reverse breadth-first search."""
    num_states = next_state.shape[0]
    src, sym = np.nonzero(next_state >= 0)
    dst = next_state[src, sym]
    by_target = src[np.argsort(dst, kind="stable")]
    preds_of = np.split(by_target, np.cumsum(np.bincount(dst, minlength=num_states))[:-1])
    dist = np.full(num_states, -1, dtype=np.int64)
    dist[END] = 0
    frontier, level = np.array([END]), 0
    while frontier.size:
        level += 1
        preds = np.unique(np.concatenate([preds_of[t] for t in frontier.tolist()]))
        frontier = preds[dist[preds] < 0]
        dist[frontier] = level
    return dist


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
        from .grammar_symseq import symseq_grammar  # that module builds on this one's Grammar

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
