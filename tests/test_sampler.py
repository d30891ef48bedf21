from collections import Counter
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from selectivbench.builders import Sampler, TaskParams, bayes_ceiling, make_grammar, task_params
from selectivbench.builders.grammar import END
from selectivbench.builders.sampler import rejection_string

from helpers import complete_strings

SMALL = dict(vocab_size=6, ambiguities=2, ambiguity_depth=2, seq_len=30, seed=5)


def make(**kw):
    p = TaskParams(**{**SMALL, **kw})
    return Sampler(p, make_grammar(p))


def element_states(row):
    first = np.flatnonzero(np.diff(row["element_index"], prepend=-1))
    return row["labels"][first], first


def test_every_transition_is_an_edge_and_labels_follow_the_walk():
    s = make(gap_law="uniform", gap_low=0.1, gap_high=0.5)
    g = s.grammar
    batch = s.generate("train", np.arange(300))
    for row in batch.rows():
        states, first = element_states(row)
        assert (row["element_index"][first] == np.arange(len(first))).all()
        assert len(first) == 30
        assert (row["input_ids"][first] == g.state_symbol[states]).all()
        assert states[0] in g.start_states
        for a, b in zip(states[:-1], states[1:]):
            assert b in g.start_states if a == END else g.next_state[a, g.state_symbol[b]] == b
        # labels repeat over the gap steps, which are silent
        assert (row["labels"] == np.repeat(states, np.diff(np.append(first, len(row["labels"]))))).all()
        gap = np.ones(len(row["labels"]), bool)
        gap[first] = False
        assert (row["input_ids"][gap] == s.params.gap_id).all()


def test_strings_start_at_start_states_and_fit_the_length_bound():
    s = make(seq_len=12)
    for row in s.generate("train", np.arange(500)).rows():
        states, _ = element_states(row)
        ends = np.flatnonzero(states == END)
        starts = np.concatenate([[0], ends[:-1] + 1])
        assert (np.diff(np.concatenate([[-1], ends])) <= 12).all()
        assert np.isin(states[starts], s.grammar.start_states).all()


def test_distractors_are_forbidden_symbols_and_only_after_gap_start():
    s = make(gap_content="distractor", gap_prob=0.5, gap_start=4)
    g = s.grammar
    n_gap = 0
    for row in s.generate("validation", np.arange(300)).rows():
        states, first = element_states(row)
        gap = np.ones(len(row["labels"]), bool)
        gap[first] = False
        assert (row["element_index"][gap] >= 4).all()
        for x, state in zip(row["input_ids"][gap], row["labels"][gap]):
            forbidden = g.forbidden_symbols(state)
            assert x in forbidden if len(forbidden) else x == s.params.gap_id
            n_gap += 1
    assert n_gap > 1000


@pytest.mark.parametrize("law", [dict(gap_law="uniform", gap_low=0.1, gap_high=1.0),
                                 dict(gap_law="lognormal", gap_mean=-1.0, gap_sigma=0.6),
                                 dict(gap_law="fixed", gap_duration=0.3)])
def test_gap_lengths_follow_their_law(law):
    s = make(gap_prob=0.7, gap_start=2, **law)
    batch = s.generate("train", np.arange(2000))
    gaps = np.diff(batch.offsets) - batch.num_elements  # total gap steps per sample
    per_elem = []
    for row in batch.rows():
        _, first = element_states(row)
        per_elem.append(np.diff(np.append(first, len(row["labels"]))) - 1)
    per_elem = np.stack(per_elem)
    assert per_elem.sum(1).tolist() == gaps.tolist()
    assert (per_elem[:, :2] == 0).all()
    law_pmf = s.params.duration_law.step_pmf()
    expected = {k: 0.7 * w for k, w in law_pmf.items()}
    expected[0] = expected.get(0, 0) + 0.3
    got = Counter(per_elem[:, 2:].ravel().tolist())
    n = per_elem[:, 2:].size
    tv = 0.5 * sum(abs(got.get(k, 0) / n - expected.get(k, 0)) for k in set(got) | set(expected))
    assert tv < 0.01


def test_uniform_one_to_ten_has_half_weight_ends():
    pmf = task_params("gapped").duration_law.step_pmf()
    assert list(pmf) == list(range(1, 11))
    assert pmf[1] == pytest.approx(1 / 18) and pmf[10] == pytest.approx(1 / 18) and pmf[5] == pytest.approx(1 / 9)


@pytest.mark.parametrize("law", [dict(gap_law="fixed", gap_duration=d) for d in (0.05, 0.15, 0.45, 0.95)]
                         + [dict(gap_law="uniform", gap_low=0.1, gap_high=h) for h in (0.35, 0.45, 0.65)])
