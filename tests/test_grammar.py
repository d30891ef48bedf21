import json
import math

import numpy as np
import pytest

from selectivbench.builders import Grammar, ParameterError, TaskParams, make_grammar, task_params
from selectivbench.builders.grammar import END


RNGS = ("symseq", "selectivbench")


def small(**kw):
    return TaskParams(**{**dict(vocab_size=6, ambiguities=2, ambiguity_depth=2, seq_len=12, seed=3), **kw})


def test_state_count_of_the_paper_scale():
    for rng in RNGS:
        g = make_grammar(task_params("complexity", grammar_rng=rng))
        assert g.num_states == 40 * 40 + 1
        assert g.states[0] == "#" and g.symbols[0] == "#"
        # every letter is ambiguous: its 40 states are consecutive, in index order
        blocks = [g.states[1 + 40 * j: 41 + 40 * j] for j in range(40)]
        assert sorted(b[0][0] for b in blocks) == g.symbols[1:]
        assert all(b == [f"{b[0][0]}{i}" for i in range(40)] for b in blocks)
        assert all(g.symbols[g.state_symbol[s]] == g.states[s][0] for s in range(g.num_states))
    # the project's generator lists ambiguous letters alphabetically, the paper's in sampled order
    assert make_grammar(task_params("complexity", grammar_rng="selectivbench")).states[1:41] == [
        f"A{i}" for i in range(40)]


@pytest.mark.parametrize("rng", RNGS)
def test_dfa_each_symbol_leads_to_at_most_one_state(rng):
    g = make_grammar(task_params("complexity", ambiguities=20, ambiguity_depth=20, grammar_rng=rng))
    seen = set()
    for src, dst, prob in g.to_json_dict()["edges"]:
        key = (src, g.state_symbol[dst])
        assert key not in seen
        seen.add(key)
        assert prob == pytest.approx(1 / g.out_degree[src])
    assert (g.next_state[END] < 0).all()


@pytest.mark.parametrize("rng", RNGS)
@pytest.mark.parametrize("seed", range(6))
def test_validity_every_state_reaches_end_and_starts_are_long_enough(seed, rng):
    p = small(seed=seed, min_string_length=2, grammar_rng=rng)
    g = make_grammar(p)
    dist = g.distance_to_end()
    assert (dist >= 0).all()
    assert (dist[g.start_states] >= 2).all()
    assert len(set(g.start_states.tolist())) == p.start_states and END not in g.start_states


@pytest.mark.parametrize("rng", RNGS)
def test_same_seed_same_grammar_other_seed_other_grammar(rng):
    a, b = make_grammar(small(grammar_rng=rng)), make_grammar(small(grammar_rng=rng))
    c = make_grammar(small(seed=4, grammar_rng=rng))
    assert a.to_json_dict() == b.to_json_dict()
    assert a.to_json_dict()["edges"] != c.to_json_dict()["edges"]


def test_the_two_generators_draw_different_grammars_of_the_same_shape():
    every_letter_ambiguous = dict(ambiguities=5)  # so both generators name the same states
    a = make_grammar(small(**every_letter_ambiguous))
    b = make_grammar(small(**every_letter_ambiguous, grammar_rng="selectivbench"))
    assert a.params["grammar_rng"] == "symseq" and b.params["grammar_rng"] == "selectivbench"
    assert sorted(a.states) == sorted(b.states) and a.symbols == b.symbols
    assert a.to_json_dict()["edges"] != b.to_json_dict()["edges"]


def test_json_round_trip(tmp_path):
    g = make_grammar(small())
    (tmp_path / "grammar.json").write_text(g.to_json())
    d = json.loads((tmp_path / "grammar.json").read_text())
    assert set(d) == {"symbols", "states", "state_symbol", "start_states", "edges", "params"}
    h = Grammar.load(tmp_path / "grammar.json")
    assert (h.next_state == g.next_state).all() and (h.start_states == g.start_states).all()
    assert h.states == g.states and d["params"]["seed"] == 3


@pytest.mark.parametrize("rng", RNGS)
def test_edge_law_ambiguous_at_density_plain_at_density_over_d(rng):
    p = task_params("complexity", ambiguities=20, ambiguity_depth=20, seed=1, grammar_rng=rng)
    g = make_grammar(p)
    has = g.next_state[1:] >= 0  # sources other than '#'
    emitters_per_symbol = np.bincount(g.state_symbol, minlength=g.num_symbols)
    assert sorted(emitters_per_symbol.tolist()) == [1] * 21 + [20] * 20
    ambiguous = has[:, emitters_per_symbol == 20].mean()
    plain = has[:, (emitters_per_symbol == 1) & (np.arange(g.num_symbols) != END)].mean()
    end = has[:, END].mean()
    sources = g.num_states - 1
    assert ambiguous == pytest.approx(0.4, abs=three_sigma(0.4, sources * 20))
    assert plain == pytest.approx(0.4 / 20, abs=three_sigma(0.4 / 20, sources * 20))
    assert end == pytest.approx(0.4 / 20, abs=three_sigma(0.4 / 20, sources))


def three_sigma(p, n):
    """Three standard deviations of a frequency of n Bernoulli(p) draws."""
    return 3 * math.sqrt(p * (1 - p) / n)


def test_topological_entropy_of_a_hand_made_grammar_is_log2_golden_ratio():
    # A -> A, A -> #, and '#' wired back to the start A: [[0, 1], [1, 1]]
    g = Grammar(["#", "A"], ["#", "A"], np.array([0, 1]), np.array([1]), np.array([[-1, -1], [0, 1]]), {})
    assert g.topological_entropy() == pytest.approx(math.log2((1 + 5 ** 0.5) / 2), rel=1e-12)


@pytest.mark.parametrize("rng", RNGS)
def test_impossible_grammar_names_the_parameters(rng):
    # one letter, no ambiguity: 'A' reaches '#' in one edge, so no start state can need 3
    with pytest.raises(ParameterError, match=r"min_string_length=3"):
        make_grammar(TaskParams(vocab_size=2, ambiguities=0, ambiguity_depth=1, start_states=1,
                                min_string_length=3, seq_len=10, grammar_rng=rng))


def test_a_dfa_json_with_two_targets_for_one_symbol_is_refused():
    d = make_grammar(small()).to_json_dict()
    symbol = d["state_symbol"]
    # an edge into an ambiguous state, and a second state that emits the same letter
    src, dst, _ = next(e for e in d["edges"] if symbol.count(symbol[e[1]]) > 1)
    other = next(s for s in range(len(symbol)) if symbol[s] == symbol[dst] and s != dst)
    d["edges"].append([src, other, 0.5])
    with pytest.raises(ParameterError, match="edges"):
        Grammar.from_json_dict(d)
