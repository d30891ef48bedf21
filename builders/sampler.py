"""Sequences of a grammar (SPEC §2-3), vectorised over many samples at once.

Strings follow the *conditioned* law of the reference: a walk from a random start state to '#',
rejected and redrawn whenever it grows past `max_len` elements. Instead of rejecting, we draw from
that same law directly with a Doob h-transform: with h[r, s] = P(a walk at s reaches '#' within r
more steps), the conditioned walk moves s -> s' with probability P[s, s'] h[r-1, s'] / h[r, s] and
starts at s0 with probability proportional to h[max_len-1, s0]. `rejection_string` keeps the plain
step-by-step walker as the test oracle.

Randomness is counter-based: draw (sample, counter) = mix(sample key, counter), so a sample is a
pure function of (params, seed, split, index) whatever the batch, shard or process it is made in.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError
from .config import TaskParams, gap_of_split
from .grammar import END, Grammar

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
SAMPLE_STREAM = 0x73616D70
# What a draw is for: its counter is (element << 24) | (purpose << 20) | gap step.
WALK, GAP_OCCURS, GAP_U1, GAP_U2, DISTRACTOR, LENGTH = range(6)


def _mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection of uint64 that scrambles every bit."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def split_code(split: str) -> int:
    fixed = {"train": 0, "validation": 1, "test": 2}
    if split in fixed:
        return fixed[split]
    gap = gap_of_split(split)
    if gap is not None:
        return 1_000_000 + gap
    raise ParameterError(f"split={split!r} is invalid: allowed train, validation, test, test_gap<steps>")


def split_gap_steps(params: TaskParams, split: str) -> int | None:
    """Fixed gap (in steps) of a test split, None for the training law (SPEC §3)."""
    if split in ("train", "validation"):
        return None
    if split == "test":
        return params.train_max_gap_steps
    split_code(split)
    return gap_of_split(split)


def sample_keys(seed: int, split: str, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two independent 64-bit keys per sample, spawned from (seed, split) then the index."""
    ss = np.random.SeedSequence(seed, spawn_key=(SAMPLE_STREAM, split_code(split)))
    base = ss.generate_state(2, np.uint64)
    i = np.asarray(indices, dtype=np.uint64) + np.uint64(1)
    with np.errstate(over="ignore"):
        return _mix(base[0] + i * _GOLDEN), _mix(base[1] + i * _GOLDEN)


def uniform(keys, counter) -> np.ndarray:
    """Uniform [0, 1) draw number `counter` of each sample's stream."""
    k1, k2 = keys
    c = np.asarray(counter, dtype=np.uint64)
    extra = (1,) * max(c.ndim - k1.ndim, 0)  # a (N,) key against (1, E) counters gives (N, E)
    k1, k2 = k1.reshape(k1.shape + extra), k2.reshape(k2.shape + extra)
    with np.errstate(over="ignore"):
        x = _mix(_mix(k1 + c * _GOLDEN) ^ k2)
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def counter(element, purpose, step=0):
    e = np.asarray(element, dtype=np.uint64)
    return (e << np.uint64(24)) | np.uint64(purpose << 20) | np.asarray(step, dtype=np.uint64)


def check_law_memory(max_len: int, num_states: int, max_degree: int) -> None:
    """The law's tables (h and cum below) take max_len x states x (max out-degree + 1) float64s: refused
    before they are allocated when over half of this machine's memory (a seq_len of 100,000 on the
    paper's 1601-state grammars asked for 31 GiB, and the kernel's OOM killer answered)."""
    per_step = num_states * (max_degree + 1) * 8
    try:
        budget = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): the memory cannot be read, not checked
        return
    if max_len * per_step > budget:
        raise ParameterError(f"seq_len={max_len} is invalid: allowed at most {budget // per_step} for this grammar "
                             f"({num_states} states, out-degree up to {max_degree}): its string law takes "
                             f"{max_len * per_step / 2**30:.1f} GiB, over half this machine's memory "
                             f"({budget / 2**30:.1f} GiB)")


