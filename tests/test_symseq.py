"""grammar_rng='symseq' gives the very grammars of the paper's code (github symseqbench/selectivbench)."""
import dataclasses
import gzip
import hashlib
import json
import math
import re
from pathlib import Path

import pytest

from selectivbench.builders import Grammar, ParameterError, TaskParams, make_grammar, task_params
from selectivbench.builders import grammar_symseq
from selectivbench.builders.config import TASKS

# grammars drawn by the paper's code, kept in the repository (provenance: tests/data/README.md)
REFERENCE_DIR = Path(__file__).resolve().parent / "data" / "reference_grammars"
REFERENCE_FILES = sorted(REFERENCE_DIR.glob("grammar_*.json.gz"))
MISSING = f"reference grammars not found: expected grammar_*.json.gz files in {REFERENCE_DIR}"


def read_reference(path: Path) -> dict:
    with gzip.open(path, "rt") as f:
        return json.load(f)


def params_of(ref: dict, **extra) -> TaskParams:
    """The paper's generate_grammar arguments as TaskParams (its transition_density is density / d)."""
    p = ref["params"]
    return TaskParams(vocab_size=p["vocab_size"], ambiguities=p["ambiguities"], ambiguity_depth=p["ambiguity_depth"],
                      density=p["transition_density"], start_states=p["initial_states"], seed=p["seed"],
                      grammar_rng="symseq", **extra)


def by_name(g) -> dict:
    """The grammar in the reference's terms: states in the paper's order ('#' last), names everywhere."""
    return {"states": g.states[1:] + ["#"],
            "start_states": [g.states[s] for s in g.start_states.tolist()],
            "edges": sorted([g.states[s], g.states[t]] for s, t, _ in g.edges())}


def test_the_reference_grammars_are_present():
    assert REFERENCE_DIR.is_dir() and len(REFERENCE_FILES) >= 8, MISSING


@pytest.mark.parametrize("path", REFERENCE_FILES or [MISSING], ids=lambda p: getattr(p, "name", "missing"))
def test_port_draws_the_reference_grammar(path):
    assert REFERENCE_DIR.is_dir() and isinstance(path, Path), MISSING
    ref = read_reference(path)
    got = by_name(make_grammar(params_of(ref)))
    assert got["states"] == ref["states"]
    assert got["start_states"] == ref["start_states"]
    assert got["edges"] == sorted(ref["edges"])


def test_named_configs_at_their_default_seed_are_the_papers_task_grammar():
    ref = read_reference(REFERENCE_DIR / "grammar_V41_k40_d40_seed1.json.gz")
    grammar_fields = ("grammar_rng", "seed", "vocab_size", "ambiguities", "ambiguity_depth", "density",
                      "start_states", "min_string_length")
    for task in TASKS:  # every task shares the grammar: only gaps and noise differ
        p = task_params(task)
        assert [getattr(p, f) for f in grammar_fields] == ["symseq", 1, 41, 40, 40, 0.4, 4, 1]
    got = by_name(make_grammar(task_params("distractor")))
    assert got == {"states": ref["states"], "start_states": ref["start_states"], "edges": sorted(ref["edges"])}


# Fingerprints of what the paper's code drew (run beside the port, not committed), chosen to redraw
# often (draws: the paper's number of attempts) and to cover k = 0, d = 1, several densities,
# min_string_length and start_states: (V, k, d, seed, density, min_string_length, start_states).
PAPER_DRAWS = [
    ((2, 1, 1, 1, 0.4, 1, 1), 14, "d1668ce1d2c75965"),
    ((2, 0, 1, 3, 0.4, 1, 1), 14, "f6aed62829ce0684"),
    ((3, 0, 1, 5, 0.4, 1, 2), 1, "30a9d1cdd34c4cb3"),
    ((3, 2, 1, 7, 0.4, 1, 2), 16, "236d63806d57b46e"),
    ((4, 1, 3, 0, 0.9, 1, 2), 4, "ecf8260ab188bc73"),
    ((5, 1, 3, 11, 0.3, 2, 2), 141, "85c88f42ed67d0fb"),
    ((5, 4, 2, 2, 0.5, 3, 3), 46, "f7afc5a5ae811b81"),
    ((6, 2, 2, 3, 0.4, 1, 4), 36, "13bdc2f953a3032e"),
    ((6, 2, 2, 4, 0.4, 2, 4), 30, "748c62825e12cfc3"),
    ((7, 3, 5, 13, 0.6, 1, 4), 2, "cdbb5d398bcf2703"),
    ((8, 3, 3, 0, 0.4, 1, 4), 16, "10c5c2a110b90e23"),
    ((9, 0, 4, 21, 0.4, 1, 4), 244, "b5ab0c1bc572b9df"),
    ((10, 9, 3, 1, 0.2, 1, 4), 15, "66f57ee69c34270f"),
    ((12, 5, 7, 99, 0.7, 2, 5), 1, "1d286503f592b13f"),
    ((15, 14, 14, 17, 0.4, 1, 4), 1, "8221fc0cb9a8c560"),
    ((20, 0, 1, 2, 0.9, 1, 4), 1, "18ac771108901661"),
    ((27, 10, 6, 5, 0.4, 1, 4), 1, "458638410e6a7be3"),
    ((53, 52, 3, 1, 0.4, 1, 4), 1, "102c1bef28cd8e4e"),
]


