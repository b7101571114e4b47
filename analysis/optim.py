"""A batched L-BFGS: many independent small minimisations advanced together in numpy.

Why: a bootstrap is 1000 fits of the same 2-5 parameter law, and a multi-start is hundreds more. Each fit is
tiny, so one scipy call per fit is dominated by Python overhead. Here every problem keeps its own L-BFGS
memory and step length, while the objective is evaluated for all of them in one vectorised call; problems
drop out of the working set as they converge, so the cost follows the slowest few only near the end.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# fun(theta[rows], rows) -> (f[rows], grad[rows]); `rows` lets the objective pick per-problem data (weights).
BatchedObjective = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class BatchedResult:
    x: np.ndarray  # (B, p) final parameters
    fun: np.ndarray  # (B,) final objective values
    n_iter: np.ndarray  # (B,) iterations each problem ran
    converged: np.ndarray  # (B,) met a tolerance (False: hit max_iter or the line search failed)


def _two_loop(
    g: np.ndarray, S: np.ndarray, Y: np.ndarray, rho: np.ndarray, order: list[int], gamma: np.ndarray
):
    """L-BFGS direction -H g for every row; slots with rho == 0 (rejected/reset pairs) contribute nothing."""
    q = g.copy()
    alphas = []
    for k in order:  # newest first
        a = rho[:, k] * np.einsum("bp,bp->b", S[:, k], q)
        q -= a[:, None] * Y[:, k]
        alphas.append(a)
    r = gamma[:, None] * q
    for k, a in zip(reversed(order), reversed(alphas), strict=True):
        b = rho[:, k] * np.einsum("bp,bp->b", Y[:, k], r)
        r += (a - b)[:, None] * S[:, k]
    return -r


def minimize_batched(
    fun: BatchedObjective,
    x0: np.ndarray,
    *,
    max_iter: int = 400,
    memory: int = 10,
    gtol: float = 1e-9,
    ftol: float = 1e-13,
    max_backtracks: int = 40,
    c1: float = 1e-4,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> BatchedResult:
    """Minimise B independent problems from x0 (B, p). A problem stops when its max |gradient| < gtol, its
    relative objective decrease over an iteration is < ftol, or no Armijo step is found (a kink of a
    non-smooth objective at working precision).

    `bounds` (lower (p,), upper (p,)) makes it a projected L-BFGS: trial points are clipped into the box, a
    variable on its bound with the gradient pushing outward is held there (its direction and gradient
    components count as zero). Without bounds the iteration is the plain one, unchanged."""
    x = np.array(x0, dtype=float, copy=True)
    B, p = x.shape
    lo, hi = bounds if bounds is not None else (None, None)
    if bounds is not None:
        x = np.clip(x, lo, hi)
    all_rows = np.arange(B)
    f, g = fun(x, all_rows)

    def held(xr: np.ndarray, gr: np.ndarray) -> np.ndarray:
        """Variables on a bound whose gradient pushes them out of the box (all False without bounds)."""
        if bounds is None:
            return np.zeros(gr.shape, dtype=bool)
        return ((xr <= lo) & (gr > 0)) | ((xr >= hi) & (gr < 0))

    def pgrad(xr: np.ndarray, gr: np.ndarray) -> np.ndarray:
        return gr if bounds is None else np.where(held(xr, gr), 0.0, gr)

    S = np.zeros((B, memory, p))
    Y = np.zeros((B, memory, p))
    rho = np.zeros((B, memory))
    gnorm = np.linalg.norm(g, axis=1)
    gamma = np.minimum(1.0, 0.1 / np.maximum(gnorm, 1e-300))  # first step: at most 0.1 in parameter space
    n_iter = np.zeros(B, dtype=int)
    converged = np.abs(pgrad(x, g)).max(axis=1) < gtol
    active = ~converged & np.isfinite(f)

    for it in range(max_iter):
        rows = np.flatnonzero(active)
        if rows.size == 0:
            break
        order = [(it - 1 - j) % memory for j in range(min(it, memory))]
        gr = g[rows]
        steepest = ~rho[rows].any(axis=1)  # no usable memory: the direction is (scaled) steepest descent
        d = _two_loop(gr, S[rows], Y[rows], rho[rows], order, gamma[rows])
        if bounds is not None:
            frozen = held(x[rows], gr)
            d[frozen] = 0.0
            gr = np.where(frozen, 0.0, gr)
        gd = np.einsum("bp,bp->b", gr, d)
        not_descent = ~(gd < 0)
        if not_descent.any():  # stale curvature: restart those rows from steepest descent
            bad = rows[not_descent]
            rho[bad] = 0.0
            gamma[bad] = np.minimum(1.0, 0.1 / np.maximum(gnorm[bad], 1e-300))
            steepest[not_descent] = True
            d[not_descent] = -gamma[bad, None] * gr[not_descent]
            gd[not_descent] = np.einsum("bp,bp->b", gr[not_descent], d[not_descent])

        # backtracking Armijo line search, all rows at once; unresolved rows are retried with a shorter step
        step = np.ones(rows.size)
        f_new = np.full(rows.size, np.nan)
        g_new = np.zeros_like(gr)
        pending = np.arange(rows.size)
        for _ in range(max_backtracks):
            trial = x[rows[pending]] + step[pending, None] * d[pending]
            decrease = step[pending] * gd[pending]
            if bounds is not None:  # projected step: Armijo on the displacement actually taken
                trial = np.clip(trial, lo, hi)
                moved_by = trial - x[rows[pending]]
                decrease = np.minimum(np.einsum("bp,bp->b", gr[pending], moved_by), 0.0)
            ft, gt = fun(trial, rows[pending])
            ok = np.isfinite(ft) & (ft <= f[rows[pending]] + c1 * decrease)
            f_new[pending[ok]] = ft[ok]
            g_new[pending[ok]] = gt[ok]
            pending = pending[~ok]
            if pending.size == 0:
                break
            step[pending] *= 0.5
        failed = np.zeros(rows.size, dtype=bool)
        failed[pending] = True
        moved = rows[~failed]

        # curvature pair into this iteration's slot (rho = 0 marks an unusable pair)
        slot = it % memory
        s = step[~failed, None] * d[~failed]
        if bounds is not None:
            s = np.clip(x[moved] + s, lo, hi) - x[moved]
        yv = g_new[~failed] - g[moved]
        sy = np.einsum("bp,bp->b", s, yv)
        yy = np.einsum("bp,bp->b", yv, yv)
        good = sy > 1e-12 * np.sqrt(np.einsum("bp,bp->b", s, s) * yy)
        S[moved, slot] = s
        Y[moved, slot] = yv
        rho[moved, slot] = np.where(good, 1.0 / np.where(good, sy, 1.0), 0.0)
        rho[rows[failed], slot] = 0.0
        gamma[moved[good]] = sy[good] / yy[good]

        f_old = f[moved]
        x[moved] += s
        f[moved] = f_new[~failed]
        g[moved] = g_new[~failed]
        gnorm[moved] = np.linalg.norm(g[moved], axis=1)
        n_iter[rows] += 1

        small_grad = np.abs(pgrad(x[moved], g[moved])).max(axis=1) < gtol
        small_change = (f_old - f[moved]) <= ftol * np.maximum(np.abs(f_old), 1e-300)
        done = small_grad | small_change
        converged[moved[done]] = True
        active[moved[done]] = False
        # A failed line search along a quasi-Newton direction retries once from steepest descent (memory
        # dropped above); failing along steepest descent means no descent step exists at working precision.
        stuck = rows[failed & steepest]
        converged[stuck] = True
        active[stuck] = False
        retry = rows[failed & ~steepest]
        rho[retry] = 0.0
        gamma[retry] = np.minimum(1.0, 0.1 / np.maximum(gnorm[retry], 1e-300))

    return BatchedResult(x=x, fun=f, n_iter=n_iter, converged=converged)