def test_test_gap_and_ceiling_law_are_the_gaps_training_draws(law):
    # halves such as 0.45 round one way in numpy (the sampler's rule) and the other in Python's round
    s = make(gap_prob=1.0, gap_start=0, **law)
    drawn = set()
    for row in s.generate("train", np.arange(300)).rows():
        _, first = element_states(row)
        drawn |= set((np.diff(np.append(first, len(row["labels"]))) - 1).tolist())
    assert max(drawn) == s.params.train_max_gap_steps
    assert set(s.params.duration_law.step_pmf()) == drawn
    test = s.generate("test", np.arange(5))
    assert (np.diff(test.offsets) == test.num_elements * (1 + max(drawn))).all()
    p = s.params.replace(gap_content="distractor")
    bayes_ceiling(Sampler(p, make_grammar(p)), "train", 20)  # the data is possible under the ceiling's law


def test_test_splits_have_the_fixed_gaps():
    s = make(gap_law="uniform", gap_low=0.1, gap_high=0.6, test_gaps=(3, 20))
    for split, g in [("test", 6), ("test_gap3", 3), ("test_gap20", 20)]:
        b = s.generate(split, np.arange(5))
        assert (np.diff(b.offsets) == b.num_elements * (1 + g)).all()


def test_a_sample_is_a_pure_function_of_seed_split_index():
    s = make(gap_law="uniform", gap_low=0.1, gap_high=0.5, gap_content="distractor", seq_len_min=10)
    big = s.generate("train", np.arange(40))
    alone = s.generate("train", [17]).row(0)
    again = make(gap_law="uniform", gap_low=0.1, gap_high=0.5, gap_content="distractor",
                 seq_len_min=10).generate("train", np.arange(10, 20)).row(7)
    for k in ("input_ids", "labels", "element_index"):
        assert np.array_equal(big.row(17)[k], alone[k]) and np.array_equal(alone[k], again[k])
    assert len(set(big.num_elements.tolist())) > 5  # seq_len_min..seq_len varies per sample


def _chunk(args):
    kw, lo, hi = args
    b = make(**kw).generate("train", np.arange(lo, hi))
    return b.input_ids.tobytes(), b.labels.tobytes(), b.element_index.tobytes(), b.num_elements.tobytes()


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_identical_bytes_whatever_the_number_of_processes(workers):
    kw = dict(gap_law="uniform", gap_low=0.1, gap_high=0.5, gap_content="distractor", gap_prob=0.3)
    one = _chunk((kw, 0, 120))
    bounds = np.linspace(0, 120, workers + 1).astype(int)
    with ProcessPoolExecutor(workers) as pool:
        parts = list(pool.map(_chunk, [(kw, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]))
    assert tuple(b"".join(p[i] for p in parts) for i in range(4)) == one


def test_splits_are_disjoint_and_seeds_differ_at_index_zero():
    s = make()
    seqs = {split: {tuple(r["input_ids"].tolist()) for r in s.generate(split, np.arange(1000)).rows()}
            for split in ("train", "validation", "test")}
    assert all(len(v) == 1000 for v in seqs.values())
    assert not seqs["train"] & seqs["validation"] and not seqs["train"] & seqs["test"]
    assert not seqs["validation"] & seqs["test"]
    other = make(seed=6).generate("train", [0]).row(0)["input_ids"]
    assert not np.array_equal(other, s.generate("train", [0]).row(0)["input_ids"])


# --- the conditioned string law equals the reference's rejection law ---

RARE_END = dict(vocab_size=5, ambiguities=2, ambiguity_depth=2, density=0.6, seq_len=7, seed=11)


def test_h_transform_gives_exactly_the_rejection_law():
    s = make(**RARE_END)
    law, g = s.law, s.grammar
    exact = complete_strings(g, 7)
    assert 0.05 < sum(exact.values()) and len(exact) > 20
    for string, prob in exact.items():
        p = law.start_prob[list(g.start_states).index(string[0])]
        for pos, (a, b) in enumerate(zip(string[:-1], string[1:])):
            r = 7 - 1 - pos
            p *= law.h[r - 1, b] / g.out_degree[a] / law.h[r, a]
        assert p == pytest.approx(prob, rel=1e-12, abs=1e-15)
    pmf = np.zeros(8)
    for string, prob in exact.items():
        pmf[len(string)] += prob
    assert np.allclose(law.length_pmf(), pmf, atol=1e-12)


def _chi2(counts: Counter, exact: dict, n: int) -> tuple[float, int]:
    stat = sum((counts.get(k, 0) - n * p) ** 2 / (n * p) for k, p in exact.items())
    assert set(counts) <= set(exact)
    return stat, len(exact) - 1


def test_sampler_and_plain_rejection_walker_fit_the_same_string_law():
    s = make(**RARE_END)
    exact = complete_strings(s.grammar, 7)
    n = 60000
    fast = Counter()
    for row in s.generate("train", np.arange(n)).rows():
        states, _ = element_states(row)
        fast[tuple(states[: np.flatnonzero(states == END)[0] + 1].tolist())] += 1
    rng = np.random.default_rng(0)
    slow = Counter(tuple(rejection_string(s.grammar, rng, 7)) for _ in range(n))
    for counts in (fast, slow):
        stat, dof = _chi2(counts, exact, n)
        assert stat < dof + 4 * (2 * dof) ** 0.5  # about p = 1e-4; 10% fewer long strings fails
