"""Backtests: a law that bends at the largest point is flagged, one that holds is not."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.backtest import backtest
from analysis.compare import compare_axis
from analysis.errors import FitError
from analysis.options import AnalysisOptions
from tests.analysis.synthetic_scaling import make_trials

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
