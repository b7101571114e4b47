"""Compute-optimal allocation from isoFLOP profiles (Hoffmann et al. 2022, approach 2).

Per budget C: a parabola of loss against log N through that budget's trials; its vertex is N*(C), and
D*(C) = C / (6 N*) (or C / flops_per_token(N*)). Power laws N* = k_N C^a and D* = k_D C^b are then fitted
through the vertices by least squares in log-log space. The bootstrap resamples trials within each budget
(so every budget keeps its trial count), refits every parabola and both power laws; all resamples are solved
at once as batched weighted least squares.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.errors import FitError
from analysis.fit import (
    DEFAULT_BOOTSTRAP,
    DEFAULT_LEVEL,
    FlopsPerToken,
    ParamEstimate,
    Seed,
    bootstrap_weights,
    percentile_interval,
    spawn_seeds,
)


@dataclass
class IsoFlopResult:
    minima: (
        pd.DataFrame
    )  # per usable budget: C, N_opt(+_lo/_hi), D_opt(...), loss_opt(...), n_points, in_range
    skipped: dict[float, str]  # budget -> why it has no minimum
    exponents: dict[str, ParamEstimate]  # a, b (N* ∝ C^a, D* ∝ C^b) and k_N, k_D
    parabolas: dict[float, tuple[float, float, float, float]] = field(repr=False)  # C -> (c0, c1, c2, centre)
    level: float = DEFAULT_LEVEL
    n_boot: int = 0


def _parabola_vertices(
    u: np.ndarray, y: np.ndarray, W: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted LS of y = c0 + c1 u + c2 u^2 for every weight row (B, n): (coefs (B, 3), u*, y*), NaN where
    the weights keep < 3 distinct u or the parabola is not convex (no interior minimum)."""
    X = np.column_stack([np.ones_like(u), u, u * u])
    XtWX = np.einsum("ni,bn,nj->bij", X, W, X)
    XtWy = np.einsum("ni,bn,n->bi", X, W, y)
    distinct = np.array([np.unique(u[row > 0]).size for row in W])
    ok = distinct >= 3
    coefs = np.full((W.shape[0], 3), np.nan)
    if ok.any():
        coefs[ok] = np.linalg.solve(XtWX[ok], XtWy[ok][..., None])[..., 0]
    c0, c1, c2 = coefs.T
    with np.errstate(all="ignore"):
        convex = c2 > 0
        u_star = np.where(convex, -c1 / (2 * c2), np.nan)
        y_star = np.where(convex, c0 - c1 * c1 / (4 * c2), np.nan)
    return coefs, u_star, y_star


