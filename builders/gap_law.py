"""The gap duration laws of SPEC §3, each written once: what it draws, its step pmf, its longest
gap, its mean, its text and its fields' bounds. `TaskParams.duration_law` gives a task's law; the
sampler, the Bayes ceiling, the parameter checks, the dataset card and the sweep estimate use it.

A duration t (time units) lasts `duration_to_steps(t, timestep)` steps.
"""
from __future__ import annotations

import abc
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np

# The lognormal law is cut at exp(gap_mean + LOGNORMAL_CUT_SIGMAS * gap_sigma), by the sampler and the
# Bayes ceiling alike (the mass beyond is below 1e-18)
LOGNORMAL_CUT_SIGMAS = 9
NORMAL_99TH_PERCENTILE = 2.3263478740408408


def duration_to_steps(duration, timestep: float):
    """SPEC §3: round the duration to one decimal, then ceil(duration / timestep). Takes one
    duration (returns an int) or the sampler's array of draws (returns int64 steps).

    One rounding for both, numpy's (10 x to the nearest even integer): the one that fixed the stored
    bytes. Python's round differs at some halves (round(0.45, 1) is 0.5, numpy's 0.4), which gave
    test splits and the Bayes ceiling other gaps than the training data drew.
    The 1e-9 guards against float noise: 1.1 / 0.1 is 11.000000000000002, which is 11 steps.
    """
    rounded = np.round(duration, 1)
    if isinstance(rounded, np.ndarray):
        return np.ceil(rounded / timestep - 1e-9).astype(np.int64)
    return max(0, math.ceil(float(rounded) / timestep - 1e-9))


@dataclass(frozen=True)
class GapLaw(abc.ABC):
    """A gap duration law with its parameters (the TaskParams fields `FIELDS` name, in order)."""

    timestep: float
    FIELDS: ClassVar[tuple[str, ...]] = ()
    LIMIT_FIELD: ClassVar[str] = ""  # the field named when the law's longest gap has too many steps

    @classmethod
    def of(cls, params) -> "GapLaw":
        return cls(params.timestep, *(getattr(params, name) for name in cls.FIELDS))

    def steps(self, duration):
        return duration_to_steps(duration, self.timestep)

    @abc.abstractmethod
    def bounds(self) -> list[tuple]:
        """(field, value, low, high, low_open) of each field, checked in this order."""

    @abc.abstractmethod
    def support(self) -> tuple[float, float]:
        """The lowest and highest duration, before rounding."""

    @abc.abstractmethod
    def cdf(self, x: float) -> float:
        """P(duration <= x) under the law."""

    @abc.abstractmethod
    def durations(self, shape, draw: Callable[[int], np.ndarray]) -> np.ndarray:
        """Durations of `shape`, from the sampler's uniform draws `draw(0)` and `draw(1)`."""

    def largest_duration(self) -> float:
        """The largest duration a draw can take."""
        return self.support()[1]

    def test_duration(self) -> float:
        """The duration of the `test` split's fixed gap: the largest the law draws."""
        return self.largest_duration()

    @abc.abstractmethod
    def mean_steps(self) -> float:
        """Expected gap steps, as the sweep estimate counts them."""

    @abc.abstractmethod
    def text(self) -> str:
        """The law in words, as the dataset card gives it."""

    def draw_steps(self, shape, draw: Callable[[int], np.ndarray]) -> np.ndarray:
        return self.steps(self.durations(shape, draw))

    def longest_steps(self) -> int:
        """The longest gap the law can draw, in steps (lognormal: at its cut)."""
        return self.steps(self.largest_duration())

    def test_steps(self) -> int:
        return self.steps(self.test_duration())

    def step_pmf(self) -> dict[int, float]:
        """P(gap of k steps | a gap occurs), from the duration law, rounding and ceiling (SPEC §3)."""
        lo, hi = self.support()
        if lo == hi:
            return {self.steps(lo): 1.0}
        pmf = defaultdict(float)
        # every tenth a draw can round to; the durations that round to it are those within half a tenth
        # (bounds as (tenth -+ 0.5) / 10: v - 0.05 is off by an ulp and gave a gap_high of 0.65 mass above it)
        for tenth in range(math.floor(lo * 10), math.ceil(hi * 10) + 1):
            mass = self.cdf((tenth + 0.5) / 10) - self.cdf((tenth - 0.5) / 10)
            if mass > 0:
                pmf[self.steps(tenth / 10)] += mass
        total = sum(pmf.values())
        return {k: w / total for k, w in sorted(pmf.items())}


