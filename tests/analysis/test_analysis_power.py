"""analysis/power.py: a planned design's interval width, power and smallest detectable difference, by
simulating it with the report's fitting code, checked against known truths."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis.errors import FitError
from analysis.power import design_power

X = {"ebt": np.geomspace(1.28e5, 1.02e6, 6), "transformer_pp": np.geomspace(1.28e5, 1.02e6, 6)}


def lad_width(x: np.ndarray, seeds: int, noise: float, alpha: float, effect: float) -> float:
    """The 95% interval width of (alpha_EBT - alpha_TPP) / alpha_TPP for a least-absolute-deviation slope
    in log space (the fits' Huber loss with delta 1e-3 is LAD at these residuals): se(alpha) =
    sqrt(pi / 2) noise / sqrt(seeds * sum (log x - mean)^2), both families at the same x (delta method)."""
    u = np.log(x)
    se = math.sqrt(math.pi / 2) * noise / math.sqrt(seeds * ((u - u.mean()) ** 2).sum())
    return 2 * 1.96 * se * math.sqrt(1 + (1 + effect) ** 2) / alpha


def test_the_width_is_near_the_asymptotic_one_and_grows_with_the_noise() -> None:
    """Known truth: the simulated width is within a third of the large-sample formula (6 points are not a
    large sample), and twice the noise gives twice the width (same simulated draws, so the ratio is tight)."""
    quiet = design_power("data", X, seeds=2, alpha=0.15, noise=0.02, replicates=40, bootstrap=100, seed=1)
    loud = design_power("data", X, seeds=2, alpha=0.15, noise=0.04, replicates=40, bootstrap=100, seed=1)
    expected = lad_width(X["ebt"], 2, 0.02, 0.15, 0.0)
    assert quiet.median_width == pytest.approx(expected, rel=0.35)
    assert loud.median_width / quiet.median_width == pytest.approx(2.0, rel=0.1)
    assert quiet.failed == 0 and quiet.power is None  # no effect asked: width only


def test_power_is_the_false_positive_rate_at_zero_and_near_one_far_from_it() -> None:
    """With equal exponents, an interval that excludes zero is a false positive: about 5% of studies (the
    intervals' calibration, 0.95-0.96 coverage measured in #26); a difference four times the detectable one
    is found in (nearly) every study, on the right side only."""
    null = design_power(
        "data", X, seeds=2, alpha=0.15, noise=0.02, effect=0.0, replicates=80, bootstrap=100, seed=2
    )
    assert null.power is not None and null.power <= 0.15
    big = 4 * null.detectable
    for sign in (1, -1):
        found = design_power(
            "data",
            X,
            seeds=2,
            alpha=0.15,
            noise=0.02,
            effect=sign * big,
            replicates=30,
            bootstrap=100,
            seed=3,
        )
        assert found.power is not None and found.power >= 0.9


def test_more_seeds_and_a_wider_range_narrow_the_interval() -> None:
    """Four seeds instead of one halve the width (sqrt 4); spanning 64x instead of 8x narrows it too."""
    one = design_power("data", X, seeds=1, alpha=0.15, noise=0.02, replicates=30, bootstrap=100, seed=4)
    four = design_power("data", X, seeds=4, alpha=0.15, noise=0.02, replicates=30, bootstrap=100, seed=4)
    assert four.median_width / one.median_width == pytest.approx(0.5, rel=0.25)
    wide = {f: np.geomspace(1.28e5, 8.2e6, 6) for f in X}
    assert design_power(
        "data", wide, seeds=1, alpha=0.15, noise=0.02, replicates=30, bootstrap=100, seed=4
    ).median_width < (0.7 * one.median_width)


def test_the_detectable_difference_and_the_line_follow_from_the_width() -> None:
    d = design_power(
        "data", X, seeds=2, alpha=0.15, noise=0.02, effect=0.3598, replicates=20, bootstrap=100, seed=5
    )
    assert d.detectable == pytest.approx((1.959964 + 0.8416) / (2 * 1.959964) * d.median_width, rel=1e-4)
    assert d.line() == (
        f"data: 95% interval ±{100 * d.median_width / 2:.0f}% wide, +36% detected {d.power:.0%} of the time, "
        f"smallest detectable difference ±{100 * d.detectable:.0f}%"
    )
    record = d.to_dict()
    assert record["n_x"] == {"ebt": 6, "transformer_pp": 6} and record["detectable"] == d.detectable


def test_a_design_with_one_x_cannot_be_simulated() -> None:
    with pytest.raises(FitError, match="at least 2 distinct x"):
        design_power(
            "depth",
            {"ebt": np.array([4.0, 4.0]), "transformer_pp": X["ebt"]},
            seeds=2,
            alpha=0.1,
            noise=0.02,
            replicates=5,
            bootstrap=100,
        )


def test_a_design_with_two_x_per_family_has_no_interval_and_says_so_in_its_record():
    """Two x fit a power law exactly: no simulated study gets an interval, so the width, power and smallest
    detectable difference are missing (null in JSON), not a number."""
    two = {f: np.array([1e5, 1e6]) for f in X}
    d = design_power("flops", two, seeds=1, alpha=0.1, noise=0.02, effect=0.3, replicates=5, bootstrap=100)
    assert d.failed == 5 and math.isnan(d.median_width)
    record = d.to_dict()
    assert record["median_width"] is None and record["power"] is None and record["detectable"] is None
