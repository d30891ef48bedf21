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
from .grammar_json import InvalidGrammar, parse_grammar_dict

END = 0  # index of '#' among the symbols and among the states


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

    def to_json(self) -> str:
        """The SPEC §7 file's text (the caller writes it: this package keeps file writing out of builders/)."""
        return json.dumps(self.to_json_dict(), indent=1)

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
