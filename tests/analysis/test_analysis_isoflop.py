"""Compute-optimal allocation from isoFLOP profiles (analysis/isoflop.py), on profiles with known answers:
exact parabolas in log N whose minima lie on a known power law of the budget, and FLOPs-per-token laws
through a family's own trials."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.errors import FitError
from analysis.fit import FlopsPerToken
from analysis.isoflop import flops_per_token_from_trials, isoflop_allocation

A_TRUE, K_N_TRUE = 0.5, 0.1  # N*(C) = K_N C^A
SHIFTS = np.array([-1.2, -0.7, -0.2, 0.3, 0.8])  # sampled log N - log N*: the minimum off-centre, inside


def loss_minimum(C: np.ndarray) -> np.ndarray:
    return 2.0 + 40.0 * C**-0.1


def exact_profiles(budgets: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per budget 5 sizes around N*(C); loss exactly loss_minimum(C) + 0.3 (log N - log N*)^2."""
    C = np.repeat(budgets, SHIFTS.size)
    n_star = K_N_TRUE * C**A_TRUE
    shift = np.tile(SHIFTS, len(budgets))
    return n_star * np.exp(shift), C, loss_minimum(C) + 0.3 * shift**2


@pytest.mark.parametrize("cost, per_n", [(None, 6.0), (lambda n: 18.0 * np.asarray(n, float), 18.0)])
def test_exact_profiles_give_the_exact_allocation_and_intervals_that_collapse_on_it(
    cost: FlopsPerToken | None, per_n: float
) -> None:
    """Two budgets, the fewest that fix a power law. Every resample of an exact parabola (3 or more sizes)
    has the same vertex, so every interval is the point itself. D* = C / (FLOPs per token at N*): 6N by
    default, the family's own cost when given (an EBT token costs more, so fewer tokens fit the budget)."""
    budgets = [1e18, 1e20]
    N, C, y = exact_profiles(budgets)
    res = isoflop_allocation(N, C, y, flops_per_token=cost, bootstrap=40, seed=0, level=0.8)
    m = res.minima
    n_star = K_N_TRUE * np.array(budgets) ** A_TRUE
    assert m["C"].tolist() == budgets and m["n_points"].tolist() == [5, 5] and m["in_range"].all()
    assert m["N_opt"].to_numpy() == pytest.approx(n_star, rel=1e-9)
    assert m["D_opt"].to_numpy() == pytest.approx(np.array(budgets) / (per_n * n_star), rel=1e-9)
    assert m["loss_opt"].to_numpy() == pytest.approx(loss_minimum(np.array(budgets)), rel=1e-12)
    for name in ("N_opt", "D_opt", "loss_opt"):
        assert m[f"{name}_lo"].to_numpy() == pytest.approx(m[name].to_numpy(), rel=1e-9)
        assert m[f"{name}_hi"].to_numpy() == pytest.approx(m[name].to_numpy(), rel=1e-9)
    truth = {"a": A_TRUE, "k_N": K_N_TRUE, "b": 1 - A_TRUE, "k_D": 1 / (per_n * K_N_TRUE)}
    assert set(res.exponents) == set(truth)
    for name, value in truth.items():
        est = res.exponents[name]
        assert (est.lo, est.value, est.hi) == pytest.approx((value, value, value), rel=1e-6), name
    assert (res.level, res.n_boot, res.skipped) == (0.8, 40, {})


def test_the_same_seed_gives_the_same_intervals() -> None:
    N, C, y = exact_profiles([1e18, 1e19, 1e20])
    y = y * np.exp(0.01 * np.random.default_rng(5).standard_normal(y.size))
    a, b = (isoflop_allocation(N, C, y, bootstrap=30, seed=7) for _ in range(2))
    assert a.exponents == b.exponents and a.minima.equals(b.minima)
    assert a.exponents["a"].lo < a.exponents["a"].hi  # noisy profiles: a real interval


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")  # C / 0, on purpose
def test_a_cost_model_without_finite_tokens_is_reported_as_not_identifiable() -> None:
    """D* = C / 0 FLOPs per token is no allocation: the error names the estimates that broke."""
    N, C, y = exact_profiles([1e18, 1e20])
    with pytest.raises(FitError, match=r"not identifiable from these minima \(b, k_D came out non-finite"):
        isoflop_allocation(N, C, y, flops_per_token=lambda n: 0.0 * np.asarray(n, float), bootstrap=0)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # 0 FLOPs / 0 tokens, on purpose