@pytest.mark.parametrize("args, draws, fingerprint", PAPER_DRAWS, ids=[str(a[0]) for a in PAPER_DRAWS])
def test_port_matches_the_papers_draws_beyond_the_reference_files(args, draws, fingerprint):
    V, k, d, seed, density, min_len, starts = args
    g = make_grammar(TaskParams(vocab_size=V, ambiguities=k, ambiguity_depth=d, seed=seed, density=density,
                                min_string_length=min_len, start_states=starts))
    canon = json.dumps(by_name(g), sort_keys=True)
    assert hashlib.sha256(canon.encode()).hexdigest()[:16] == fingerprint


def test_running_out_of_draws_names_the_generator(monkeypatch):
    # the paper needed 141 attempts for this one: with 100 allowed there is none
    monkeypatch.setattr(grammar_symseq, "PAPER_MAX_DRAWS", 100)
    with pytest.raises(ParameterError, match=r"no valid grammar in 100 draws of the paper's generator .*"
                                             r"vocab_size=5, ambiguities=1, ambiguity_depth=3, density=0.3"):
        make_grammar(TaskParams(vocab_size=5, ambiguities=1, ambiguity_depth=3, seed=11, density=0.3,
                                min_string_length=2, start_states=2))


def test_a_grammar_whose_start_cannot_fit_seq_len_is_refused_not_redrawn():
    ref = read_reference(REFERENCE_DIR / "grammar_V9_k4_d4_seed2.json.gz")
    g = make_grammar(params_of(ref))
    need = int(g.distance_to_end()[g.start_states].max()) + 1  # elements of the shortest string from the far start
    assert need >= 3
    assert make_grammar(params_of(ref, seq_len=need)).to_json_dict()["edges"] == g.to_json_dict()["edges"]
    with pytest.raises(ParameterError, match=rf"seq_len={need - 1} is invalid: allowed \[{need}, inf\)"):
        make_grammar(params_of(ref, seq_len=need - 1))


def test_settings_the_papers_generator_cannot_express_are_refused_before_drawing():
    with pytest.raises(ParameterError, match=r"^ambiguity_depth=0 is invalid: allowed \[1, inf\) with grammar_rng"):
        TaskParams(vocab_size=5, ambiguities=0, ambiguity_depth=0, grammar_rng="symseq")
    # 3 letter states cannot be 5 edges away from '#': refused at once instead of 100,000 draws
    with pytest.raises(ParameterError, match=r"^min_string_length=5 is invalid: allowed \[1, 3\]"):
        make_grammar(TaskParams(vocab_size=4, ambiguities=0, ambiguity_depth=1, min_string_length=5, start_states=1))


def test_grammar_rng_is_a_cli_flag_and_a_builder_kwarg_recorded_in_grammar_json(tmp_path, capsys):
    from selectivbench.cli import main
    from selectivbench.hub.dataset_folder import make_builder

    small = dict(vocab_size=6, ambiguities=2, ambiguity_depth=2, seq_len=12, seed=3)
    main(["inspect", "complexity", "--samples", "4", "--vocab-size", "6", "--ambiguities", "2",
          "--ambiguity-depth", "2", "--seq-len", "12", "--seed", "3", "--grammar-rng", "selectivbench",
          "--grammar-json", str(tmp_path / "grammar.json")])
    assert '"grammar_rng": "selectivbench"' in capsys.readouterr().out
    written = Grammar.load(tmp_path / "grammar.json")
    assert written.params["grammar_rng"] == "selectivbench"
    assert written.to_json_dict() == make_grammar(task_params("complexity", **small,
                                                              grammar_rng="selectivbench")).to_json_dict()
    for rng in ("symseq", "selectivbench"):
        b = make_builder("complexity", cache_dir=str(tmp_path / rng), **small, grammar_rng=rng)
        assert b.config.params.grammar_rng == rng
        assert b.grammar.to_json_dict() == make_grammar(task_params("complexity", **small, grammar_rng=rng)).to_json_dict()
    with pytest.raises(ParameterError, match=r"grammar_rng='paper' is invalid: allowed one of \('symseq', 'selectivbench'\)"):
        make_builder("complexity", grammar_rng="paper").config.params


def test_the_smallest_density_the_error_names_is_drawable_and_one_below_is_not():
    """The bisected floor of the density check: allowed at the named value, refused just below it."""
    from selectivbench.builders.grammar_symseq import PAPER_MAX_DRAWS, _check_drawable, _log_pass_bound

    p = task_params("complexity")
    S = p.vocab_size - 1 - p.ambiguities + p.ambiguities * p.ambiguity_depth + 1
    with pytest.raises(ParameterError, match=r"allowed \[([0-9.e-]+), 1\]") as err:
        _check_drawable(dataclasses.replace(p, density=1e-30), S)
    floor = float(re.search(r"allowed \[([0-9.e-]+), 1\]", str(err.value)).group(1))
    limit = math.log(1e-6 / PAPER_MAX_DRAWS)
    assert _log_pass_bound(floor * 1.001, p, S) >= limit > _log_pass_bound(floor * 0.99, p, S)
    assert _log_pass_bound(p.density, p, S) >= limit  # the paper's own density is far above it
