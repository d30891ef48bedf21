"""Task parameters of SelectivBench (SPEC §1-4) and their validation.

One frozen dataclass holds every knob of a task, so that (params, seed, split, index) names a
sample everywhere: in the sampler, in the datasets builder config and in the cache key.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from ..errors import ParameterError, check_choice, check_int, check_real, fail, is_int, is_number
from .gap_law import GAP_LAWS, GapLaw

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
MAX_VOCAB = len(LETTERS) + 1  # the letters plus the end-of-string marker '#'
# A gap step is the low 20 bits of the sampler's draw counters: no gap is longer than this
MAX_GAP_STEPS = (1 << 20) - 1
GAP_CONTENTS = ("silence", "distractor")
GRAMMAR_RNGS = ("symseq", "selectivbench")


def _check_int(name, value, low, high=None):
    bounds = f"[{low}, {high if high is not None else 'inf'}]"
    if not is_int(value):
        fail(name, value, f"an integer in {bounds}")
    check_int(name, value, low, high, allowed=bounds)


def _check_float(name, value, low, high=None, low_open=False):
    if not is_number(value):
        fail(name, value, "a finite number")
    check_real(name, value, low, math.inf if high is None else high, low_open,
               allowed=f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'}]")


@dataclass(frozen=True)
class TaskParams:
    """Every parameter of a SelectivBench task. Defaults are the paper's task 1 at k = d = 40."""

    # --- grammar (SPEC §1) ---
    vocab_size: int = 41
    """Number of symbols, the end-of-string marker '#' included (V-1 letters)."""
    ambiguities: int = 40
    """Number k of ambiguous letters, each split into `ambiguity_depth` states."""
    ambiguity_depth: int = 40
    """Number d of states that emit each ambiguous letter."""
    density: float = 0.4
    """Edge density: an ambiguous symbol is reached with this probability, a plain one with density/d."""
    start_states: int = 4
    """Number of distinct non-'#' start states."""
    min_string_length: int = 1
    """Shortest path from every start state to '#' must have at least this many edges."""
    seed: int = 1
    """Task seed: draws the grammar, and with (split, index) every sample. Default 1, the paper's first
    seed (it uses 1-4): with grammar_rng='symseq' the named configs are then the paper's task grammars."""
    grammar_rng: str = "symseq"
    """Grammar generator: 'symseq' repeats the paper's code draw for draw (numpy default_rng(seed)), so
    (params, seed) gives the paper's very grammar; 'selectivbench' is this project's own, vectorised
    generator of the same law (SPEC §1). Samples are drawn by this project's sampler either way."""

    # --- sequences (SPEC §2) ---
    seq_len: int = 200
    """Elements per sequence (the maximum when `seq_len_min` is set); also bounds a string's length."""
    seq_len_min: int | None = None
    """If set, each sequence has a uniform random length in [seq_len_min, seq_len]."""

    # --- gaps, noise, distractors (SPEC §3) ---
    gap_start: int = 0
    """Gaps may follow elements from this element index on."""
    gap_prob: float = 1.0
    """Probability that a gap follows an element (from `gap_start` on)."""
    gap_law: str = "fixed"
    """Gap duration law: 'fixed' (gap_duration), 'uniform' (gap_low, gap_high) or 'lognormal' (gap_mean, gap_sigma)."""
    gap_duration: float = 0.1
    """Duration of a 'fixed' gap, in time units (one step = `timestep`)."""
    gap_low: float = 0.1
    """Lower bound of a 'uniform' gap duration."""
    gap_high: float = 1.0
    """Upper bound of a 'uniform' gap duration."""
    gap_mean: float = -1.0
    """Mean of the underlying normal of a 'lognormal' gap duration."""
    gap_sigma: float = 0.5
    """Standard deviation of the underlying normal of a 'lognormal' gap duration."""
    timestep: float = 0.1
    """Duration of one step; a gap of duration t lasts ceil(t rounded to one decimal / timestep) steps
    (numpy's rounding, half to even: `gap_law.duration_to_steps`)."""
    gap_content: str = "silence"
    """'silence' (zero input) or 'distractor' (a symbol forbidden after the current state)."""
    noise: float = 0.0
    """Uniform noise in [0, noise) added to every input entry (applied by the collator/model)."""
    test_gaps: tuple[int, ...] = field(default_factory=tuple)
    """Fixed gap lengths (in steps) of the extra test splits `test_gap{g}`; empty: none."""

    def __post_init__(self):
        object.__setattr__(self, "test_gaps", tuple(self.test_gaps))
        validate(self)

    # Derived quantities, kept here so every module agrees on them.
    @property
    def num_symbols(self) -> int:
        return self.vocab_size

    @property
    def gap_id(self) -> int:
        """Token id of a silent step: one past the symbols (SPEC §7)."""
        return self.vocab_size

    @property
    def max_string_length(self) -> int:
        """A string longer than this many elements is rejected (SPEC §2)."""
        return self.seq_len

    @property
    def duration_law(self) -> GapLaw:
        """The gap duration law `gap_law` names, with its fields (gap_law.py)."""
        return GAP_LAWS[self.gap_law].of(self)

    @property
    def longest_gap_steps(self) -> int:
        """The longest gap the training law can draw, in steps (lognormal: at its cut)."""
        return self.duration_law.longest_steps()

    @property
    def train_max_gap_steps(self) -> int:
        """The largest gap the training law can draw, in steps (the test splits' fixed gap;
        lognormal, which has no maximum: its 99th percentile)."""
        return self.duration_law.test_steps()

    def replace(self, **changes) -> "TaskParams":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["test_gaps"] = list(self.test_gaps)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TaskParams":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ParameterError(f"unknown parameter(s) {unknown}: allowed {sorted(known)}")
        return cls(**d)


