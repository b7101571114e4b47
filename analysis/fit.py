"""Scaling-law fits with bootstrap confidence intervals.

Method (Hoffmann et al. 2022; Besiroglu et al. 2024): Huber loss (delta 1e-3) on log residuals, log-sum-exp
parameterisation (see analysis.laws), L-BFGS from a grid of starts, the best start polished with scipy's
L-BFGS-B. Uncertainty: a nonparametric bootstrap over points (rows resampled with replacement, as integer
weight vectors), every resample warm-started from the full-data optimum and all of them minimised together
by the batched L-BFGS of analysis.optim; percentile intervals for every parameter and derived quantity.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from analysis.errors import FitError
from analysis.identify import Flag, advice, identifiability
from analysis.intervals import percentile_interval
from analysis.laws import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_HUBER_DELTA,
    DEFAULT_LEVEL,
    FORMS,
    GRID_VARIABLES,
    Law,
    grid_design,
    resolve_law,
)
from analysis.optim import minimize_batched

N_POLISH = 4  # best grid optima re-run with scipy's L-BFGS-B at tight tolerances

FlopsPerToken = Callable[[np.ndarray], np.ndarray]  # N -> training FLOPs per token


@dataclass(frozen=True)
class ParamEstimate:
    """A point estimate with its bootstrap percentile interval (lo/hi are NaN without a bootstrap)."""

    value: float
    lo: float
    hi: float

    def to_dict(self) -> dict[str, float | None]:
        """{value, lo, hi}; NaN (no interval) becomes None, which JSON can carry."""
        items = {"value": self.value, "lo": self.lo, "hi": self.hi}
        return {k: (float(v) if math.isfinite(v) else None) for k, v in items.items()}

    def contains(self, x: float) -> bool:
        return bool(self.lo <= x <= self.hi)


Seed = int | np.random.SeedSequence | None


def spawn_seeds(seed: Seed, n: int) -> list[np.random.SeedSequence]:
    """n independent child seeds: independent fits (two families, several axes) must not share resamples."""
    parent = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    return parent.spawn(n)


def _percentile_bands(draws: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Column-wise percentile interval of (B, n) draws, ignoring NaN rows."""
    q = 100 * (1 - level) / 2
    if draws.size == 0 or not np.isfinite(draws).any():
        nan = np.full(draws.shape[1:], np.nan)
        return nan, nan
    lo, hi = np.nanpercentile(draws, [q, 100 - q], axis=0)
    return lo, hi


