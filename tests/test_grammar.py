import json
import math

import numpy as np
import pytest

from selectivbench.builders import Grammar, ParameterError, TaskParams, make_grammar, task_params
from selectivbench.builders.grammar import END


def small(**kw):
    return TaskParams(**{**dict(vocab_size=6, ambiguities=2, ambiguity_depth=2, seq_len=12, seed=3), **kw})


def test_state_count_of_the_paper_scale():
    g = make_grammar(task_params("complexity"))
    assert g.num_states == 40 * 40 + 1
    assert g.states[0] == "#" and g.symbols[0] == "#"
    assert g.states[1:41] == [f"A{i}" for i in range(40)]


def test_dfa_each_symbol_leads_to_at_most_one_state():
    g = make_grammar(task_params("complexity", ambiguities=20, ambiguity_depth=20))
    seen = set()
    for src, dst, prob in g.to_json_dict()["edges"]:
        key = (src, g.state_symbol[dst])
        assert key not in seen
        seen.add(key)
        assert prob == pytest.approx(1 / g.out_degree[src])
    assert (g.next_state[END] < 0).all()


@pytest.mark.parametrize("seed", range(6))
def test_validity_every_state_reaches_end_and_starts_are_long_enough(seed):
    p = small(seed=seed, min_string_length=2)
    g = make_grammar(p)
    dist = g.distance_to_end()
    assert (dist >= 0).all()
    assert (dist[g.start_states] >= 2).all()
    assert len(set(g.start_states.tolist())) == p.start_states and END not in g.start_states


def test_same_seed_same_grammar_other_seed_other_grammar():
    a, b, c = make_grammar(small()), make_grammar(small()), make_grammar(small(seed=4))
    assert a.to_json_dict() == b.to_json_dict()
    assert a.to_json_dict()["edges"] != c.to_json_dict()["edges"]


def test_json_round_trip(tmp_path):
    g = make_grammar(small())
    g.save(tmp_path / "grammar.json")
    d = json.loads((tmp_path / "grammar.json").read_text())
    assert set(d) == {"symbols", "states", "state_symbol", "start_states", "edges", "params"}
    h = Grammar.load(tmp_path / "grammar.json")
    assert (h.next_state == g.next_state).all() and (h.start_states == g.start_states).all()
    assert h.states == g.states and d["params"]["seed"] == 3


def test_edge_law_ambiguous_at_density_plain_at_density_over_d():
    p = task_params("complexity", ambiguities=20, ambiguity_depth=20, seed=1)
    g = make_grammar(p)
    has = g.next_state[1:] >= 0  # sources other than '#'
    ambiguous = has[:, 1:21].mean()
    plain = has[:, 21:].mean()
    end = has[:, 0].mean()
    assert ambiguous == pytest.approx(0.4, abs=0.01)
    assert plain == pytest.approx(0.4 / 20, abs=0.005)
    assert end == pytest.approx(0.4 / 20, abs=0.01)


def test_topological_entropy_of_a_hand_made_grammar_is_log2_golden_ratio():
    # A -> A, A -> #, and '#' wired back to the start A: [[0, 1], [1, 1]]
    g = Grammar(["#", "A"], ["#", "A"], np.array([0, 1]), np.array([1]), np.array([[-1, -1], [0, 1]]), {})
    assert g.topological_entropy() == pytest.approx(math.log2((1 + 5 ** 0.5) / 2), rel=1e-12)


def test_impossible_grammar_names_the_parameters():
    # one letter, no ambiguity: 'A' reaches '#' in one edge, so no start state can need 3
    with pytest.raises(ParameterError, match=r"min_string_length=3"):
        make_grammar(TaskParams(vocab_size=2, ambiguities=0, ambiguity_depth=1, start_states=1,
                                min_string_length=3, seq_len=10))


def test_a_dfa_json_with_two_targets_for_one_symbol_is_refused():
    d = make_grammar(small()).to_json_dict()
    src, dst, _ = next(e for e in d["edges"] if d["states"][e[1]] == "A0")
    other = d["states"].index("A1")
    d["edges"].append([src, other, 0.5])
    with pytest.raises(ParameterError, match="edges"):
        Grammar.from_json_dict(d)
