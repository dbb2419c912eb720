"""Paired comparisons over seeds.

Two strategies run with the same seed share the base model, the data splits, the task order and
the probe, so their difference on that seed removes everything the seed changes for both. Over
n seeds the differences d_1..d_n give the mean and its 95% Student-t interval

    mean(d) +- t_{0.975, n-1} * sd(d) / sqrt(n)        (sd with n - 1 in the denominator),

which assumes the seeds' differences are roughly normal — with 3 to 5 seeds nothing better is
available, and a bootstrap of 5 values has coverage no better. A ranking is stated only where
the interval excludes 0 (:func:`separable`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

CONFIDENCE = 0.95


@dataclass(frozen=True)
class PairedDifference:
    """mean(a - b) over paired seeds with its t-interval [low, high]."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def identical(self) -> bool:
        """Every paired difference is 0: mean 0 and, with >= 2 seeds, sd 0 (low = high)."""
        return self.mean == 0 and (self.n < 2 or self.low == self.high)

    @property
    def separable(self) -> bool:
        """The interval excludes 0 (needs at least 2 seeds)."""
        return self.n >= 2 and (self.low > 0 or self.high < 0)

    def format(self, scale: float = 100.0, digits: int = 1) -> str:
        """"+1.2 [+0.3, +2.1]" (in %), or "+1.2 (n=1)" with a single seed."""
        m = f"{scale * self.mean:+.{digits}f}"
        if self.n < 2:
            return f"{m} (n=1)"
        return f"{m} [{scale * self.low:+.{digits}f}, {scale * self.high:+.{digits}f}]"


def paired_difference(a: Sequence[float], b: Sequence[float],
                      confidence: float = CONFIDENCE) -> PairedDifference:
    """The mean of a_i - b_i and its two-sided t-interval; a and b are aligned by seed."""
    if len(a) != len(b) or not a:
        raise ValueError(f"paired values must be non-empty and aligned, got {len(a)} and {len(b)}")
    d = [x - y for x, y in zip(a, b, strict=True)]
    n = len(d)
    mean = sum(d) / n
    if n < 2:
        return PairedDifference(mean, math.nan, math.nan, n)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return PairedDifference(mean, mean - half, mean + half, n)
