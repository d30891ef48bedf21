"""The Bayes filter against brute-force enumeration of every hidden path of a tiny grammar."""
from collections import defaultdict

import numpy as np
import pytest

from selectivbench.builders import ParameterError, Sampler, TaskParams, bayes_ceiling, make_grammar
from selectivbench.builders.ceiling import BayesFilter

from helpers import complete_strings

T = 6  # steps enumerated
TINY = dict(vocab_size=3, ambiguities=1, ambiguity_depth=2, density=0.9, start_states=2, seq_len=8,
            gap_law="uniform", gap_low=0.1, gap_high=0.3, gap_prob=0.5, gap_start=1)
GAP_PMF = {1: 0.25, 2: 0.5, 3: 0.25}  # uniform(0.1, 0.3) rounded to 0.1, 0.2, 0.3 with weights 1/4, 1/2, 1/4


def tiny_sampler(content, **overrides):
    """A tiny grammar whose two start states emit the same letter (ambiguous starts)."""
    for seed in range(200):
        p = TaskParams(**{**TINY, **overrides}, gap_content=content, seed=seed)
        try:
            g = make_grammar(p)
        except ParameterError:  # a start state too far from '#' for a short seq_len
            continue
        symbols = g.state_symbol[g.start_states]
        n_forbidden = [len(g.forbidden_symbols(s)) for s in range(1, g.num_states)]
        if symbols[0] == symbols[1] and 0 in n_forbidden and max(n_forbidden) > 0:
            return Sampler(p, g)
    raise AssertionError("no tiny grammar with ambiguous starts")


def enumerate_prefixes(sampler, steps=T):
    """P(inputs_1..steps, labels_1..steps) for every hidden path, straight from the generative story;
    a sample that ends sooner (after seq_len elements and the last one's gap) is recorded whole."""
    p, g = sampler.params, sampler.grammar
    strings = complete_strings(g, p.seq_len)
    table = defaultdict(float)

    def emit(xs, ys, prob, e, rest):
        if len(xs) >= steps or e == p.seq_len:
            table[(tuple(xs[:steps]), tuple(ys[:steps]))] += prob
            return
        if not rest:
            for string, q in strings.items():
                emit(xs, ys, prob * q, e, list(string))
            return
        s, rest = rest[0], rest[1:]
        xs, ys = xs + [int(g.state_symbol[s])], ys + [s]
        gaps = {0: 1.0} if e < p.gap_start else {0: 1 - p.gap_prob, **{k: p.gap_prob * w for k, w in GAP_PMF.items()}}
        for n, q in gaps.items():
            fill(xs, ys, prob * q, s, n, lambda xs2, ys2, q2: emit(xs2, ys2, q2, e + 1, rest))

    def fill(xs, ys, prob, s, n, then):
        if n == 0 or len(xs) >= steps:
            return then(xs, ys, prob)
        forbidden = g.forbidden_symbols(s).tolist()
        if p.gap_content == "silence" or not forbidden:
            return fill(xs + [p.gap_id], ys + [s], prob, s, n - 1, then)
        for a in forbidden:
            fill(xs + [a], ys + [s], prob / len(forbidden), s, n - 1, then)

    emit([], [], 1.0, 0, [])
    return table


@pytest.mark.parametrize("content, seq_len, steps", [("distractor", 8, T), ("silence", 8, T),
                                                   ("distractor", 3, 12), ("silence", 3, 12)])
def test_filter_posteriors_equal_brute_force(content, seq_len, steps):
    """Prefixes of T steps; and whole samples of 3 elements, where after the last element a symbol can
    only be a distractor (the filter once also read it as a next element)."""
    sampler = tiny_sampler(content, seq_len=seq_len)
    table = enumerate_prefixes(sampler, steps)
    assert sum(table.values()) == pytest.approx(1.0, abs=1e-12)
    filt = BayesFilter(sampler, "train")
    inputs = {xs for xs, _ in table}
    assert len(inputs) > 20
    assert seq_len == 8 or any(len(xs) < steps for xs in inputs)  # some samples end within the window
    for xs in inputs:
        posts = filt.posteriors(np.array(xs))
        for t in range(len(xs)):
            joint = defaultdict(float)
            for (xs2, ys2), q in table.items():
                if len(xs2) > t and xs2[: t + 1] == xs[: t + 1]:
                    joint[ys2[t]] += q
            z = sum(joint.values())
            expected = {s: q / z for s, q in joint.items() if q > 0}
            assert set(posts[t]) == set(expected)
            for s, q in expected.items():
                assert posts[t][s] == pytest.approx(q, rel=1e-9)


def clear_start_grammar():
    """A small grammar whose start states emit distinct letters: the first letter tells the state."""
    for seed in range(50):
        p = TaskParams(vocab_size=8, ambiguities=3, ambiguity_depth=3, seq_len=40, seed=seed)
        g = make_grammar(p)
        if len(set(g.state_symbol[g.start_states].tolist())) == p.start_states:
            return p, g
    raise AssertionError("no small grammar with distinct start letters")


def test_ceiling_is_below_one_only_where_history_is_ambiguous():
    amb = tiny_sampler("silence")
    c = bayes_ceiling(amb, "test", 300)
    assert 0.5 < c["element_accuracy"] < 1.0
    p, g = clear_start_grammar()
    clear = bayes_ceiling(Sampler(p, g), "test", 100)
    assert clear["element_accuracy"] == 1.0 and clear["step_accuracy"] == 1.0