class StringLaw:
    """The conditioned string law of a grammar: strings of at most `max_len` elements."""

    def __init__(self, grammar: Grammar, max_len: int):
        self.grammar, self.max_len = grammar, max_len
        S = grammar.num_states
        deg = grammar.out_degree
        D = max(int(deg.max()), 1)
        check_law_memory(max_len, S, D)
        # successors of each state in symbol order, padded with state 0
        order = np.argsort(grammar.next_state < 0, axis=1, kind="stable")[:, :D]
        self.succ = np.take_along_axis(grammar.next_state, order, axis=1)
        valid = np.arange(D)[None, :] < deg[:, None]
        self.succ = np.where(valid, self.succ, 0)
        p_edge = np.where(valid, 1.0 / np.maximum(deg, 1)[:, None], 0.0)
        # h[r, s]: probability that a walk at s reaches '#' within r more steps
        h = np.zeros((max_len, S))
        h[0, END] = 1.0
        for r in range(1, max_len):
            h[r] = (p_edge * h[r - 1][self.succ]).sum(1)
            h[r, END] = 1.0
        self.h = h
        # cum[r, s, :]: cumulative conditioned probabilities of the successors with r steps left
        cum = np.full((max_len, S, D), 2.0)
        for r in range(1, max_len):
            c = np.cumsum(p_edge * h[r - 1][self.succ], axis=1)
            total = c[np.arange(S), np.maximum(deg - 1, 0)]
            ok = total > 0
            cum[r, ok] = np.where(valid[ok], c[ok] / total[ok, None], 2.0)
        self.cum = cum
        w = h[max_len - 1, grammar.start_states]
        self.start_prob = w / w.sum()
        self.start_cum = np.cumsum(self.start_prob)
        self.start_cum[-1] = 1.0

    def length_pmf(self) -> np.ndarray:
        """Exact P(string has n elements), n = 1..max_len, under the conditioned law."""
        S = self.grammar.num_states
        P = self.grammar.transition_matrix()
        dist = np.zeros(S)
        dist[self.grammar.start_states] = 1.0 / len(self.grammar.start_states)
        pmf = np.zeros(self.max_len + 1)
        for n in range(1, self.max_len + 1):
            pmf[n] = dist[END]
            dist[END] = 0.0
            dist = dist @ P
        return pmf / pmf.sum()

    def mean_length(self) -> float:
        pmf = self.length_pmf()
        return float((np.arange(len(pmf)) * pmf).sum())

    def walk(self, keys, num_elements: int) -> np.ndarray:
        """(N, num_elements) states of N sequences: strings concatenated, the last one cut."""
        N = len(keys[0])
        out = np.empty((N, num_elements), dtype=np.int64)
        cur = np.full(N, END, dtype=np.int64)
        pos = np.zeros(N, dtype=np.int64)
        rows = np.arange(N)
        starts = self.grammar.start_states
        for e in range(num_elements):
            u = uniform(keys, counter(e, WALK))
            new = cur == END
            started = starts[np.searchsorted(self.start_cum, u, side="right")]
            r = np.maximum(self.max_len - 1 - pos, 0)
            j = (self.cum[r, cur] <= u[:, None]).sum(1)
            stepped = self.succ[cur, np.minimum(j, self.succ.shape[1] - 1)]
            cur = np.where(new, started, stepped)
            pos = np.where(new, 0, pos + 1)
            out[rows, e] = cur
        return out


@dataclass
class SampleBatch:
    """Ragged batch of samples: per-step arrays concatenated, sample i at steps offsets[i]:offsets[i+1]."""

    indices: np.ndarray  # (N,) sample index within the split
    offsets: np.ndarray  # (N+1,)
    num_elements: np.ndarray  # (N,)
    input_ids: np.ndarray  # (steps,) symbol, distractor symbol, or gap id
    labels: np.ndarray  # (steps,) state of the element the step belongs to
    element_index: np.ndarray  # (steps,)

    def __len__(self):
        return len(self.indices)

    def row(self, i: int) -> dict:
        a, b = self.offsets[i], self.offsets[i + 1]
        return {"index": int(self.indices[i]), "input_ids": self.input_ids[a:b],
                "labels": self.labels[a:b], "element_index": self.element_index[a:b]}

    def rows(self):
        for i in range(len(self)):
            yield self.row(i)