def params_problem(value) -> str | None:
    """What keeps a JSON value from being a TaskParams (a record's parameters, read from disk), or None."""
    if not isinstance(value, dict):
        return "allowed an object of task parameters"
    try:
        TaskParams.from_dict(value)
    except (ParameterError, TypeError) as err:
        return str(err)
    return None


def gap_split(gap_steps: int) -> str:
    """Name of the test split with a fixed gap of this many steps (SPEC §3)."""
    return f"test_gap{gap_steps}"


def gap_of_split(split: str) -> int | None:
    """The fixed gap of a `test_gap{g}` split, None for any other name."""
    rest = split[len("test_gap"):] if split.startswith("test_gap") else ""
    return int(rest) if rest.isdigit() else None


def validate(p: TaskParams) -> None:
    """Raise one ParameterError naming the first bad field, its value and the allowed range."""
    _check_int("vocab_size", p.vocab_size, 2, MAX_VOCAB)
    _check_int("ambiguities", p.ambiguities, 0, p.vocab_size - 1)
    _check_int("ambiguity_depth", p.ambiguity_depth, 1 if p.ambiguities > 0 else 0)
    if p.ambiguities > 0 and p.ambiguity_depth > 256:
        fail("ambiguity_depth", p.ambiguity_depth, "[1, 256]")
    _check_float("density", p.density, 0.0, 1.0, low_open=True)
    num_plain_states = (p.vocab_size - 1 - p.ambiguities) + p.ambiguities * p.ambiguity_depth
    _check_int("start_states", p.start_states, 1, num_plain_states)
    _check_int("min_string_length", p.min_string_length, 1, p.seq_len - 1 if p.seq_len > 1 else 1)
    _check_int("seed", p.seed, 0, 2**63 - 1)
    check_choice("grammar_rng", p.grammar_rng, GRAMMAR_RNGS)
    if p.grammar_rng == "symseq" and p.ambiguity_depth < 1:  # the paper divides density by it
        fail("ambiguity_depth", p.ambiguity_depth, "[1, inf) with grammar_rng='symseq'")
    _check_int("seq_len", p.seq_len, 2)
    if p.seq_len_min is not None:
        _check_int("seq_len_min", p.seq_len_min, 1, p.seq_len)
    _check_int("gap_start", p.gap_start, 0)
    _check_float("gap_prob", p.gap_prob, 0.0, 1.0)
    check_choice("gap_law", p.gap_law, tuple(GAP_LAWS))
    _check_float("timestep", p.timestep, 0.0, low_open=True)
    law = p.duration_law
    for name, value, low, high, low_open in law.bounds():
        _check_float(name, value, low, high, low_open)
    try:
        longest = law.longest_steps()
    except OverflowError:  # a timestep so small that the gap in steps is infinite
        longest = math.inf
    if longest > MAX_GAP_STEPS:
        fail(law.LIMIT_FIELD, getattr(p, law.LIMIT_FIELD), f"a longest gap of at most {MAX_GAP_STEPS:,} steps of "
             f"timestep={p.timestep} (this law draws gaps of up to {longest:,} steps)")
    check_choice("gap_content", p.gap_content, GAP_CONTENTS)
    _check_float("noise", p.noise, 0.0, 1.0)
    for g in p.test_gaps:
        _check_int("test_gaps", g, 0, 100_000)
    if len(set(p.test_gaps)) != len(p.test_gaps):
        fail("test_gaps", p.test_gaps, "distinct gap lengths")


# The paper's four tasks (SPEC §4). Each is a set of overrides of TaskParams' defaults.
TASKS: dict[str, dict] = {
    "complexity": dict(gap_law="fixed", gap_duration=0.1),
    "gapped": dict(gap_law="uniform", gap_low=0.1, gap_high=1.0, noise=0.2),
    "distractor": dict(gap_law="fixed", gap_duration=0.1, gap_content="distractor", gap_prob=0.1,
                       gap_start=50),
    "generalization": dict(gap_law="uniform", gap_low=0.1, gap_high=1.0, noise=0.2,
                           test_gaps=(10, 20, 50, 100)),
}

TASK_DESCRIPTIONS = {
    "complexity": "Task 1: grammar complexity; one silent step after every element, no noise.",
    "gapped": "Task 2: silent gaps of 1-10 steps after every element, input noise 0.2.",
    "distractor": "Task 3: with probability 0.1 from element 50 on, one non-grammatical distractor step.",
    "generalization": "Task 4: trained as task 2, tested with fixed gaps of 10, 20, 50 and 100 steps.",
}


def task_description(task: str, params: TaskParams) -> str:
    """The task's line above, which speaks of its default parameters; where `params` change some,
    it names them (a card must not state gaps or noise that the data does not have)."""
    default = task_params(task)
    changed = [f.name for f in dataclasses.fields(TaskParams) if getattr(params, f.name) != getattr(default, f.name)]
    text = TASK_DESCRIPTIONS[task]
    return f"{text[:-1]}; changed here: {', '.join(changed)}." if changed else text


def task_params(task: str, **overrides) -> TaskParams:
    check_choice("task", task, TASKS)
    return TaskParams(**{**TASKS[task], **overrides})
