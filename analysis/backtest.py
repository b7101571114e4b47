"""Extrapolation backtests: refit a law without held-out rows and check its predictions there.

A scaling law is only worth its extrapolation, so (as Gadre et al. 2024 validate theirs) a law, of one
variable or several, is refitted on every row but the held-out ones (by default those at the largest value
of its first variable: the largest x, or the largest N; or the largest of any key, such as C = 6ND; or any
row filter), and the observed loss of each held-out configuration (the geometric mean of its seeds) is
compared with the prediction. The prediction interval joins
the refit's bootstrap draws with the scatter the law leaves around one configuration (see _config_noise);
a held-out point outside that interval means the law bends or breaks where it matters, and the backtest is
flagged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.errors import FitError
from analysis.fit import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_LEVEL,
    FitResult,
    ParamEstimate,
    Seed,
    _as_floats,
    cluster_codes,
    fit_law,
    percentile_interval,
    spawn_seeds,
)
from analysis.laws import Law, resolve_law
from analysis.text import pct

MIN_DISTINCT_X = 5  # the threshold: fewer points leave too little to fit after the hold-out


@dataclass(frozen=True)
class HeldOut:
    """One held-out configuration: its x, the law's prediction there and how far off it was."""

    x: tuple[float, ...]  # per variable of the law
    n_rows: int  # its seeds
    observed: float  # geometric mean of its y
    predicted: ParamEstimate  # with its prediction interval
    error: ParamEstimate  # observed / predicted - 1, interval: the errors the prediction interval allows
    inside: bool | None  # the observed value lies in the prediction interval (None: no interval)

    def to_dict(self, x_names: tuple[str, ...]) -> dict[str, Any]:
        return {
            "x": dict(zip(x_names, self.x, strict=True)),
            "n_rows": self.n_rows,
            "observed": self.observed,
            "predicted": self.predicted.to_dict(),
            "error": self.error.to_dict(),
            "inside": self.inside,
        }


@dataclass(frozen=True)
class Backtest:
    """A law refitted without its held-out rows, predicting each held-out configuration. The scalar fields
    (x_holdout, observed, predicted, error) describe the worst-predicted configuration: with the default
    hold-out of a 1-D law, the one at the largest x."""

    points: tuple[HeldOut, ...]
    x_names: tuple[str, ...]
    holdout: str  # which rows were held out, in words ("the largest tokens", "rows where C >= 1e21")
    n_train: int
    n_holdout: int
    train_fit: FitResult = field(repr=False)

    @property
    def worst(self) -> HeldOut:
        return max(
            self.points, key=lambda p: abs(p.error.value) if math.isfinite(p.error.value) else math.inf
        )

    @property
    def x_holdout(self) -> float:
        return self.worst.x[0]

    @property
    def observed(self) -> float:
        return self.worst.observed

    @property
    def predicted(self) -> ParamEstimate:
        return self.worst.predicted

    @property
    def error(self) -> ParamEstimate:
        return self.worst.error

    @property
    def flagged(self) -> bool:
        """Some held-out configuration lies outside its prediction interval."""
        return any(p.inside is False for p in self.points)

    @property
    def where(self) -> str:
        """The worst configuration's x, e.g. '1e+09' or 'n_params=1e+08, tokens=2e+09'."""
        if len(self.x_names) == 1:
            return f"{self.x_holdout:.4g}"
        return ", ".join(f"{n}={v:.4g}" for n, v in zip(self.x_names, self.worst.x, strict=True))

    def to_dict(self) -> dict[str, Any]:
        return {
            "x_holdout": self.x_holdout,
            "n_train": self.n_train,
            "n_holdout": self.n_holdout,
            "observed": self.observed,
            "predicted": self.predicted.to_dict(),
            "error": self.error.to_dict(),
            "flagged": self.flagged,
            "holdout": self.holdout,
            "x_names": list(self.x_names),
            "points": [p.to_dict(self.x_names) for p in self.points],
            "identified": self.train_fit.identified,
        }

    def describe(self, who: str) -> str:
        """One sentence for the report, e.g. "EBT's law misses its held-out largest point by +8% ..."."""
        if len(self.points) > 1 or len(self.x_names) > 1:
            return self._describe_many(who)
        interval = f"{pct(self.error.lo)} to {pct(self.error.hi)}"
        if not math.isfinite(self.error.lo):
            error = pct(self.error.value)
            return f"{who}'s backtest error at x = {self.x_holdout:.4g} is {error} (no interval)."
        if self.flagged:
            return (
                f"{who}'s law misses its held-out largest point (x = {self.x_holdout:.4g}) by "
                f"{pct(self.error.value)}, outside its own interval ({interval}): its extrapolation "
                "is not to be trusted."
            )
        return (
            f"{who}'s law predicts its held-out largest point (x = {self.x_holdout:.4g}) within "
            f"{pct(self.error.value)} (interval {interval})."
        )

    def _describe_many(self, who: str) -> str:
        w = self.worst
        outside = sum(p.inside is False for p in self.points)
        head = f"{who}'s law, refitted without {self.holdout} ({len(self.points)} configuration(s))"
        worst = f"worst at {self.where}: {pct(w.error.value)}"
        if math.isfinite(w.error.lo):
            worst += f" (interval {pct(w.error.lo)} to {pct(w.error.hi)})"
        if self.flagged:
            return f"{head}, misses {outside} of them outside their intervals ({worst}): not to be trusted."
        if any(p.inside is None for p in self.points):
            return f"{head}: {worst}, no interval."
        return f"{head}, predicts all of them within their intervals ({worst})."


