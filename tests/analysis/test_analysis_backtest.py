"""Backtests: a law that bends at the held-out points is flagged, one that holds is not; 1-D and (N, D),
(C, M) laws; hold-outs by variable, key and mask; bad input is a FitError."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from analysis.backtest import backtest
from analysis.compare import compare_axis
from analysis.errors import FitError
from analysis.options import AnalysisOptions
from tests.analysis.synthetic_scaling import make_trials, shared_loss

X = np.geomspace(1e6, 1e9, 8)
A, ALPHA = 40.0, 0.2


def law(noise: float, seed: int) -> np.ndarray:
    return A * X**-ALPHA * np.exp(noise * np.random.default_rng(seed).standard_normal(X.size))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_law_that_holds_predicts_its_held_out_point(seed):
    bt = backtest(X, law(0.01, seed), bootstrap=300, seed=seed)
    assert not bt.flagged
    assert bt.x_holdout == X[-1] and bt.n_train == 7 and bt.n_holdout == 1
    assert bt.error.lo < 0 < bt.error.hi
    assert bt.predicted.value == pytest.approx(A * X[-1] ** -ALPHA, rel=0.03)


def test_a_law_that_bends_at_the_largest_point_is_flagged():
    y = law(0.01, 3)
    y[-1] *= 1.12  # loss stops falling as the law says: 12% above it at the largest x
    bt = backtest(X, y, bootstrap=300, seed=3)
    assert bt.flagged
    assert bt.error.value == pytest.approx(0.12, abs=0.04)
    assert bt.error.lo > 0
    assert "not to be trusted" in bt.describe("EBT")


def test_too_few_points_are_not_backtested():
    with pytest.raises(FitError, match="at least 5"):
        backtest(X[:4], law(0.01, 4)[:4])


def test_compare_axis_flags_the_bent_family_only():
    trials = make_trials(axes=("data",), n=8, noise=0.005, seed=5)
    last = trials[trials["family"] == "ebt"]["tokens"].idxmax()
    trials.loc[last, "val_loss"] *= 1.15
    cmp = compare_axis(trials, "data", AnalysisOptions(bootstrap=300, seed=0))
    assert cmp.flagged == ["ebt"]
    assert set(cmp.backtests) == {"ebt", "transformer_pp"}


def test_held_out_seeds_are_held_out_together():
    y = np.repeat(law(0.01, 6), 3) * np.exp(0.005 * np.random.default_rng(7).standard_normal(3 * X.size))
    bt = backtest(np.repeat(X, 3), y, groups=np.repeat(np.arange(X.size), 3), bootstrap=200, seed=0)
    assert bt.n_holdout == 3 and bt.n_train == 21
    assert not bt.flagged


# ---------------------------------------------------------------------------------- laws of several variables


def grid(noise: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """5 model sizes x 5 tokens-per-parameter ratios, loss from the shared-exponent law."""
    N = np.repeat(np.geomspace(1e7, 1e9, 5), 5)
    D = N * np.tile(np.geomspace(10, 500, 5), 5)
    return N, D, shared_loss(N, D) * np.exp(noise * np.random.default_rng(seed).standard_normal(N.size))


def test_an_n_d_law_is_backtested_on_its_largest_model():
    N, D, y = grid(0.005, 0)
    bt = backtest(np.column_stack([N, D]), y, "shared", holdout="N", bootstrap=200, seed=0)
    assert bt.n_holdout == 5 and bt.n_train == 20 and len(bt.points) == 5
    assert all(p.x[0] == N.max() for p in bt.points)
    for p in bt.points:
        truth = shared_loss(*p.x)
        assert p.predicted.value == pytest.approx(truth, rel=0.03)
        assert p.error.value == pytest.approx(p.observed / p.predicted.value - 1)
        assert p.inside is not None
    assert "the largest N" in bt.holdout


def test_an_n_d_law_that_bends_at_the_largest_model_is_flagged_at_every_held_out_point():
    N, D, y = grid(0.005, 1)
    y = np.where(np.isclose(N, 1e9), y * 1.10, y)  # the largest model is 10% worse than the law says
    bt = backtest(np.column_stack([N, D]), y, "shared", holdout="N", bootstrap=200, seed=1)
    assert bt.flagged
    assert all(p.inside is False and p.error.value == pytest.approx(0.10, abs=0.035) for p in bt.points)
    assert "misses 5 of them" in bt.describe("EBT")


def test_a_c_m_law_is_backtested_on_its_largest_budget():
    """isoFLOP-like grid: 4 budgets x 5 model sizes, the over-training law in (C, M); hold out the top C."""
    rows = []
    for C in np.geomspace(1e18, 1e21, 4):
        for N in np.sqrt(C / 6 / 20) * np.geomspace(0.2, 5, 5):
            rows.append((C, (C / 6 / N) / N))
    C, M = np.array(rows).T
    N, D = np.sqrt(C / (6 * M)), np.sqrt(C * M / 6)
    y = shared_loss(N, D) * np.exp(0.005 * np.random.default_rng(2).standard_normal(C.size))
    bt = backtest({"C": C, "M": M}, y, "overtrain", holdout="C", bootstrap=200, seed=2)
    assert bt.n_holdout == 5 and all(p.x[0] == pytest.approx(1e21) for p in bt.points)
    assert max(abs(p.error.value) for p in bt.points) < 0.03
    # the same rows chosen by a key per row (C = 6ND from an (N, D) law) or by a row mask
    by_key = backtest(np.column_stack([N, D]), y, "shared", holdout=6 * N * D, bootstrap=0)
    by_mask = backtest(np.column_stack([N, D]), y, "shared", holdout=C > 5e20, bootstrap=0)
    assert by_key.n_holdout == by_mask.n_holdout == 5
    assert by_key.error.value == pytest.approx(by_mask.error.value)
    assert math.isnan(by_key.error.lo) and all(p.inside is None for p in by_key.points)


def test_two_columns_given_to_a_one_variable_law_is_a_fit_error_not_an_index_error():
    """The issue's crash: backtest() of (N, D) raised a raw IndexError (x was flattened)."""
    N, D, y = grid(0.005, 3)
    with pytest.raises(FitError, match=r"the power law takes 1 x column\(s\)"):
        backtest(np.column_stack([N, D]), y)
    assert backtest(np.column_stack([N, D]), y, "shared", bootstrap=0).n_train == 20


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"holdout": "Q"}, "hold out by 'Q'"),
        ({"holdout": np.zeros(25, dtype=bool)}, "selects no row"),
        ({"holdout": np.ones(25, dtype=bool)}, "nothing is left to fit"),
        ({"holdout": np.ones(3, dtype=bool)}, "one value per row"),
        ({"holdout": np.full(25, "big")}, "must be numbers"),
    ],
)
def test_bad_hold_outs_are_fit_errors(kwargs, message):
    N, D, y = grid(0.005, 4)
    with pytest.raises(FitError, match=message):
        backtest(np.column_stack([N, D]), y, "shared", bootstrap=0, **kwargs)


