"""Percentile intervals of bootstrap draws: known answers, NaN draws, the level."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.intervals import percentile_interval


@pytest.mark.parametrize(
    ("level", "expected"), [(0.9, (5.0, 95.0)), (0.5, (25.0, 75.0)), (0.98, (1.0, 99.0))]
)
def test_the_interval_holds_the_central_level_of_the_draws(level, expected):
    draws = np.random.default_rng(0).permutation(np.arange(101.0))  # order does not matter
    assert percentile_interval(draws, level) == pytest.approx(expected)


def test_non_finite_draws_are_left_out_not_counted():
    """Degenerate resamples come back as NaN/inf: the interval is that of the finite ones."""
    draws = np.concatenate([np.arange(101.0), [np.nan, np.inf, -np.inf] * 20])
    assert percentile_interval(draws, 0.9) == pytest.approx((5.0, 95.0))
    lo, hi = percentile_interval(draws.tolist(), 0.9)  # any array-like
    assert (lo, hi) == pytest.approx((5.0, 95.0)) and isinstance(lo, float) and isinstance(hi, float)


@pytest.mark.parametrize("draws", [np.array([]), np.array([np.nan, np.inf])])
def test_no_finite_draws_give_no_interval(draws):
    lo, hi = percentile_interval(draws, 0.95)
    assert math.isnan(lo) and math.isnan(hi)


def test_one_draw_gives_a_zero_width_interval_at_it():
    assert percentile_interval(np.array([3.5]), 0.95) == (3.5, 3.5)


def test_draws_given_as_python_numbers_with_none_for_failed_resamples():
    """None (a resample whose fit failed, as a list may carry it) is left out like NaN."""
    assert percentile_interval([1.0, None, 2.0, 3, None], 1.0) == (1.0, 3.0)
