"""The one error of a bad input, and the checks that raise it.

Every bad argument, flag, file or parameter is one `ParameterError` whose message names the field,
the value and what is allowed: `name=value is invalid: allowed ...`. The CLI prints it as one line
and exits 2. A leaf module (no imports of the package): `builders/` may import it.
"""
from __future__ import annotations

import math


class ParameterError(ValueError):
    """A task, grammar, run or command parameter is outside its allowed range."""


def fail(name, value, allowed, error: type[Exception] = ParameterError):
    raise error(f"{name}={value!r} is invalid: allowed {allowed}")


def is_int(value) -> bool:
    """An int, not a bool (True is an int to Python, never a count or a seed to us)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_count(value) -> bool:
    return is_int(value) and value >= 0


def interval(low, high, low_open: bool = False, high_open: bool = False) -> str:
    """`[low, high]` with open ends as `(`/`)`; an infinite high end is always open."""
    return (f"{'(' if low_open else '['}{low}, {high}"
            f"{')' if high_open or not math.isfinite(high) else ']'}")


def check_int(name, value, low=0, high=None, allowed: str | None = None) -> None:
    """An int (not a bool) in [low, high] (high None: no bound), else one ParameterError saying
    `allowed` (default: 'an integer >= low' or 'an integer in [low, high]')."""
    if not is_int(value) or value < low or (high is not None and value > high):
        fail(name, value, allowed or (f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"))


def check_real(name, value, low=-math.inf, high=math.inf, low_open: bool = False, high_open: bool = False,
               allowed: str | None = None) -> None:
    """A finite number (not a bool) in the interval, else one ParameterError saying `allowed`
    (default: 'a number in [low, high]', with the open ends as the interval has them)."""
    if not is_number(value) or value < low or value > high or (low_open and value == low) \
            or (high_open and value == high):
        fail(name, value, allowed or f"a number in {interval(low, high, low_open, high_open)}")


def check_choice(name, value, choices) -> None:
    if value not in choices:
        fail(name, value, f"one of {tuple(choices)}")