def test_bad_values_and_shapes_are_fit_errors():
    with pytest.raises(FitError, match="3 row"):
        backtest(X[:3], law(0.01, 0))
    y = law(0.01, 0)
    y[2] = -1.0
    with pytest.raises(FitError, match="non-positive"):
        backtest(X, y)


def test_a_many_point_backtest_says_what_was_held_out_and_its_worst_point():
    """The report's sentence: what was held out, how many configurations, the worst one with its error and
    interval, and whether all were inside (or how many missed, or that there is no interval)."""
    N, D, y = grid(0.005, 0)
    x = np.column_stack([N, D])
    head = "EBT's law, refitted without the largest N (1e+09) (5 configuration(s))"
    good = backtest(x, y, "shared", holdout="N", bootstrap=200, seed=0)
    worst = max(good.points, key=lambda p: abs(p.error.value))
    where = f"N=1e+09, D={worst.x[1]:.4g}"
    e = worst.error
    assert good.describe("EBT") == (
        f"{head}, predicts all of them within their intervals (worst at {where}: "
        f"{100 * e.value:+.1f}% (interval {100 * e.lo:+.1f}% to {100 * e.hi:+.1f}%))."
    )
    bare = backtest(x, y, "shared", holdout="N", bootstrap=0)
    assert bare.describe("EBT") == f"{head}: worst at {where}: {100 * worst.error.value:+.1f}%, no interval."
    bent = backtest(
        x, np.where(np.isclose(N, 1e9), y * 1.10, y), "shared", holdout="N", bootstrap=200, seed=1
    )
    text = bent.describe("EBT")
    assert text.startswith(f"{head}, misses 5 of them outside their intervals (worst at N=1e+09, D=")
    assert text.endswith(")): not to be trusted.")