def _loglog_fit(logC: np.ndarray, logv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of (B, m) log values with NaN gaps: OLS slope and intercept against logC (NaN if < 2)."""
    mask = np.isfinite(logv)
    cnt = mask.sum(axis=1)
    x = np.where(mask, logC[None, :], 0.0)
    v = np.where(mask, logv, 0.0)
    with np.errstate(all="ignore"):
        xm = x.sum(axis=1) / cnt
        vm = v.sum(axis=1) / cnt
        dx = np.where(mask, x - xm[:, None], 0.0)
        slope = (dx * (v - vm[:, None])).sum(axis=1) / (dx * dx).sum(axis=1)
        intercept = vm - slope * xm
    bad = (cnt < 2) | ~np.isfinite(slope)
    return np.where(bad, np.nan, slope), np.where(bad, np.nan, intercept)


def isoflop_allocation(
    N: np.ndarray,
    C: np.ndarray,
    y: np.ndarray,
    *,
    flops_per_token: FlopsPerToken | None = None,
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: Seed = 0,
    level: float = DEFAULT_LEVEL,
) -> IsoFlopResult:
    """N*(C), D*(C) from isoFLOP trials: N (model sizes), C (each trial's budget), y (loss), all (n,).
    Budgets with < 3 distinct N or a concave profile are skipped (listed in `skipped`); FitError when
    fewer than 2 budgets remain."""
    N, C, y = (np.asarray(v, float).ravel() for v in (N, C, y))
    if not (N.size == C.size == y.size):
        raise FitError(f"N, C and y must have the same length, got {N.size}, {C.size}, {y.size}")
    finite = np.isfinite(N) & np.isfinite(C) & np.isfinite(y) & (N > 0) & (C > 0)
    if not finite.all():
        raise FitError(f"{int((~finite).sum())} isoFLOP row(s) have a missing or non-positive N, C or loss")
    fpt = flops_per_token or (lambda n: 6.0 * np.asarray(n, float))
    budgets = np.unique(C)
    skipped: dict[float, str] = {}
    rows, parabolas, boot_logN = [], {}, []
    for c, budget_seed in zip(budgets, spawn_seeds(seed, budgets.size), strict=True):
        sel = np.equal(C, c)
        logN = np.log(N[sel])
        if np.unique(logN).size < 3:
            skipped[float(c)] = f"{np.unique(logN).size} distinct model size(s); a parabola needs 3"
            continue
        centre = float(logN.mean())
        u = logN - centre
        coefs, u_star, y_star = _parabola_vertices(u, y[sel], np.ones((1, u.size)))
        if not np.isfinite(u_star[0]):
            skipped[float(c)] = "loss is not convex in log N here (no interior minimum)"
            continue
        if abs(u_star[0] + centre) > 700:  # exp() overflows: a vertex absurdly far from the sampled sizes
            skipped[float(c)] = f"the loss minimum lies at log N = {u_star[0] + centre:.3g}, outside the data"
            continue
        n = u.size
        _, ub, yb = _parabola_vertices(u, y[sel], bootstrap_weights(n, bootstrap, budget_seed))
        boot_logN.append(ub + centre)
        n_opt = math.exp(u_star[0] + centre)
        row = {"C": float(c), "n_points": int(n), "in_range": bool(u.min() <= u_star[0] <= u.max())}
        samples = {"N_opt": np.exp(ub + centre), "loss_opt": yb}
        row["N_opt"], row["loss_opt"] = n_opt, float(y_star[0])
        row["D_opt"] = float(c / fpt(np.array([n_opt]))[0])
        samples["D_opt"] = c / fpt(samples["N_opt"])
        for name in ("N_opt", "D_opt", "loss_opt"):
            row[f"{name}_lo"], row[f"{name}_hi"] = percentile_interval(samples[name], level)
        rows.append(row)
        parabolas[float(c)] = (*(float(v) for v in coefs[0]), centre)
    if len(rows) < 2:
        reasons = "; ".join(f"C={c:g}: {r}" for c, r in skipped.items())
        raise FitError(
            f"isoFLOP analysis needs >= 2 budgets with a loss minimum, got {len(rows)} ({reasons})"
        )

    minima = pd.DataFrame(rows)
    logC = np.log(minima["C"].to_numpy())
    logN_hat = np.log(minima["N_opt"].to_numpy())[None, :]
    logD_hat = np.log(minima["D_opt"].to_numpy())[None, :]
    logN_b = np.column_stack(boot_logN) if bootstrap else np.zeros((0, logC.size))
    logD_b = np.log(minima["C"].to_numpy()[None, :] / fpt(np.exp(logN_b))) if bootstrap else logN_b
    exponents: dict[str, ParamEstimate] = {}
    for slope_name, coef_name, point, draws in (
        ("a", "k_N", logN_hat, logN_b),
        ("b", "k_D", logD_hat, logD_b),
    ):
        s, i = _loglog_fit(logC, point)
        sb, ib = _loglog_fit(logC, draws)
        exponents[slope_name] = ParamEstimate(float(s[0]), *percentile_interval(sb, level))
        exponents[coef_name] = ParamEstimate(float(np.exp(i[0])), *percentile_interval(np.exp(ib), level))
    broken = [k for k, e in exponents.items() if not math.isfinite(e.value)]
    if broken:
        raise FitError(
            f"isoFLOP allocation is not identifiable from these minima ({', '.join(broken)} came out "
            f"non-finite; N_opt per budget: {', '.join(f'{v:.3g}' for v in minima['N_opt'])})"
        )
    return IsoFlopResult(minima, skipped, exponents, parabolas, level, bootstrap)


def flops_per_token_from_trials(N: np.ndarray, flops: np.ndarray, tokens: np.ndarray) -> FlopsPerToken | None:
    """A power law flops/token = k N^s through a family's own trials (exact for the EBT, whose cost per
    token is far from 6N); None when the trials hold < 2 distinct sizes (callers then use C = 6ND)."""
    N, fpt = np.asarray(N, float), np.asarray(flops, float) / np.asarray(tokens, float)
    ok = np.isfinite(N) & np.isfinite(fpt) & (N > 0) & (fpt > 0)
    if np.unique(N[ok]).size < 2:
        return None
    slope, intercept = np.polyfit(np.log(N[ok]), np.log(fpt[ok]), 1)
    return lambda n: np.exp(intercept + slope * np.log(np.asarray(n, float)))
