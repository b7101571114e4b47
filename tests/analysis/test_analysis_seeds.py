"""Seed noise: the bootstrap resamples configurations (all seeds of one together), so seeds that add no
information add no confidence, and seeds that disagree widen the interval."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.compare import compare_axis
from analysis.data import tidy_trials
from analysis.fit import bootstrap_weights, fit_power
from analysis.options import AnalysisOptions
from analysis.report import seed_noise
from tests.analysis.synthetic_scaling import make_trials, with_seeds

X = np.geomspace(1e6, 1e9, 6)
N_SEEDS = 4


def width(fit) -> float:
    lo, hi = fit.interval("alpha")
    return hi - lo


def seeded(spread: float, seed: int, offset: float = 0.01) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N_SEEDS seeds of 6 configs: each config off the law by its own amount (sd `offset`, shared by its
    seeds, as a config's data order or tuning luck is), each seed off its config by `spread`."""
    rng = np.random.default_rng(seed)
    config = 40 * X**-0.2 * np.exp(offset * rng.standard_normal(X.size))
    y = np.repeat(config, N_SEEDS) * np.exp(spread * rng.standard_normal(X.size * N_SEEDS))
    return np.repeat(X, N_SEEDS), y, np.repeat(np.arange(X.size), N_SEEDS)


def test_whole_configurations_are_resampled():
    groups = np.repeat(["a", "b", "c"], [2, 3, 1])
    W = bootstrap_weights(6, 200, 0, groups)
    assert (W[:, 0] == W[:, 1]).all() and (W[:, 2] == W[:, 3]).all() and (W[:, 3] == W[:, 4]).all()
    assert (W[:, [0, 2, 5]].sum(axis=1) == 3).all()  # three clusters drawn per resample
    assert np.array_equal(bootstrap_weights(6, 50, 1, np.arange(6)), bootstrap_weights(6, 50, 1))


def test_identical_seeds_add_no_confidence():
    x, y, groups = seeded(0.0, 0)
    one = fit_power(x[::N_SEEDS], y[::N_SEEDS], bootstrap=300, seed=1)
    clustered = fit_power(x, y, groups=groups, bootstrap=300, seed=1)
    assert width(clustered) == pytest.approx(width(one), rel=1e-6)
    naive = fit_power(x, y, bootstrap=300, seed=1)  # seeds as independent points: overconfident
    assert width(naive) < 0.8 * width(one)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_seeds_that_disagree_widen_the_cluster_interval(seed):
    """Same configurations, same law: only the seeds' disagreement differs."""
    x, y_agree, groups = seeded(0.0, seed, offset=0.003)
    _, y_disagree, _ = seeded(0.04, seed, offset=0.003)
    agree = fit_power(x, y_agree, groups=groups, bootstrap=400, seed=seed)
    disagree = fit_power(x, y_disagree, groups=groups, bootstrap=400, seed=seed)
    assert width(disagree) > 1.3 * width(agree)


def test_the_report_measures_seed_noise_and_clusters_by_config():
    trials = tidy_trials(with_seeds(make_trials(axes=("data",), n=6, noise=0.005), 3, 0.02))
    cmp = compare_axis(trials, "data", AnalysisOptions(bootstrap=50))
    assert cmp.points.groupby(["family", "config"]).size().eq(3).all()
    noise = seed_noise(trials, ["data"])
    assert (noise["configs"] == 6).all() and (noise["max_seeds"] == 3).all()
    assert noise["median_sd_log"].between(0.005, 0.04).all()
