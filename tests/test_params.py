import pytest

from selectivbench.builders import ParameterError, TaskParams, task_params
from selectivbench.builders.config import duration_to_steps


@pytest.mark.parametrize("field, value, allowed", [
    ("vocab_size", 54, r"\[2, 53\]"),
    ("vocab_size", 1, r"\[2, 53\]"),
    ("ambiguities", 41, r"\[0, 40\]"),
    ("density", 0.0, r"\(0.0, 1.0\]"),
    ("density", 1.5, r"\(0.0, 1.0\]"),
    ("gap_prob", -0.1, r"\[0.0, 1.0\]"),
    ("gap_prob", 1.1, r"\[0.0, 1.0\]"),
    ("noise", -0.2, r"\[0.0, 1.0\]"),
    ("seq_len", 0, r"\[2, inf\]"),
    ("gap_content", "static", "silence"),
    ("gap_law", "poisson", "lognormal"),
    ("start_states", 0, r"\[1, "),
    ("seed", -1, r"\[0, "),
    ("vocab_size", 6.5, "an integer"),
    ("grammar_rng", "paper", r"one of \('symseq', 'selectivbench'\)"),
])
def test_bad_value_names_field_value_and_range(field, value, allowed):
    with pytest.raises(ParameterError) as err:
        TaskParams(**{field: value})
    msg = str(err.value)
    assert msg.startswith(f"{field}={value!r} is invalid")
    assert __import__("re").search(allowed, msg)


def test_depth_zero_with_ambiguities_and_low_above_high():
    with pytest.raises(ParameterError, match=r"ambiguity_depth=0 is invalid.*\[1, "):
        TaskParams(ambiguities=3, ambiguity_depth=0)
    assert TaskParams(vocab_size=5, ambiguities=0, ambiguity_depth=0, grammar_rng="selectivbench").ambiguity_depth == 0
    # the paper's generator divides density by ambiguity_depth even without ambiguous letters
    with pytest.raises(ParameterError, match=r"ambiguity_depth=0 is invalid: allowed \[1, inf\) with grammar_rng"):
        TaskParams(vocab_size=5, ambiguities=0, ambiguity_depth=0)
    with pytest.raises(ParameterError, match=r"gap_high=0.2 is invalid.*\[0.5, "):
        TaskParams(gap_law="uniform", gap_low=0.5, gap_high=0.2)


def test_unknown_task_and_unknown_parameter():
    with pytest.raises(ParameterError, match="task='copying' is invalid"):
        task_params("copying")
    with pytest.raises(ParameterError, match=r"unknown parameter\(s\) \['gap_lenght'\]"):
        TaskParams.from_dict({"gap_lenght": 3})


def test_duration_rounding_matches_the_spec():
    # uniform(0.1, 1.0) gives 1..10 steps; 1.1 time units are 11 steps despite 1.1/0.1 > 11
    assert [duration_to_steps(t / 10, 0.1) for t in range(1, 12)] == list(range(1, 12))
    assert duration_to_steps(0.04, 0.1) == 0
    assert task_params("gapped").train_max_gap_steps == 10
    assert task_params("complexity").train_max_gap_steps == 1