def _config_noise(residuals: np.ndarray, codes: np.ndarray, n_params: int, n: int, seed: Seed) -> np.ndarray:
    """n draws of how far one configuration's mean log y sits from the law, as a classical prediction
    interval has it: s * t(G - p), s the residual standard error of the G training configurations' mean
    residuals (seeds of a config share its deviation, so they are averaged first). Not a resample of the
    residuals: a fit bends toward its own points (least squares by their leverage, least absolute deviations
    through some), so their residuals understate the scatter."""
    sums = np.bincount(codes, weights=residuals)
    counts = np.bincount(codes)
    means = sums[counts > 0] / counts[counts > 0]
    dof = means.size - n_params
    if dof < 1:
        return np.full(n, np.nan)
    s = math.sqrt(float((means**2).sum()) / dof)
    return s * np.random.default_rng(seed).standard_t(dof, size=n)


def _holdout_rows(
    holdout: str | np.ndarray | None,
    X: np.ndarray,
    x_names: tuple[str, ...],
    law_vars: tuple[str, ...],
    key_name: str,
) -> tuple[np.ndarray, str]:
    """(mask of held-out rows, its description). None: the largest value of the first variable; a name (a law
    variable or an x column name): its largest value; a bool array: those rows; a number array (a key per row,
    e.g. C = 6ND): the rows at its largest value."""
    n = X.shape[0]
    if holdout is None or isinstance(holdout, str):
        name = holdout or x_names[0]
        names = {
            **dict(zip(law_vars, range(len(law_vars)), strict=True)),
            **{c: j for j, c in enumerate(x_names)},
        }
        if name not in names:
            raise FitError(
                f"hold out by {name!r}? the law's variables are {', '.join(law_vars)} "
                f"(columns {', '.join(x_names)}); or give a row mask or a key per row"
            )
        key, label = X[:, names[name]], f"the largest {x_names[names[name]]}"
    else:
        arr = np.asarray(holdout)
        if arr.shape != (n,):
            raise FitError(f"a hold-out mask or key needs one value per row ({n}), got shape {arr.shape}")
        if arr.dtype == bool:
            return (
                arr,
                f"the rows where {key_name}" if key_name != "key" else f"{int(arr.sum())} chosen row(s)",
            )
        try:
            key = arr.astype(float)
        except (TypeError, ValueError):
            raise FitError("a hold-out key must be numbers (or a boolean row mask)") from None
        if not np.isfinite(key).all():
            raise FitError("a hold-out key has NaN/inf values")
        label = f"the largest {key_name}"
    top = key.max()
    return np.isclose(key, top, rtol=1e-9, atol=0.0), f"{label} ({top:.4g})"


