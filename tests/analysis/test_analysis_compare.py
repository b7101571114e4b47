"""EBT vs Transformer++: real differences are flagged, null ones are not; extrapolation, crossover."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.compare import compare_axis, compare_rates, crossover, extrapolate
from analysis.errors import FitError
from analysis.fit import fit_law, fit_power
from analysis.options import AnalysisOptions
from tests.analysis.synthetic_scaling import TRUE, make_trials, shared_loss

X = np.geomspace(1e6, 1e9, 10)


def power_fit(A: float, alpha: float, noise: float, seed: int, boots: int = 300):
    rng = np.random.default_rng(seed)
    y = A * X**-alpha * np.exp(noise * rng.standard_normal(X.size))
    return fit_power(X, y, bootstrap=boots, seed=seed + 100)


def test_a_real_exponent_difference_is_flagged_with_its_size():
    ebt, tpp = power_fit(60, 0.28, 0.01, 1), power_fit(40, 0.20, 0.01, 2)
    cmp = compare_rates(ebt, tpp, axis="data")
    assert cmp.significant
    assert cmp.relative.lo > 0
    assert cmp.relative.lo < 0.4 < cmp.relative.hi  # the true relative difference is +40%
    point = (ebt.params["alpha"].value - tpp.params["alpha"].value) / tpp.params["alpha"].value
    assert cmp.relative.value == pytest.approx(point)
    assert f"EBT scales {abs(100 * point):.0f}% faster" in cmp.verdict and "data axis" in cmp.verdict


def test_a_slower_ebt_is_called_slower():
    ebt, tpp = power_fit(60, 0.15, 0.01, 3), power_fit(40, 0.25, 0.01, 4)
    cmp = compare_rates(ebt, tpp)
    assert cmp.significant and cmp.relative.hi < 0
    assert cmp.relative.lo < -0.4 < cmp.relative.hi  # the true relative difference is -40%
    a_e, a_t = ebt.params["alpha"].value, tpp.params["alpha"].value
    slower = (
        f"EBT scales {100 * (a_t - a_e) / a_t:.0f}% slower than Transformer++ (alpha {a_e:.3g} vs {a_t:.3g}"
    )
    assert cmp.verdict.startswith(slower)  # no axis named


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_a_null_difference_is_not_flagged(seed):
    cmp = compare_rates(power_fit(50, 0.25, 0.03, seed), power_fit(50, 0.25, 0.03, seed + 50))
    assert not cmp.significant
    assert cmp.relative.lo < 0 < cmp.relative.hi
    assert "No significant difference" in cmp.verdict and "includes zero" in cmp.verdict


def test_extrapolation_intervals_contain_the_true_values():
    """10x beyond the data the 95% intervals hold the true losses in most of 30 simulated studies (a 95%
    interval misses one study in 20; 26 of 30 or fewer happens 6% of the time at 95% coverage, 68% at 85%)."""
    x = 10 * X.max()
    truth = {"ebt": (60, 0.28), "transformer_pp": (40, 0.20)}
    held = dict.fromkeys(truth, 0)
    for seed in range(30):
        fits = {
            fam: power_fit(A, alpha, 0.01, 2 * seed + j) for j, (fam, (A, alpha)) in enumerate(truth.items())
        }
        ex = extrapolate(fits, x)
        for fam, (A, alpha) in truth.items():
            p = ex.predictions[fam]
            held[fam] += p.lo < A * x**-alpha < p.hi
            assert p.value == pytest.approx(A * x**-alpha, rel=0.1)
    assert min(held.values()) >= 27, held
    ebt, tpp = power_fit(60, 0.28, 0.01, 8), power_fit(40, 0.20, 0.01, 9)
    ex = extrapolate({"ebt": ebt, "transformer_pp": tpp}, x)
    assert ex.difference.hi < 0  # EBT is lower there
    e, t = ex.predictions["ebt"].value, ex.predictions["transformer_pp"].value
    assert ex.difference.value == pytest.approx(e - t) and ex.relative.value == pytest.approx(e / t - 1)


def test_crossover_is_found_where_the_true_curves_cross():
    # two power laws that are equal at x_star, inside the data range
    A_t, a_t, a_e = 30.0, 0.22, 0.28
    x_star = 3e7
    A_e = A_t * x_star ** (a_e - a_t)  # curves equal at x_star
    ebt, tpp = power_fit(A_e, a_e, 0.005, 10), power_fit(A_t, a_t, 0.005, 11)
    c = crossover(ebt, tpp)
    assert c is not None
    assert c.x == pytest.approx(x_star, rel=0.3)
    assert c.lo < x_star < c.hi
    assert c.lower_after == "ebt"  # the steeper curve wins beyond the crossing
    assert c.fraction > 0.9


def test_parallel_curves_do_not_cross():
    assert crossover(power_fit(60, 0.25, 0.005, 12), power_fit(40, 0.25, 0.005, 13)) is None


def test_compare_axis_on_a_trials_table():
    trials = make_trials(axes=("data",), n=8, noise=0.01)
    trials.loc[2, ["status", "status_reason"]] = ["diverged", "nan loss"]
    trials.loc[2, "val_loss"] = 100.0  # would wreck the fit if it were used
    cmp = compare_axis(trials, "data", AnalysisOptions(bootstrap=200, seed=0))
    assert set(cmp.fits) == {"ebt", "transformer_pp"}
    assert cmp.fits["ebt"].n_points == 7 and cmp.fits["transformer_pp"].n_points == 8
    for fam in ("ebt", "transformer_pp"):
        assert cmp.fits[fam].params["alpha"].value == pytest.approx(TRUE[(fam, "data")]["alpha"], abs=0.01)
    assert cmp.rate is not None and cmp.rate.significant  # 0.25 vs 0.20
    assert cmp.extrapolation.x == pytest.approx(10 * 1e9)


def test_compare_axis_notes_a_family_without_enough_points():
    trials = make_trials(axes=("data",), n=6)
    keep = (trials["family"] == "transformer_pp") | (trials.index == 0)
    cmp = compare_axis(trials[keep], "data", AnalysisOptions(bootstrap=50))
    assert "ebt" not in cmp.fits and "1 point(s)" in cmp.notes["ebt"]
    assert cmp.rate is None and cmp.crossover is None


def test_the_two_families_bootstrap_independently():
    """Identical data for both families: with shared resamples the difference would have a zero-width
    interval at exactly 0; independent resamples give a genuine interval around 0."""
    trials = make_trials(axes=("data",), n=8)
    ebt = trials[trials["family"] == "ebt"]
    twin = ebt.assign(family="transformer_pp", name=ebt["name"] + "-twin")
    cmp = compare_axis(
        pd.concat([ebt, twin], ignore_index=True), "data", AnalysisOptions(bootstrap=200, seed=3)
    )
    assert cmp.rate.relative.value == pytest.approx(0.0, abs=1e-9)
    assert cmp.rate.relative.lo < -1e-3 and cmp.rate.relative.hi > 1e-3
    assert not cmp.rate.significant
    assert math.isfinite(cmp.rate.relative.lo)


def test_a_real_difference_resting_on_an_unidentified_fit_is_not_called_significant():
    """The same clear exponent gap as above, fitted with a floor E the data do not show: E is flagged
    (at its bound 0, or an interval over many decades) and the verdict refuses to call it."""
    rng = np.random.default_rng(1)
    fits = []
    for A, alpha in ((60, 0.28), (40, 0.20)):
        y = A * X**-alpha * np.exp(0.01 * rng.standard_normal(X.size))
        fits.append(fit_law(X, y, "saturating", bootstrap=300, seed=int(100 * alpha)))
    assert not all(f.identified for f in fits)
    cmp = compare_rates(*fits, axis="data")
    assert cmp.relative.lo > 0  # the interval alone would have said "faster"
    assert not cmp.significant and not cmp.identified
    assert cmp.verdict.startswith("No verdict on the data axis") and "not identified" in cmp.verdict
    assert "add points at" in cmp.verdict


def test_shared_exponent_laws_on_a_parameters_by_data_grid_are_compared():
    """A shared-exponent L(N, D) per family: compare_rates reads the law's own exponent (alpha, shared)."""
    N = np.repeat(np.geomspace(1e7, 1e9, 5), 5)
    D = N * np.tile(np.geomspace(10, 500, 5), 5)
    fits = {}
    for fam, alpha, seed in (("ebt", 0.36, 1), ("transformer_pp", 0.30, 2)):
        p = {"E": 1.8, "A": 500.0, "B": 700.0, "alpha": alpha}
        y = shared_loss(N, D, p) * np.exp(0.005 * np.random.default_rng(seed).standard_normal(N.size))
        fits[fam] = fit_law({"N": N, "D": D}, y, "shared", bootstrap=300, seed=seed)
    cmp = compare_rates(fits["ebt"], fits["transformer_pp"], axis="grid")
    assert cmp.exponent == "alpha" and cmp.identified
    assert cmp.significant and cmp.relative.lo < 0.2 < cmp.relative.hi
    with pytest.raises(FitError, match="no fitted exponent 'eta'"):
        compare_rates(fits["ebt"], fits["transformer_pp"], exponent="eta")