class Sampler:
    """Makes the samples of one task: (params, grammar) -> sample(split, index)."""

    def __init__(self, params: TaskParams, grammar: Grammar):
        self.params, self.grammar = params, grammar
        self.law = StringLaw(grammar, params.max_string_length)
        forb = grammar.next_state < 0
        forb[END] = True
        self.num_forbidden = forb.sum(1)
        order = np.argsort(~forb, axis=1, kind="stable")
        self.forbidden = order  # first num_forbidden[s] entries are the forbidden symbols of s

    def gap_steps(self, keys, num_elements: int, fixed_steps: int | None) -> np.ndarray:
        """(N, num_elements) gap length after each element, in steps (SPEC §3)."""
        p = self.params
        e = np.arange(num_elements)
        occurs = (e[None, :] >= p.gap_start) & (uniform(keys, counter(e[None, :], GAP_OCCURS)) < p.gap_prob)
        if fixed_steps is not None:
            steps = np.full(occurs.shape, fixed_steps)
        else:
            def draw(k):  # the law's k-th uniform draw after each element
                return uniform(keys, counter(e[None, :], (GAP_U1, GAP_U2)[k]))
            steps = p.duration_law.draw_steps(occurs.shape, draw)
        return np.where(occurs, steps, 0)

    def generate(self, split: str, indices) -> SampleBatch:
        p = self.params
        indices = np.asarray(indices, dtype=np.int64)
        N = len(indices)
        keys = sample_keys(p.seed, split, indices)
        if p.seq_len_min is None:
            n_elem = np.full(N, p.seq_len)
        else:
            u = uniform(keys, counter(0, LENGTH))
            n_elem = p.seq_len_min + np.floor(u * (p.seq_len - p.seq_len_min + 1)).astype(np.int64)
        n_max = int(n_elem.max()) if N else 0
        states = self.law.walk(keys, n_max)
        gaps = self.gap_steps(keys, n_max, split_gap_steps(p, split))
        in_seq = np.arange(n_max)[None, :] < n_elem[:, None]
        # flatten the elements that exist, row by row
        sample_of = np.repeat(np.arange(N), n_elem)
        el = np.nonzero(in_seq)[1]
        st = states[in_seq]
        steps = 1 + gaps[in_seq]
        offsets = np.zeros(N + 1, dtype=np.int64)
        np.cumsum(np.bincount(sample_of, weights=steps, minlength=N).astype(np.int64), out=offsets[1:])
        first = np.cumsum(steps) - steps  # first step of each element
        element_index = np.repeat(el, steps)
        labels = np.repeat(st, steps)
        within = np.arange(len(labels)) - np.repeat(first, steps)
        input_ids = self.grammar.state_symbol[labels]
        gap = within > 0
        if p.gap_content == "silence":
            input_ids[gap] = p.gap_id
        else:
            g_sample = np.repeat(sample_of, steps)[gap]
            g_state = labels[gap]
            u = uniform((keys[0][g_sample], keys[1][g_sample]),
                        counter(element_index[gap], DISTRACTOR, within[gap] - 1))
            n_forb = self.num_forbidden[g_state]
            pick = self.forbidden[g_state, np.floor(u * n_forb).astype(np.int64)]
            input_ids[gap] = np.where(n_forb > 0, pick, p.gap_id)
        return SampleBatch(indices, offsets, n_elem, input_ids, labels, element_index)

    def sample(self, split: str, index: int) -> dict:
        return self.generate(split, [index]).row(0)


def rejection_string(grammar: Grammar, rng: np.random.Generator, max_len: int) -> list[int]:
    """The reference's plain walker: walk from a uniform start state, restart past max_len elements."""
    while True:
        s = int(rng.choice(grammar.start_states))
        string = [s]
        while s != END and len(string) <= max_len:
            options = grammar.next_state[s][grammar.next_state[s] >= 0]
            s = int(rng.choice(options))
            string.append(s)
        if string[-1] == END and len(string) <= max_len:
            return string