def test_the_summary_record_carries_every_held_out_point():
    """summary.json's backtest: the worst point's numbers at the top, every held-out configuration with its
    x by name, and JSON-ready values (no NaN: None)."""
    N, D, y = grid(0.005, 0)
    bt = backtest(np.column_stack([N, D]), y, "shared", holdout="N", x_names=("N", "D"), bootstrap=50, seed=0)
    record = bt.to_dict()
    assert json.loads(json.dumps(record, allow_nan=False)) == record
    assert record["x_names"] == ["N", "D"] and record["holdout"] == bt.holdout
    assert (record["n_train"], record["n_holdout"], record["flagged"]) == (20, 5, bt.flagged)
    assert record["identified"] == bt.train_fit.identified
    assert record["x_holdout"] == bt.x_holdout and record["observed"] == bt.observed
    assert record["predicted"] == bt.predicted.to_dict() and record["error"] == bt.error.to_dict()
    assert len(record["points"]) == 5
    for p, rec in zip(bt.points, record["points"], strict=True):
        assert rec == {
            "x": {"N": p.x[0], "D": p.x[1]},
            "n_rows": p.n_rows,
            "observed": p.observed,
            "predicted": p.predicted.to_dict(),
            "error": p.error.to_dict(),
            "inside": p.inside,
        }
    bare = backtest(np.column_stack([N, D]), y, "shared", holdout="N", bootstrap=0).to_dict()
    assert bare["points"][0]["inside"] is None and bare["error"]["lo"] is None


def test_a_one_point_backtest_states_its_error_and_interval():
    bt = backtest(X, law(0.01, 0), bootstrap=200, seed=0)
    e = bt.error
    assert bt.describe("EBT") == (
        f"EBT's law predicts its held-out largest point (x = {bt.x_holdout:.4g}) within "
        f"{100 * e.value:+.1f}% (interval {100 * e.lo:+.1f}% to {100 * e.hi:+.1f}%)."
    )
    few = backtest(X[:3], law(0.01, 0)[:3], bootstrap=100, seed=0, min_distinct=3)  # 2 left for 2 params
    assert math.isnan(few.error.lo) and few.describe("EBT").endswith("(no interval).")
    bare = backtest(X, law(0.01, 0), bootstrap=0)
    assert bare.describe("EBT") == (
        f"EBT's backtest error at x = {bare.x_holdout:.4g} is {100 * bare.error.value:+.1f}% (no interval)."
    )


def test_one_held_out_configuration_of_a_two_variable_law_is_described_as_a_configuration():
    N, D, y = grid(0.005, 0)
    last = np.isclose(N, N.max()) & np.isclose(D, D.max())
    bt = backtest(np.column_stack([N, D]), y, "shared", holdout=last, bootstrap=50, seed=0)
    assert len(bt.points) == 1 and "(1 configuration(s))" in bt.describe("EBT")


def test_only_the_largest_x_is_held_out_even_on_a_small_integer_axis():
    """Depth 1..8: the hold-out is the 8-layer point alone (an absolute tolerance would take 7 too)."""
    layers = np.arange(1.0, 9.0)
    bt = backtest(layers, 5.0 * layers**-0.1, bootstrap=0)
    assert len(bt.points) == 1 and bt.x_holdout == 8.0


def test_a_y_that_is_not_numbers_is_named_in_the_error():
    with pytest.raises(FitError, match=r"^y must be numbers"):
        backtest(X, ["a"] * X.size)