# ------------------------------------------------------------------- properties a verdict rests on (#32)


def test_each_familys_exponent_interval_comes_from_its_own_fit():
    """The EBT's interval moves when only the EBT's data move, and it is the EBT fit's own interval."""
    tpp = power_fit(40, 0.20, 0.01, 2)
    first, second = compare_rates(power_fit(60, 0.28, 0.01, 1), tpp), None
    ebt_noisier = power_fit(60, 0.28, 0.05, 21)
    second = compare_rates(ebt_noisier, tpp)
    assert (second.tpp.lo, second.tpp.hi) == (first.tpp.lo, first.tpp.hi)
    assert second.ebt.hi - second.ebt.lo > 2 * (first.ebt.hi - first.ebt.lo)
    for est, fit in ((second.ebt, ebt_noisier), (second.tpp, tpp)):
        own = fit.params["alpha"]
        assert (est.value, est.lo, est.hi) == pytest.approx((own.value, own.lo, own.hi))


def test_the_relative_difference_interval_follows_the_requested_level():
    ebt, tpp = power_fit(60, 0.28, 0.02, 1), power_fit(40, 0.20, 0.02, 2)
    wide, narrow = compare_rates(ebt, tpp, level=0.95), compare_rates(ebt, tpp, level=0.5)
    assert (
        wide.relative.lo < narrow.relative.lo < narrow.relative.value < narrow.relative.hi < wide.relative.hi
    )
    assert narrow.ebt.hi - narrow.ebt.lo < wide.ebt.hi - wide.ebt.lo
    assert "50% CI" in narrow.verdict and "95% CI" in wide.verdict


