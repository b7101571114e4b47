"""Extrapolation backtests: refit a law without its largest point(s) and check the held-out prediction.

A scaling law is only worth its extrapolation, so (as Gadre et al. 2024 validate theirs) each family's law
on each axis is refitted on every point but those at the largest x, and the observed loss there is
compared with the prediction (the geometric mean of the held-out seeds). The prediction interval joins
the refit's bootstrap draws with the scatter the law leaves around one configuration (see _config_noise);
a held-out point outside that interval means the law bends or breaks where it matters, and the backtest is
flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.errors import FitError
from analysis.fit import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_LEVEL,
    ParamEstimate,
    Seed,
    cluster_codes,
    fit_law,
    percentile_interval,
    spawn_seeds,
)

MIN_DISTINCT_X = 5  # the threshold: fewer points leave too little to fit after the hold-out


@dataclass(frozen=True)
class Backtest:
    x_holdout: float  # the largest x, all of whose rows (seeds) were held out
    n_train: int
    n_holdout: int
    observed: float  # geometric mean of the held-out y
    predicted: ParamEstimate  # the refit's prediction at x_holdout, with its prediction interval
    error: ParamEstimate  # observed / predicted - 1, interval: the errors the prediction interval allows
    flagged: bool  # the observed point lies outside the prediction interval

    def to_dict(self) -> dict[str, Any]:
        return {
            "x_holdout": self.x_holdout,
            "n_train": self.n_train,
            "n_holdout": self.n_holdout,
            "observed": self.observed,
            "predicted": self.predicted.to_dict(),
            "error": self.error.to_dict(),
            "flagged": self.flagged,
        }

    def describe(self, who: str) -> str:
        """One sentence for the report, e.g. "EBT's law misses its held-out largest point by +8% ..."."""
        interval = f"{100 * self.error.lo:+.1f}% to {100 * self.error.hi:+.1f}%"
        if not math.isfinite(self.error.lo):
            error = f"{100 * self.error.value:+.1f}%"
            return f"{who}'s backtest error at x = {self.x_holdout:.4g} is {error} (no interval)."
        if self.flagged:
            return (
                f"{who}'s law misses its held-out largest point (x = {self.x_holdout:.4g}) by "
                f"{100 * self.error.value:+.1f}%, outside its own interval ({interval}): its extrapolation "
                "is not to be trusted."
            )
        return (
            f"{who}'s law predicts its held-out largest point (x = {self.x_holdout:.4g}) within "
            f"{100 * self.error.value:+.1f}% (interval {interval})."
        )


def _config_noise(residuals: np.ndarray, codes: np.ndarray, n_params: int, n: int, seed: Seed) -> np.ndarray:
    """n draws of how far one configuration's mean log y sits from the law, as a classical prediction
    interval has it: s * t(G - p), s the residual standard error of the G training configurations' mean
    residuals (seeds of a config share its deviation, so they are averaged first). Not a resample of the
    residuals: a Huber (near least-absolute) fit passes through some points, so their residuals understate
    the scatter."""
    sums = np.bincount(codes, weights=residuals)
    counts = np.bincount(codes)
    means = sums[counts > 0] / counts[counts > 0]
    dof = means.size - n_params
    if dof < 1:
        return np.full(n, np.nan)
    s = math.sqrt(float((means**2).sum()) / dof)
    return s * np.random.default_rng(seed).standard_t(dof, size=n)


def backtest(
    x: Any,
    y: Any,
    form: str = "power",
    *,
    groups: Any = None,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: Seed = 0,
    level: float = DEFAULT_LEVEL,
    min_distinct: int = MIN_DISTINCT_X,
) -> Backtest:
    """Fit `form` to every point below the largest x and predict the points at it. FitError when there are
    fewer than `min_distinct` distinct x (nothing to hold out and still fit) or the refit fails."""
    x, y = np.asarray(x, float).ravel(), np.asarray(y, float).ravel()
    distinct = np.unique(x)
    if distinct.size < min_distinct:
        raise FitError(f"{distinct.size} distinct x value(s): a backtest needs at least {min_distinct}")
    held = x == distinct[-1]
    fit_seed, noise_seed = spawn_seeds(seed, 2)
    codes = cluster_codes(groups, x.size)
    fit = fit_law(
        x[~held], y[~held], form, groups=codes[~held], bootstrap=bootstrap, seed=fit_seed, level=level
    )
    observed = float(np.exp(np.log(y[held]).mean()))
    point = float(fit.predict(distinct[-1])[0])
    draws = fit.predict_draws(distinct[-1])[:, 0]
    predictive = draws * np.exp(
        _config_noise(fit.residuals, codes[~held], fit.law.n_params, draws.size, noise_seed)
    )
    lo, hi = percentile_interval(predictive, level)
    predicted = ParamEstimate(point, lo, hi)
    with np.errstate(all="ignore"):
        error = ParamEstimate(observed / point - 1, observed / hi - 1, observed / lo - 1)
    flagged = bool(math.isfinite(lo) and not predicted.contains(observed))
    return Backtest(
        float(distinct[-1]), int((~held).sum()), int(held.sum()), observed, predicted, error, flagged
    )
