"""Paired comparisons over seeds (results.stats) on hand-made values."""

import math

import pytest

from results.stats import paired_difference


def test_paired_t_interval_by_hand():
    a, b = [0.90, 0.80, 0.85], [0.85, 0.80, 0.80]  # differences 0.05, 0, 0.05
    d = paired_difference(a, b)
    mean, sd = 0.1 / 3, math.sqrt(((0.05 - 0.1 / 3) ** 2 * 2 + (0.1 / 3) ** 2) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t_{0.975, 2}
    assert d.n == 3
    assert d.mean == pytest.approx(mean)
    assert (d.low, d.high) == pytest.approx((mean - half, mean + half))
    assert not d.separable  # the interval contains 0
    low, high = 100 * (mean - half), 100 * (mean + half)
    assert d.format() == f"+{100 * mean:.1f} [{low:+.1f}, {high:+.1f}]"


def test_a_constant_nonzero_difference_is_separable_and_one_seed_is_not():
    assert paired_difference([0.9, 0.8], [0.8, 0.7]).separable
    one = paired_difference([0.9], [0.8])
    assert not one.separable and math.isnan(one.low)
    assert one.format() == "+10.0 (n=1)"
    with pytest.raises(ValueError, match="aligned"):
        paired_difference([0.9, 0.8], [0.8])


def test_identical_means_every_paired_difference_is_zero():
    assert paired_difference([0.9, 0.8, 0.7], [0.9, 0.8, 0.7]).identical
    assert paired_difference([0.9], [0.9]).identical
    cancelling = paired_difference([0.9, 0.7], [0.8, 0.8])  # +0.1 and -0.1: mean 0, sd > 0
    assert cancelling.mean == pytest.approx(0) and not cancelling.identical
    assert not paired_difference([0.9, 0.8], [0.8, 0.7]).identical  # constant, not zero