@dataclass(frozen=True)
class FixedGaps(GapLaw):
    duration: float
    FIELDS: ClassVar[tuple[str, ...]] = ("gap_duration",)
    LIMIT_FIELD: ClassVar[str] = "gap_duration"

    def bounds(self):
        return [("gap_duration", self.duration, 0.0, 1e4, False)]

    def support(self):
        return self.duration, self.duration

    def cdf(self, x):
        return 0.0 if x < self.duration else 1.0

    def durations(self, shape, draw):
        return np.full(shape, float(self.duration))

    def mean_steps(self):
        return self.steps(self.duration)

    def text(self):
        return f"fixed {self.duration}"


@dataclass(frozen=True)
class UniformGaps(GapLaw):
    low: float
    high: float
    FIELDS: ClassVar[tuple[str, ...]] = ("gap_low", "gap_high")
    LIMIT_FIELD: ClassVar[str] = "gap_high"

    def bounds(self):
        return [("gap_low", self.low, 0.0, 1e4, False), ("gap_high", self.high, self.low, 1e4, False)]

    def support(self):
        return self.low, self.high

    def cdf(self, x):
        return min(max((x - self.low) / (self.high - self.low), 0.0), 1.0)

    def durations(self, shape, draw):
        return self.low + draw(0) * (self.high - self.low)

    def largest_duration(self):
        # draws lie in [gap_low, gap_high): the largest is just below gap_high
        return self.high if self.high == self.low else np.nextafter(self.high, self.low)

    def mean_steps(self):
        return (self.low + self.high) / 2 / self.timestep

    def text(self):
        return f"uniform({self.low}, {self.high})"


@dataclass(frozen=True)
class LognormalGaps(GapLaw):
    mean: float
    sigma: float
    FIELDS: ClassVar[tuple[str, ...]] = ("gap_mean", "gap_sigma")
    LIMIT_FIELD: ClassVar[str] = "gap_mean"

    def bounds(self):
        return [("gap_mean", self.mean, -20.0, 9.0, False), ("gap_sigma", self.sigma, 0.0, 3.0, True)]

    def support(self):
        return 0.0, math.exp(self.mean + LOGNORMAL_CUT_SIGMAS * self.sigma)

    def cdf(self, x):
        return 0.0 if x <= 0 else 0.5 * (1.0 + math.erf((math.log(x) - self.mean) / self.sigma / math.sqrt(2.0)))

    def durations(self, shape, draw):
        z = np.sqrt(-2.0 * np.log1p(-draw(0))) * np.cos(2 * np.pi * draw(1))  # its normal, by Box-Muller
        return np.exp(self.mean + self.sigma * np.minimum(z, LOGNORMAL_CUT_SIGMAS))

    def test_duration(self):
        return math.exp(self.mean + NORMAL_99TH_PERCENTILE * self.sigma)  # no maximum: its 99th percentile

    def mean_steps(self):
        return math.exp(self.mean + self.sigma ** 2 / 2) / self.timestep

    def text(self):
        return f"lognormal({self.mean}, {self.sigma})"


GAP_LAWS: dict[str, type[GapLaw]] = {"fixed": FixedGaps, "uniform": UniformGaps, "lognormal": LognormalGaps}
