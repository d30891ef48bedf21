"""A broken grammar.json is refused on load with one ParameterError naming the file and the fault."""
import json

import numpy as np
import pytest

from selectivbench.builders import Grammar, ParameterError, TaskParams, make_grammar


def good_dict() -> dict:
    p = TaskParams(vocab_size=6, ambiguities=2, ambiguity_depth=2, seq_len=12, seed=3)
    return make_grammar(p).to_json_dict()


def _set(path, value):
    def edit(d):
        *head, last = path
        target = d
        for key in head:
            target = target[key]
        target[last] = value
    return edit


def _delete(key):
    return lambda d: d.pop(key)


def _append_edge(edge):
    return lambda d: d["edges"].append(edge)


def _params(**changes):
    return lambda d: d["params"].update(changes)


# (case, edit of the dict, pattern the message must contain after the file name)
CASES = [
    ("missing key", _delete("edges"), r"missing key\(s\) \['edges'\]"),
    ("edges not a list", _set(["edges"], {"0": 1}), r"edges='dict' is invalid: allowed a list"),
    ("edge to state 9999", _set(["edges", 0, 1], 9999), r"edges\[0\]=\[\d+, 9999, .*state indices in \[0, 8\)"),
    ("negative source", _set(["edges", 0, 0], -1), r"edges\[0\]=\[-1, .*state indices in \[0, 8\)"),
    ("negative target", _set(["edges", 0, 1], -2), r"edges\[0\]=\[\d+, -2, .*state indices in \[0, 8\)"),
    ("float index", _set(["edges", 0, 1], 1.0), r"edges\[0\]=.*\[source index, target index, probability\]"),
    ("'#' with an out-edge", _append_edge([0, 1, 1.0]), r"no edge out of state 0"),
    ("bad probability", _set(["edges", 0, 2], 0.123), r"edges\[0\] probability=0.123 is invalid: allowed 1/out-degree"),
    ("NaN probability", _set(["edges", 0, 2], float("nan")), r"edges\[0\] probability=nan"),
    ("edge listed twice", lambda d: d["edges"].append(list(d["edges"][0])), r"repeats edges\[0\]"),
    ("start state '#'", _set(["start_states", 0], 0), r"start_states=\[0, .*'#' cannot start"),
    ("start state out of range", _set(["start_states", 0], 8), r"start_states=\[8, .*\[1, 8\)"),
    ("start states repeated", lambda d: d.update(start_states=[d["start_states"][0]] * 4), r"distinct states"),
    ("no start state", _set(["start_states"], []), r"start_states=\[\] is invalid: allowed at least one"),
    ("state_symbol too short", lambda d: d["state_symbol"].pop(), r"state_symbol='7 entries'.*one per state \(8\)"),
    ("negative state_symbol", _set(["state_symbol", 1], -1), r"state_symbol\[1\]=-1 .*\[0, 6\)"),
    ("state emits another letter", _set(["state_symbol", 1], 5), r"state_symbol\[1\]=5 is invalid: allowed the symbol"),
    ("'#' not state 0", _set(["states", 0], "Z"), r"states\[0\]='Z' is invalid"),
    ("duplicate state names", lambda d: d["states"].__setitem__(2, d["states"][1]), r"states=.* distinct names"),
    ("symbols not the alphabet", _set(["symbols", 1], "Q"), r"symbols=\['#', 'Q'"),
    ("params vocab_size mismatch", _params(vocab_size=7), r"params do not match the grammar: it has 6 vocab size"),
    ("params states mismatch", _params(ambiguity_depth=3), r"it has 8 states, params .* give 10"),
    ("params start_states mismatch", _params(start_states=3), r"it has 4 start states"),
    ("params invalid", _params(density=2.0), r"params: density=2.0 is invalid"),
    ("params unknown field", _params(colour="red"), r"params: unknown parameter\(s\) \['colour'\]"),
    ("params not an object", _set(["params"], [1]), r"params='list' is invalid"),
]


@pytest.mark.parametrize("case, edit, problem", CASES, ids=[c[0] for c in CASES])
def test_a_broken_grammar_file_names_the_file_and_the_problem(tmp_path, case, edit, problem):
    d = good_dict()
    edit(d)
    path = tmp_path / "grammar.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ParameterError, match=rf"^{path}: .*{problem}"):
        Grammar.load(path)


def test_a_truncated_or_undecodable_file_is_a_parameter_error(tmp_path):
    text = json.dumps(good_dict())
    path = tmp_path / "grammar.json"
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ParameterError, match=rf"^{path}: not valid JSON \(.*line 1 column"):
        Grammar.load(path)
    path.write_bytes(b"\xff\xfe\xfa" + text.encode())
    with pytest.raises(ParameterError, match=rf"^{path}: not valid JSON"):
        Grammar.load(path)
    with pytest.raises(ParameterError, match=r"^grammar JSON: grammar='list' is invalid"):
        Grammar.from_json_dict([])


def test_the_unbroken_file_loads_to_the_same_grammar(tmp_path):
    g = make_grammar(TaskParams(vocab_size=6, ambiguities=2, ambiguity_depth=2, seq_len=12, seed=3))
    (tmp_path / "grammar.json").write_text(g.to_json())
    h = Grammar.load(tmp_path / "grammar.json")
    assert h.to_json_dict() == g.to_json_dict()
    assert np.array_equal(h.next_state, g.next_state) and h.next_state.dtype == np.int64
    assert [p.name for p in tmp_path.iterdir()] == ["grammar.json"]  # the atomic write left no temporary file


def test_a_file_from_before_grammar_rng_reads_as_the_project_generator(tmp_path):
    d = make_grammar(TaskParams(vocab_size=6, ambiguities=2, ambiguity_depth=2, seq_len=12, seed=0,
                                grammar_rng="selectivbench")).to_json_dict()
    del d["params"]["grammar_rng"]
    (tmp_path / "grammar.json").write_text(json.dumps(d))
    g = Grammar.load(tmp_path / "grammar.json")
    assert g.params["grammar_rng"] == "selectivbench" and g.params["seed"] == 0
    assert g.to_json_dict() == make_grammar(TaskParams.from_dict(g.params)).to_json_dict()