def test_a_transformer_exponent_that_is_not_clearly_positive_is_called_unstable():
    flat = power_fit(40, 0.002, 0.02, 4)  # alpha ~ 0: its interval reaches below zero
    assert flat.params["alpha"].lo <= 0
    assert "not clearly positive" in compare_rates(power_fit(60, 0.28, 0.01, 1), flat).verdict
    assert (
        "not clearly positive"
        not in compare_rates(power_fit(60, 0.28, 0.01, 1), power_fit(40, 0.2, 0.01, 2)).verdict
    )


@pytest.mark.parametrize(
    ("relative", "starts"),
    [
        ((-0.10, -0.15, -0.05), "EBT is ahead"),
        ((0.10, 0.05, 0.15), "Transformer++ is ahead"),
        ((-0.04, -0.09, 0.01), "Neither family is clearly ahead"),
        ((0.04, -0.01, 0.09), "Neither family is clearly ahead"),
    ],
)
def test_which_family_is_ahead_is_read_from_the_whole_interval(relative, starts):
    """Lower loss is ahead; 'ahead' needs the whole paired interval on one side of zero."""
    from analysis.compare import NO_ESTIMATE, Extrapolation, describe_gap
    from analysis.fit import ParamEstimate

    gap = Extrapolation(1e9, {}, NO_ESTIMATE, ParamEstimate(*relative))
    text = describe_gap(gap, "tokens", "val_loss", 0.95)
    assert text.startswith(starts)
    assert f"{abs(100 * relative[0]):.1f}%" in text and "tokens = 1e+09" in text
    assert f"95% CI {100 * relative[1]:+.1f}% to {100 * relative[2]:+.1f}%" in text