def backtest(
    x: Any,
    y: Any,
    form: str | Law = "power",
    *,
    holdout: str | np.ndarray | None = None,
    holdout_name: str = "key",
    x_names: tuple[str, ...] | None = None,
    groups: Any = None,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: Seed = 0,
    level: float = DEFAULT_LEVEL,
    min_distinct: int = MIN_DISTINCT_X,
) -> Backtest:
    """Fit a law (a form name, an expression or a Law; x (n,) or (n, J) in the law's variable order) to every
    row but the held-out ones and predict each held-out configuration (rows sharing x, or a `groups` label).
    `holdout` picks them (see _holdout_rows; default: the largest value of the first variable; `holdout_name`
    names a key in the description, e.g. "budget"). FitError, not
    an IndexError, for anything that cannot be backtested: shapes that do not match the law, bad values,
    fewer than `min_distinct` distinct points, an empty or total hold-out, or a refit that fails."""
    law = resolve_law(form)
    if isinstance(x, Mapping | pd.DataFrame):  # columns by variable name
        missing = [v for v in law.variables if v not in x]
        if missing:
            raise FitError(f"the {law.name} law needs column(s) {', '.join(missing)} in x")
        x = np.column_stack([np.ravel(np.asarray(x[v], dtype=object)) for v in law.variables])
    X = _as_floats(x, "x")
    X = X.reshape(-1, 1) if X.ndim == 1 else X
    yv = _as_floats(y, "y").ravel()
    if X.ndim != 2 or X.shape[1] != law.n_vars:
        raise FitError(
            f"the {law.name} law takes {law.n_vars} x column(s) ({', '.join(law.variables)}), got x of shape "
            f"{np.shape(x)}"
        )
    if X.shape[0] != yv.size:
        raise FitError(f"x has {X.shape[0]} row(s) but y has {yv.size} value(s)")
    x_names = tuple(x_names or law.variables)
    if len(x_names) != law.n_vars:
        raise FitError(f"the {law.name} law takes {law.n_vars} x name(s), got {list(x_names)}")
    for values, name in [*((X[:, j], x_names[j]) for j in range(law.n_vars)), (yv, "y")]:
        if not np.isfinite(values).all() or (values <= 0).any():
            raise FitError(f"{name} has NaN/inf or non-positive value(s): a log-space backtest needs > 0")
    distinct = np.unique(X, axis=0).shape[0]
    if distinct < min_distinct:
        what = "x value(s)" if law.n_vars == 1 else f"({', '.join(x_names)}) point(s)"
        raise FitError(f"{distinct} distinct {what}: a backtest needs at least {min_distinct}")
    held, label = _holdout_rows(holdout, X, x_names, law.variables, holdout_name)
    if not held.any():
        raise FitError("the hold-out selects no row")
    if held.all():
        raise FitError(f"the hold-out ({label}) selects every row: nothing is left to fit")
    fit_seed, noise_seed = spawn_seeds(seed, 2)
    codes = cluster_codes(groups, yv.size)
    fit = fit_law(
        X[~held] if law.n_vars > 1 else X[~held, 0],
        yv[~held],
        law,
        x_names=x_names,
        groups=codes[~held],
        bootstrap=bootstrap,
        seed=fit_seed,
        level=level,
    )
    # one configuration per held-out group (its seeds): geometric means of its x and y
    _, config = np.unique(codes[held] if groups is not None else X[held], axis=0, return_inverse=True)
    config = config.ravel()
    lx, ly = np.log(X[held]), np.log(yv[held])
    n_cfg = int(config.max()) + 1
    Xh = X[held]
    Xc = np.array(
        [
            Xh[config == c][0]
            if (Xh[config == c] == Xh[config == c][0]).all()
            else np.exp(lx[config == c].mean(0))
            for c in range(n_cfg)
        ]
    )
    observed = np.exp(np.array([ly[config == c].mean() for c in range(n_cfg)]))
    counts = np.bincount(config)
    point = fit.predict(Xc if law.n_vars > 1 else Xc[:, 0])
    draws = fit.predict_draws(Xc if law.n_vars > 1 else Xc[:, 0])
    noise = np.exp(_config_noise(fit.residuals, codes[~held], fit.law.n_params, draws.shape[0], noise_seed))
    points = []
    for c in range(n_cfg):
        lo, hi = percentile_interval(draws[:, c] * noise, level)
        predicted = ParamEstimate(float(point[c]), lo, hi)
        obs = float(observed[c])
        with np.errstate(all="ignore"):
            error = ParamEstimate(obs / point[c] - 1, obs / hi - 1, obs / lo - 1)
        inside = predicted.contains(obs) if math.isfinite(lo) else None
        points.append(HeldOut(tuple(float(v) for v in Xc[c]), int(counts[c]), obs, predicted, error, inside))
    return Backtest(tuple(points), x_names, label, int((~held).sum()), int(held.sum()), fit)
