import pytest

from selectivbench.builders import ParameterError, TaskParams, task_params
from selectivbench.builders.gap_law import duration_to_steps


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


def test_gaps_longer_than_the_draw_counters_hold_are_refused():
    """A gap step is 20 bits of the sampler's counters: a law that can draw longer gaps is refused up
    front (before, the training split was silently cut at 2**20 - 1 steps while the test split and
    the ceiling kept the full length)."""
    from selectivbench.builders.config import MAX_GAP_STEPS

    assert TaskParams(gap_law="fixed", gap_duration=8388.6, timestep=0.008).train_max_gap_steps == MAX_GAP_STEPS
    with pytest.raises(ParameterError, match=r"gap_duration=8388.7 is invalid: allowed a longest gap of at most"):
        TaskParams(gap_law="fixed", gap_duration=8388.7, timestep=0.008)
    with pytest.raises(ParameterError, match=r"gap_duration=1000.0 is invalid: allowed a longest gap of at most "
                                             r"1,048,575 steps of timestep=0.0005 \(this law draws gaps of up to "
                                             r"2,000,000 steps\)"):
        TaskParams(gap_law="fixed", gap_duration=1000.0, timestep=0.0005)
    with pytest.raises(ParameterError, match=r"gap_high=1000.0 is invalid: allowed a longest gap of at most"):
        TaskParams(gap_law="uniform", gap_low=0.1, gap_high=1000.0, timestep=0.0005)
    # lognormal: its cut at 9 sigmas, where the sampler and the ceiling stop, must fit
    with pytest.raises(ParameterError, match=r"gap_mean=0.0 is invalid: allowed a longest gap of at most"):
        TaskParams(gap_law="lognormal", gap_mean=0.0, gap_sigma=1.5)
    assert TaskParams(gap_law="lognormal", gap_mean=0.0, gap_sigma=1.2).longest_gap_steps == 490208
    # sigma 0 is not a lognormal law (the ceiling divides by it)
    with pytest.raises(ParameterError, match=r"gap_sigma=0.0 is invalid: allowed \(0.0, 3.0\]"):
        TaskParams(gap_law="lognormal", gap_sigma=0.0)


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