def test_a_gap_without_an_interval_names_no_leader():
    from analysis.compare import NO_ESTIMATE, Extrapolation, describe_gap
    from analysis.fit import ParamEstimate

    text = describe_gap(
        Extrapolation(1e9, {}, NO_ESTIMATE, ParamEstimate(-0.2, math.nan, math.nan)),
        "tokens",
        "val_loss",
        0.95,
    )
    assert "ahead" not in text and "-20.0%" in text and "(no interval)" in text


def _seeded_copies(trials: pd.DataFrame, copies: int) -> pd.DataFrame:
    """Every configuration `copies` times, as seeds that happened to give the same loss."""
    return pd.concat(
        [trials.assign(seed=s, name=trials["name"] + f"-s{s}") for s in range(copies)], ignore_index=True
    )


def test_seeds_of_one_configuration_are_resampled_together():
    """Three seeds that repeat a configuration's loss add no information about the law: resampling
    configurations (the cluster bootstrap) gives the one-seed interval; treating the 3n rows as independent
    points would shrink it by about sqrt(3)."""
    one = make_trials(axes=("data",), n=8, noise=0.02, seed=4)
    options = AnalysisOptions(bootstrap=200, seed=1)
    single, tripled = (
        compare_axis(one, "data", options),
        compare_axis(_seeded_copies(one, 3), "data", options),
    )
    for fam in ("ebt", "transformer_pp"):
        a, b = single.fits[fam].params["alpha"], tripled.fits[fam].params["alpha"]
        assert b.value == pytest.approx(a.value, rel=1e-6)
        assert (b.hi - b.lo) == pytest.approx(a.hi - a.lo, rel=0.05)
    assert (tripled.rate.relative.lo, tripled.rate.relative.hi) == pytest.approx(
        (single.rate.relative.lo, single.rate.relative.hi), rel=0.05
    )


def test_the_flops_axis_keeps_the_best_model_size_of_each_budget():
    """Loss against compute is a law along the compute-efficient frontier: per (family, budget), the size
    with the lowest mean loss over its seeds, and nothing else."""
    from analysis.compare import axis_points

    trials = make_trials(axes=(), flops_axis=True, noise=0.0)
    kept = axis_points(trials, "flops")
    assert len(kept) == 8  # 2 families x 4 budgets, one size each
    for (fam, budget), grid in trials.groupby(["family", "flops_budget"]):
        row = kept[(kept["family"] == fam) & (kept["x"] == budget)]
        assert len(row) == 1 and row["y"].iloc[0] == grid["val_loss"].min()


def test_without_a_bootstrap_the_comparison_has_point_estimates_and_no_interval():
    """--bootstrap 0 (a quick look) compares the point estimates and says there is no interval."""
    cmp = compare_axis(make_trials(axes=("data",), n=6), "data", AnalysisOptions(bootstrap=0))
    rate = cmp.rate
    assert rate.relative.value == pytest.approx(0.25 / 0.2 - 1, abs=0.05)
    assert math.isnan(rate.relative.lo) and not rate.significant
    assert rate.verdict.endswith("; no bootstrap interval (too few distinct points, or no bootstrap).")
    assert "(no interval)" in cmp.gap_verdict and math.isnan(cmp.extrapolation.difference.lo)


def test_a_crossing_between_grid_points_is_interpolated_in_log_x():
    """Per bootstrap row, the last sign change of the log gap, linearly interpolated between its grid points
    (here exactly halfway between log x = 1 and 2, and at 2.25 in the second row); no change: NaN."""
    from analysis.compare import _last_crossing

    logx = np.array([0.0, 1.0, 2.0, 3.0])
    diff = np.array([[1.0, 0.5, -0.5, -1.0], [2.0, 1.0, 0.25, -0.75], [1.0, 1.0, 1.0, 1.0]])
    out = _last_crossing(logx, diff)
    assert out[:2] == pytest.approx([1.5, 2.25]) and math.isnan(out[2])


def test_the_flops_axis_is_fitted_against_the_budget_not_each_trial_s_own_flops():
    """An isoFLOP trial spends about its budget (its own count is a little off it): the point sits at C."""
    trials = make_trials(axes=(), flops_axis=True, noise=0.01)
    trials["flops"] = trials["flops_budget"] * 0.97
    cmp = compare_axis(trials, "flops", AnalysisOptions(bootstrap=0))
    assert sorted(set(cmp.points["x"])) == sorted(set(trials["flops_budget"]))