def test_flops_per_token_law_is_recovered_from_a_familys_trials() -> None:
    """FLOPs/token = 20 N^0.9 through two sizes (the fewest that fix it), whatever each trial's token count;
    rows with no usable size, FLOPs or tokens are left out; one size gives no law (callers use 6N)."""
    N = np.array([1e6, 1e6, 4e7, np.nan, 2e6, 3e6, -5.0, 0.0])
    tokens = np.array([1e9, 3e9, 2e9, 1e9, 0.0, 1e9, 1e9, 1e9])
    flops = 20 * np.abs(N) ** 0.9 * tokens
    flops[5] = 0.0  # a trial whose FLOPs were not recorded
    flops[7] = 1e15  # one whose size was not (0 parameters)
    law = flops_per_token_from_trials(N, flops, tokens)
    assert law is not None
    assert law(np.array([1e5, 1e9])) == pytest.approx(20 * np.array([1e5, 1e9]) ** 0.9, rel=1e-9)
    assert flops_per_token_from_trials(N[:2], flops[:2], tokens[:2]) is None


def test_the_log_log_line_skips_gaps_and_needs_two_points() -> None:
    """Per bootstrap row, the OLS line through the budgets whose minimum exists: NaN gaps are left out (not
    read as zeros), and a row with fewer than two points has no line."""
    from analysis.isoflop import _loglog_fit

    logC = np.log([1e18, 1e19, 1e20, 1e21])
    exact = 0.5 * logC + 2.0
    rows = np.vstack(
        [exact, np.where([True, False, True, True], exact, np.nan), [np.nan, np.nan, exact[2], np.nan]]
    )
    slope, intercept = _loglog_fit(logC, rows)
    assert slope[:2] == pytest.approx([0.5, 0.5]) and intercept[:2] == pytest.approx([2.0, 2.0])
    assert np.isnan(slope[2]) and np.isnan(intercept[2])


def test_each_skipped_budget_says_why_and_unusable_rows_are_refused() -> None:
    N, C, y = [], [], []
    for c in (1e18, 1e19, 1e20):
        n = 1e6 * (c / 1e18) ** 0.5 * np.geomspace(0.25, 4, 5)
        N += list(n)
        C += [c] * 5
        y += list(2 + (np.log(n) - np.log(1e6 * (c / 1e18) ** 0.5)) ** 2)
    N += [2e6, 3e6]  # a budget with two sizes
    C += [1e17, 1e17]
    y += [3.0, 2.9]
    N += list(np.geomspace(1e5, 1e6, 3))  # a concave profile: no interior minimum
    C += [1e16] * 3
    y += [2.0, 3.0, 1.5]
    res = isoflop_allocation(np.array(N), np.array(C), np.array(y), bootstrap=0)
    assert res.skipped == {
        1e17: "2 distinct model size(s); a parabola needs 3",
        1e16: "loss is not convex in log N here (no interior minimum)",
    }
    assert sorted(res.minima["C"]) == [1e18, 1e19, 1e20]
    assert res.exponents["a"].value == pytest.approx(0.5, abs=1e-6)
    bad = (np.array([*N, 1e6, 1e6, 0.0]), np.array([*C, 0.0, 1e18, 1e18]), np.array([*y, 2.0, np.nan, 2.0]))
    with pytest.raises(FitError, match=r"^3 isoFLOP row\(s\) have a missing or non-positive N, C or loss$"):
        isoflop_allocation(*bad, bootstrap=0)