def derived_quantities(law: Law, natural: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Quantities implied by the law. Chinchilla, with C = 6ND: N*(C) = G (C/6)^a, D*(C) = G^-1 (C/6)^b with
    a = beta/(alpha+beta), b = alpha/(alpha+beta), G = (alpha A / (beta B))^(1/(alpha+beta))."""
    if law.name != "chinchilla":
        return {}
    A, B, alpha, beta = natural["A"], natural["B"], natural["alpha"], natural["beta"]
    with np.errstate(all="ignore"):
        s = alpha + beta
        G = np.exp((np.log(alpha * A) - np.log(beta * B)) / s)
        return {"a": beta / s, "b": alpha / s, "G": G}


@dataclass
class FitResult:
    """One fitted law: point estimates with CIs, fit diagnostics, and the bootstrap draws for intervals."""

    form: str
    params: dict[str, ParamEstimate]
    derived: dict[str, ParamEstimate]
    objective: float  # sum of Huber losses of the log residuals (Hoffmann's objective) at the optimum
    residuals: np.ndarray  # log y - log y_hat, in input order
    r2_log: float
    n_points: int
    x_names: tuple[str, ...]
    y_name: str
    x_min: np.ndarray  # per variable, observed range (for plots and "sane" extrapolation ranges)
    x_max: np.ndarray
    level: float
    huber_delta: float
    n_boot: int
    n_boot_valid: int
    law: Law = field(repr=False)
    theta: np.ndarray = field(repr=False)  # (p,) natural log-parameters [log A.., log E, alpha..]
    theta_draws: np.ndarray = field(repr=False)  # (n_boot, p), NaN rows for degenerate resamples
    flags: dict[str, tuple[Flag, ...]] = field(default_factory=dict)  # parameter -> identifiability flags
    advice: str = ""  # where points would pin the flagged parameters down ("add points at ...")

    # ---- identifiability
    @property
    def identified(self) -> bool:
        """No parameter is flagged (analysis.identify): a verdict may rest on this fit."""
        return not self.flags

    def flag_text(self, name: str) -> str:
        """The flags of one parameter, for a table cell ("" when it is identified)."""
        return "; ".join(f.detail for f in self.flags.get(name, ()))

    def not_identified(self) -> str:
        """One sentence: which parameters are not identified and where to add points ("" when all are)."""
        if not self.flags:
            return ""
        details = "; ".join(f.detail for fl in self.flags.values() for f in fl)
        return f"not identified: {details}" + (f"; {self.advice}" if self.advice else "")

    # ---- draws and intervals
    def draws(self, name: str) -> np.ndarray:
        """Bootstrap draws of a parameter or derived quantity, NaN for degenerate resamples."""
        natural = self.law.to_natural(self.theta_draws)
        if name in natural:
            return natural[name]
        derived = derived_quantities(self.law, natural)
        if name in derived:
            return derived[name]
        raise KeyError(f"{name!r} is not a parameter or derived quantity of the {self.form} law")

    @property
    def fixed(self) -> dict[str, float]:
        """Parameters the law held at a value (not fitted, no interval)."""
        return self.law.fixed_values

    def interval(self, name: str, level: float | None = None) -> tuple[float, float]:
        """Percentile interval of any parameter / derived quantity at another level than the fitted one."""
        return percentile_interval(self.draws(name), level or self.level)

    # ---- prediction
    def _design(self, x: Any) -> np.ndarray:
        K = self.law.n_vars
        if K == 1:
            return np.atleast_1d(np.asarray(x, float)).reshape(-1, 1)
        if isinstance(x, tuple) and len(x) == K:
            cols = np.broadcast_arrays(*(np.atleast_1d(np.asarray(c, float)) for c in x))
            return np.column_stack([c.ravel() for c in cols])
        X = np.asarray(x, float)
        if X.ndim == 1 and X.size == K:
            X = X[None, :]
        if X.ndim != 2 or X.shape[1] != K:
            raise ValueError(
                f"the {self.form} law needs ({', '.join(self.x_names)}) pairs, got shape {X.shape}"
            )
        return X

    def predict(self, x: Any) -> np.ndarray:
        """y_hat at x (array) or, for a law of several variables, at e.g. (N, D) (a tuple of arrays or an
        (n, 2) array, columns in the law's variable order)."""
        X = self._design(x)
        return np.exp(self.law.log_predict(self.theta[None, :], np.log(X))[0])

    def predict_draws(self, x: Any) -> np.ndarray:
        """(n_boot, n) predictions of every bootstrap resample (NaN rows for degenerate ones)."""
        X = self._design(x)
        ok = np.isfinite(self.theta_draws).all(axis=1)
        out = np.full((self.theta_draws.shape[0], X.shape[0]), np.nan)
        if ok.any():
            out[ok] = np.exp(self.law.log_predict(self.theta_draws[ok], np.log(X)))
        return out

    def predict_interval(self, x: Any, level: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise percentile band of the prediction over the bootstrap draws."""
        return _percentile_bands(self.predict_draws(x), level or self.level)

    # ---- export
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every parameter as {value, lo, hi} at the top level, plus derived and diagnostics."""
        out: dict[str, Any] = {"form": self.form, "law": self.law.describe()}
        out.update({name: est.to_dict() for name, est in self.params.items()})
        out["fixed"] = dict(self.fixed)
        out["bounds"] = {k: list(v) for k, v in self.law.bound_values.items()}
        out["flags"] = {k: [f.to_dict() for f in fl] for k, fl in self.flags.items()}
        out["identified"] = self.identified
        out["advice"] = self.advice
        out["derived"] = {name: est.to_dict() for name, est in self.derived.items()}
        out.update(
            r2_log=float(self.r2_log),
            n_points=int(self.n_points),
            objective=float(self.objective),
            level=float(self.level),
            huber_delta=float(self.huber_delta),
            n_boot=int(self.n_boot),
            n_boot_valid=int(self.n_boot_valid),
            x=list(self.x_names),
            y=self.y_name,
        )
        return out


# --------------------------------------------------------------------------------------------- validation


def _describe(values: np.ndarray) -> str:
    return ", ".join(f"{v:g}" for v in values[:3]) + (", ..." if values.size > 3 else "")


def _as_floats(values: Any, name: str) -> np.ndarray:
    """A float array, or FitError naming the input (strings, None, ragged lists: not numbers)."""
    try:
        return np.asarray(values, float)
    except (TypeError, ValueError) as err:
        raise FitError(f"{name} must be numbers: {' '.join(str(err).split())}") from None


def _validate(X: np.ndarray, y: np.ndarray, law: Law, x_names: Sequence[str], y_name: str) -> None:
    """FitError with a message naming the problem for every input the law cannot be identified from."""
    n, p = y.size, law.n_params
    if X.shape != (n, law.n_vars):
        raise FitError(
            f"expected {law.n_vars} x column(s) of {n} values for the {law.name} law, got {X.shape}"
        )
    for values, name in [*((X[:, k], x_names[k]) for k in range(law.n_vars)), (y, y_name)]:
        bad = ~np.isfinite(values)
        if bad.any():
            raise FitError(
                f"{name} has {int(bad.sum())} NaN/inf value(s); drop or fix those rows before fitting"
            )
        if (values <= 0).any():
            raise FitError(
                f"{name} has non-positive value(s) ({_describe(values[values <= 0])}): log fits need > 0"
            )
    if n < p:
        raise FitError(f"{n} point(s) for the {p} parameters of the {law.name} law: need at least {p}")
    for k, name in enumerate(x_names):
        distinct = np.unique(X[:, k])
        if distinct.size == 1:
            raise FitError(
                f"all {n} points share a single {name} value ({distinct[0]:g}): no exponent can be fitted"
            )
    if n and np.unique(y).size == 1:
        raise FitError(f"all {n} points share a single {y_name} value ({y[0]:g}): there is no trend to fit")
    n_design = np.unique(X, axis=0).shape[0]
    if n_design < p:
        raise FitError(
            f"only {n_design} distinct x value(s) for the {p} parameters of the {law.name} law: "
            f"need at least {p}"
        )


def _resample_valid(W: np.ndarray, X: np.ndarray, law: Law) -> np.ndarray:
    """A resample identifies the law only if it keeps >= p distinct design points and >= 2 values of every
    variable; others (likely with few points) would return their warm start, so they are dropped."""
    present = W > 0
    _, design = np.unique(X, axis=0, return_inverse=True)
    ok = _distinct_present(present, design.ravel()) >= law.n_params
    for k in range(law.n_vars):
        _, codes = np.unique(X[:, k], return_inverse=True)
        ok &= _distinct_present(present, codes.ravel()) >= 2
    return ok


def _distinct_present(present: np.ndarray, codes: np.ndarray) -> np.ndarray:
    onehot = np.zeros((codes.size, codes.max() + 1))
    onehot[np.arange(codes.size), codes] = 1.0
    return ((present.astype(float) @ onehot) > 0).sum(axis=1)


# -------------------------------------------------------------------------------------------------- fitting


def _polish(
    law: Law, theta0: np.ndarray, lx: np.ndarray, ly: np.ndarray, delta: float
) -> tuple[np.ndarray, float]:
    """Refine one start with scipy's L-BFGS-B at tight tolerances (analytic gradient)."""
    ones = np.ones((1, ly.size))

    def fun(t: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = law.objective(t[None, :], lx, ly, ones, delta)
        return float(f[0]), g[0]

    box = law.internal_bounds()
    bounds = (
        None
        if box is None
        else [
            (lo if np.isfinite(lo) else None, hi if np.isfinite(hi) else None)
            for lo, hi in zip(*box, strict=True)
        ]
    )
    res = minimize(
        fun,
        theta0,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-12},
    )
    f0 = fun(theta0)[0]
    return (res.x, float(res.fun)) if np.isfinite(res.fun) and res.fun <= f0 else (theta0, f0)


def _best_fit(
    law: Law, lx: np.ndarray, ly: np.ndarray, delta: float, starts: np.ndarray | None
) -> np.ndarray:
    """Batched L-BFGS from every grid start, then scipy polish of the best few; best objective wins."""
    starts = law.start_grid(ly) if starts is None else np.atleast_2d(np.asarray(starts, float))
    ones = np.ones((1, ly.size))
    res = minimize_batched(
        lambda t, rows: law.objective(t, lx, ly, ones, delta), starts, bounds=law.internal_bounds()
    )
    fun = np.where(np.isfinite(res.fun), res.fun, np.inf)
    best = [_polish(law, res.x[i], lx, ly, delta) for i in np.argsort(fun)[:N_POLISH]]
    theta, _ = min(best, key=lambda pair: pair[1])
    return theta


def cluster_codes(groups: Any, n: int) -> np.ndarray:
    """Integer cluster of each of n points, numbered in order of first appearance (so distinct groups
    reproduce the plain point bootstrap draw for draw); None: every point is its own cluster."""
    if groups is None:
        return np.arange(n)
    codes, _ = pd.factorize(np.asarray(groups, dtype=object).ravel())
    if codes.size != n or (codes < 0).any():
        raise FitError(f"groups needs one non-missing label per point ({n}), got {codes.size}")
    return codes


def bootstrap_weights(n: int, n_boot: int, seed: Seed, groups: Any = None) -> np.ndarray:
    """(n_boot, n) resampling counts: row b says how often each point appears in resample b.

    With `groups` (a config label per point) whole clusters are drawn: all seeds of a config enter a
    resample together, because seeds of one config are not independent evidence about the law."""
    codes = cluster_codes(groups, n)
    g = int(codes.max()) + 1 if n else 0
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(g, np.full(g, 1.0 / g), size=n_boot).astype(float)
    return counts[:, codes]


def _bootstrap(
    law: Law,
    X: np.ndarray,
    lx: np.ndarray,
    ly: np.ndarray,
    theta: np.ndarray,
    delta: float,
    n_boot: int,
    seed: Seed,
) -> np.ndarray:
    """(n_boot, p) centred parameters of the resampled fits; NaN rows for resamples that cannot identify
    the law."""
    out = np.full((n_boot, law.n_params), np.nan)
    if np.unique(X, axis=0).shape[0] <= law.n_params:
        # as many distinct points as parameters: every usable resample reproduces the same exact fit, and a
        # zero-width interval would claim certainty, so such a fit gets no interval (NaN) instead
        return out
    W = bootstrap_weights(ly.size, n_boot, seed)
    valid = _resample_valid(W, X, law)
    if valid.any():
        Wv = W[valid]
        res = minimize_batched(
            lambda t, rows: law.objective(t, lx, ly, Wv[rows], delta),
            np.tile(theta, (Wv.shape[0], 1)),
            bounds=law.internal_bounds(),
        )
        out[valid] = res.x
    return out


def configuration_means(lx: np.ndarray, ly: np.ndarray, groups: Any) -> tuple[np.ndarray, np.ndarray]:
    """Each group's mean log x (per variable) and mean log y, one row per group in order of first
    appearance; the points themselves when `groups` is None or every group has one point.

    Why a law is fitted to configuration means, not to every seed: the Huber loss at delta 1e-3 is least
    absolute deviations at these residuals, and two seeds at one x leave its objective flat between them;
    each warm-started bootstrap resample then stayed near the full fit, and the intervals undercovered. On
    simulated studies of 6 x with 2 seeds each (log-noise 0.02), the 95% interval of the relative exponent
    difference held the truth 85% of the time fitted to every seed, 96.7% fitted to the means (150 studies
    each, 2026-12-07; benchmarks/bench_adaptive.py measures it for every design). The bootstrap resamples
    configurations either way."""
    if groups is None:
        return lx, ly
    codes = cluster_codes(groups, ly.size)
    counts = np.bincount(codes)
    if counts.max() == 1:
        return lx, ly
    means_x = np.stack([np.bincount(codes, lx[:, j]) for j in range(lx.shape[1])], axis=1) / counts[:, None]
    return means_x, np.bincount(codes, ly) / counts


def fit_law(
    X: Any,
    y: Any,
    form: str | Law,
    *,
    x_names: Sequence[str] | None = None,
    y_name: str = "y",
    huber_delta: float = DEFAULT_HUBER_DELTA,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: Seed = 0,
    level: float = DEFAULT_LEVEL,
    starts: np.ndarray | None = None,
    groups: Any = None,
    fixed: Mapping[str, float] | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
) -> FitResult:
    """Fit a law to y at X ((n,) or (n, J), columns in the law's variable order). `form` is a Law, a named
    form (analysis.laws.FORMS: power, saturating, chinchilla, shared, overtrain, compute) or an expression
    ('E + A*N^-alpha + B*D^-alpha'); `fixed` holds parameters at values, `bounds` boxes E and exponents.

    `starts` overrides the multi-start grid (centred internal coordinates, see analysis.laws). `bootstrap=0`
    skips the bootstrap (intervals are then NaN). `groups` (a label per point, e.g. the config of each seed):
    the law is fitted to each group's mean (`configuration_means`), so the bootstrap resamples whole
    configurations, not seeds; residuals are still of every point. The result carries identifiability flags
    (analysis.identify). Raises FitError for input the law cannot be fitted to."""
    law = resolve_law(form)
    if fixed:
        law = law.with_fixed(fixed)
    if bounds:
        law = law.with_bounds(bounds)
    form = law.name
    if not 0 < level < 1:
        raise FitError(f"level must be in (0, 1), got {level}")
    if huber_delta <= 0:
        raise FitError(f"huber_delta must be > 0, got {huber_delta}")
    if bootstrap < 0:
        raise FitError(f"bootstrap must be >= 0, got {bootstrap}")
    if isinstance(X, Mapping | pd.DataFrame):  # columns by variable name: their order cannot slip
        missing = [v for v in law.variables if v not in X]
        if missing:
            raise FitError(f"the {law.name} law needs column(s) {', '.join(missing)} in X")
        X = np.column_stack([np.ravel(np.asarray(X[v], dtype=object)) for v in law.variables])
    x_names = tuple(x_names or law.variables)
    if len(x_names) != law.n_vars:
        raise FitError(
            f"the {law.name} law takes {law.n_vars} x column(s) ({', '.join(law.variables)}), "
            f"got names {list(x_names)}"
        )
    X = _as_floats(X, ", ".join(x_names))
    X = X.reshape(-1, 1) if X.ndim == 1 else X
    y = _as_floats(y, y_name).ravel()
    _validate(X, y, law, x_names, y_name)

    lx, ly = np.log(X), np.log(y)
    # the points the law is fitted to: each configuration's mean (see `configuration_means`), or every point
    fit_lx, fit_ly = configuration_means(lx, ly, groups)
    centre = fit_lx.mean(axis=0)
    lxc, fit_lxc = lx - centre, fit_lx - centre
    theta_c = _best_fit(law, fit_lxc, fit_ly, huber_delta, starts)
    theta = law.recentre(theta_c[None, :], -centre)[0]

    fit_residuals = fit_ly - law.log_predict(theta_c[None, :], fit_lxc)[0]
    a = np.abs(fit_residuals)
    objective = float(np.where(a <= huber_delta, 0.5 * a**2, huber_delta * (a - 0.5 * huber_delta)).sum())
    residuals = ly - law.log_predict(theta_c[None, :], lxc)[0]  # of every point, seeds included
    ss_tot = float(((ly - ly.mean()) ** 2).sum())
    r2_log = 1.0 - float((residuals**2).sum()) / ss_tot if ss_tot > 0 else math.nan

    draws_c = _bootstrap(law, np.exp(fit_lx), fit_lxc, fit_ly, theta_c, huber_delta, bootstrap, seed)
    theta_draws = law.recentre(draws_c, -centre)

    natural = {k: float(v[0]) for k, v in law.to_natural(theta[None, :]).items()}
    natural_draws = law.to_natural(theta_draws)
    params = {k: ParamEstimate(natural[k], *percentile_interval(natural_draws[k], level)) for k in natural}
    derived_point = derived_quantities(law, {k: np.array([v]) for k, v in natural.items()})
    derived_draws = derived_quantities(law, natural_draws)
    derived = {
        k: ParamEstimate(float(v[0]), *percentile_interval(derived_draws[k], level))
        for k, v in derived_point.items()
    }
    broken = [k for k, v in {**params, **derived}.items() if not math.isfinite(v.value)]
    if broken or not math.isfinite(objective):
        raise FitError(
            f"the {form} law is not identifiable from these {y.size} points of {y_name} vs "
            f"{', '.join(x_names)}: {', '.join(broken) or 'the objective'} came out non-finite"
        )
    flags = identifiability(law, theta, theta_draws, centre, y, level)
    return FitResult(
        form=form,
        params=params,
        derived=derived,
        objective=objective,
        residuals=residuals,
        r2_log=r2_log,
        n_points=int(y.size),
        x_names=x_names,
        y_name=y_name,
        x_min=X.min(axis=0),
        x_max=X.max(axis=0),
        level=level,
        huber_delta=huber_delta,
        n_boot=bootstrap,
        n_boot_valid=int(np.isfinite(theta_draws).all(axis=1).sum()),
        law=law,
        theta=theta,
        theta_draws=theta_draws,
        flags=flags,
        advice=advice(law, flags, x_names, X),
    )


def fit_power(x: Any, y: Any, **kwargs: Any) -> FitResult:
    """y = A x^-alpha (E fixed at 0). kwargs as fit_law (x_names=('tokens',), y_name=..., bootstrap=...)."""
    return fit_law(x, y, "power", **kwargs)


def fit_saturating(x: Any, y: Any, **kwargs: Any) -> FitResult:
    """y = E + A x^-alpha."""
    return fit_law(x, y, "saturating", **kwargs)


def fit_chinchilla(N: Any, D: Any, y: Any, **kwargs: Any) -> FitResult:
    """L(N, D) = E + A N^-alpha + B D^-beta."""
    kwargs.setdefault("x_names", ("N", "D"))
    return fit_law(np.column_stack([np.ravel(N), np.ravel(D)]), y, "chinchilla", **kwargs)


# ------------------------------------------------------------------------------------- compute-optimal N, D


def _optimal_allocation(
    natural: dict[str, np.ndarray], C: float, flops_per_token: FlopsPerToken | None, N_centre: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N*, D*, L*) per row of the natural-parameter arrays, for one compute budget C."""
    E, A, B, alpha, beta = (natural[k] for k in ("E", "A", "B", "alpha", "beta"))
    if flops_per_token is None:
        d = derived_quantities(FORMS["chinchilla"], natural)
        N = d["G"] * (C / 6) ** d["a"]
        D = (C / 6) ** d["b"] / d["G"]
    else:
        # no closed form: minimise L(N, C / fpt(N)) on a log-N grid (+-4 decades, 0.005-decade spacing)
        # around the 6ND optimum, then refine the argmin with a parabola through its neighbours
        logN = np.log(N_centre) + np.linspace(-4, 4, 1601) * np.log(10)
        Ng = np.exp(logN)
        Dg = C / np.asarray(flops_per_token(Ng), float)
        with np.errstate(all="ignore"):
            L = (
                E[:, None]
                + A[:, None] * Ng[None, :] ** -alpha[:, None]
                + B[:, None] * Dg[None, :] ** -beta[:, None]
            )
        L = np.where(np.isfinite(L), L, np.inf)
        i = np.clip(L.argmin(axis=1), 1, logN.size - 2)
        rows = np.arange(L.shape[0])
        l0, l1, l2 = L[rows, i - 1], L[rows, i], L[rows, i + 1]
        denom = l0 - 2 * l1 + l2
        with np.errstate(all="ignore"):
            shift = np.where(denom > 0, 0.5 * (l0 - l2) / denom, 0.0)
        logN_opt = logN[i] + np.clip(shift, -1, 1) * (logN[1] - logN[0])
        N = np.exp(logN_opt)
        D = C / np.asarray(flops_per_token(N), float)
    with np.errstate(all="ignore"):
        L_opt = E + A * N**-alpha + B * D**-beta
    return N, D, L_opt


def _optimal_allocation_law(
    law: Law, theta: np.ndarray, C: float, flops_per_token: FlopsPerToken | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N*, D*, L*) per row of (B, p) natural log-parameters of any law over N, D, C = 6ND, M = D/N: L is
    minimised over a log-N grid (+-6 decades around sqrt(C/6), 0.005-decade spacing, D = C / fpt(N)) and the
    argmin refined with a parabola through its neighbours."""
    fpt = flops_per_token or (lambda n: 6.0 * n)
    logN = 0.5 * np.log(C / 6) + np.linspace(-6, 6, 2401) * np.log(10)
    Ng = np.exp(logN)
    Dg = C / np.asarray(fpt(Ng), float)
    ok = np.isfinite(theta).all(axis=1)
    L = np.full((theta.shape[0], logN.size), np.inf)
    if ok.any():
        with np.errstate(all="ignore"):
            L[ok] = np.exp(law.log_predict(theta[ok], np.log(grid_design(law, Ng, Dg))))
    L = np.where(np.isfinite(L), L, np.inf)
    i = np.clip(L.argmin(axis=1), 1, logN.size - 2)
    rows = np.arange(L.shape[0])
    l0, l1, l2 = L[rows, i - 1], L[rows, i], L[rows, i + 1]
    with np.errstate(all="ignore"):
        denom = l0 - 2 * l1 + l2
        shift = np.where(denom > 0, 0.5 * (l0 - l2) / denom, 0.0)
    N = np.exp(logN[i] + np.clip(shift, -1, 1) * (logN[1] - logN[0]))
    D = C / np.asarray(fpt(N), float)
    with np.errstate(all="ignore"):
        L_opt = np.exp(law.log_predict_rows(theta, np.log(grid_design(law, N, D))))
    bad = ~ok | ~np.isfinite(l1)
    return np.where(bad, np.nan, N), np.where(bad, np.nan, D), np.where(bad, np.nan, L_opt)


def compute_optimal(
    fit: FitResult,
    budgets: Sequence[float],
    flops_per_token: FlopsPerToken | None = None,
    level: float | None = None,
) -> list[dict[str, float]]:
    """Compute-optimal N*, D* and loss at each budget C from a fit of a law over N and D (or C = 6ND and
    M = D/N), with bootstrap intervals. C = 6 N D unless `flops_per_token(N)` is given (then
    C = flops_per_token(N) * D). Chinchilla uses its closed form; other laws a numerical search."""
    law = fit.law
    if not set(law.variables) <= set(GRID_VARIABLES):
        raise FitError(
            f"compute-optimal allocation needs a law over {', '.join(GRID_VARIABLES)}, not {fit.form} "
            f"(variables {', '.join(law.variables)})"
        )
    level = level or fit.level
    rows = []
    for C in budgets:
        if fit.form == "chinchilla":
            point = {k: np.array([v.value]) for k, v in fit.params.items()}
            draws = law.to_natural(fit.theta_draws)
            N0, _, _ = _optimal_allocation(point, C, None, 1.0)
            N, D, L = _optimal_allocation(point, C, flops_per_token, float(N0[0]))
            Nb, Db, Lb = _optimal_allocation(draws, C, flops_per_token, float(N0[0]))
        else:
            N, D, L = _optimal_allocation_law(law, fit.theta[None, :], C, flops_per_token)
            Nb, Db, Lb = _optimal_allocation_law(law, fit.theta_draws, C, flops_per_token)
        row: dict[str, float] = {"C": float(C)}
        for name, value, samples in (("N_opt", N, Nb), ("D_opt", D, Db), ("loss_opt", L, Lb)):
            lo, hi = percentile_interval(samples, level)
            row.update({name: float(value[0]), f"{name}_lo": lo, f"{name}_hi": hi})
        rows.append(row)
    return rows
