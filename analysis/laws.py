"""The scaling-law forms and their Huber objective in log space (value and analytic gradient, batched).

Every form is a sum of power terms plus an optional constant, fitted as Hoffmann et al. (2022) do:

    log y_hat = LSE(a_1 - alpha_1 log x_1, ..., a_K - alpha_K log x_K [, e])

so A_k = exp(a_k) and E = exp(e) stay positive without bounds, and the objective is the Huber loss of
log y_hat - log y. Internally each log x_k is centred on its mean (a_k is then the log of term k at the
geometric-mean design point), which decorrelates a_k from alpha_k and keeps L-BFGS well conditioned; the
natural parameters are recovered as a_k = a_centred_k + alpha_k * mean(log x_k).

Parameter vector layout (internal and natural-log alike): [a_1..a_K, (e), alpha_1..alpha_K].
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

# Fitting conventions shared by the fits and the CLI (kept here, numpy-only, so the CLI imports fast).
DEFAULT_HUBER_DELTA = 1e-3  # Hoffmann et al.: residuals in log loss beyond 1e-3 count linearly
DEFAULT_BOOTSTRAP = 1000
DEFAULT_LEVEL = 0.95


@dataclass(frozen=True)
class Law:
    form: str
    variables: tuple[str, ...]  # one power term per variable: ("x",) or ("N", "D")
    coef_names: tuple[str, ...]
    exponent_names: tuple[str, ...]
    constant: bool  # the irreducible term E

    @property
    def n_terms(self) -> int:
        return len(self.variables)

    @property
    def n_params(self) -> int:
        return 2 * self.n_terms + int(self.constant)

    @property
    def param_names(self) -> tuple[str, ...]:
        """Natural parameters in display order: E first (when present), then coefficients, then exponents."""
        return (("E",) if self.constant else ()) + self.coef_names + self.exponent_names

    def split(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(a (B, K), e (B,) or None, alpha (B, K)) views of a (B, p) parameter array."""
        K = self.n_terms
        a = theta[:, :K]
        e = theta[:, K] if self.constant else None
        alpha = theta[:, K + int(self.constant) :]
        return a, e, alpha

    def join(self, a: np.ndarray, e: np.ndarray | None, alpha: np.ndarray) -> np.ndarray:
        parts = [a] + ([e[:, None]] if e is not None else []) + [alpha]
        return np.concatenate(parts, axis=1)

    def recentre(self, theta: np.ndarray, shift: np.ndarray) -> np.ndarray:
        """Re-express parameters for log x -> log x - shift (shift (K,)): a_k -> a_k - alpha_k * shift_k."""
        a, e, alpha = self.split(theta)
        return self.join(a - alpha * shift, e, alpha)

    def to_natural(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Uncentred log-parameters (B, p) -> {'E', 'A', 'alpha', ...}: arrays of shape (B,)."""
        a, e, alpha = self.split(theta)
        out: dict[str, np.ndarray] = {}
        if e is not None:
            out["E"] = np.exp(e)
        for k in range(self.n_terms):
            out[self.coef_names[k]] = np.exp(a[:, k])
            out[self.exponent_names[k]] = alpha[:, k]
        return {name: out[name] for name in self.param_names}

    def from_natural(self, params: dict[str, np.ndarray]) -> np.ndarray:
        a = np.column_stack([np.log(np.asarray(params[c], float)) for c in self.coef_names])
        alpha = np.column_stack([np.asarray(params[x], float) for x in self.exponent_names])
        e = np.log(np.asarray(params["E"], float)).ravel() if self.constant else None
        return self.join(a, e, alpha)

    def _exp_terms(self, theta: np.ndarray, lx: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """exp of each power term, (B, K, n), and exp(e), (B,) or None; lx is (n, K) log x.

        No max-shift: log y is O(1), so a term over/underflows only at absurd parameters, where the
        resulting inf/NaN objective makes the line search reject the step."""
        a, e, alpha = self.split(theta)
        with np.errstate(over="ignore", under="ignore"):
            z = np.exp(a[:, :, None] - alpha[:, :, None] * lx.T[None, :, :])
            return z, (np.exp(e) if e is not None else None)

    def log_predict(self, theta: np.ndarray, lx: np.ndarray) -> np.ndarray:
        """(B, n) log y_hat = log-sum-exp of the terms."""
        z, ee = self._exp_terms(theta, lx)
        total = z.sum(axis=1) + (ee[:, None] if ee is not None else 0.0)
        with np.errstate(divide="ignore"):
            return np.log(total)

    def objective(
        self, theta: np.ndarray, lx: np.ndarray, ly: np.ndarray, w: np.ndarray, delta: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Weighted mean Huber loss of the log residuals divided by delta, and its gradient: (B,), (B, p).

        w is (B, n) or (1, n) (bootstrap counts or ones). Dividing by delta and by sum(w) makes the value
        read as a mean absolute log residual and keeps gradients O(1) whatever delta and n are, so the
        optimiser's tolerances mean the same everywhere; the minimiser is that of Hoffmann's sum of Huber
        losses. Non-finite predictions give f = inf (the line search then backs off)."""
        z, ee = self._exp_terms(theta, lx)
        total = z.sum(axis=1) + (ee[:, None] if ee is not None else 0.0)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            r = np.log(total) - ly[None, :]
            absr = np.abs(r)
            small = np.minimum(absr, delta)
            wsum = w.sum(axis=1)
            f = (w * (small * (absr - 0.5 * small))).sum(axis=1) / (delta * wsum)
            q = w * np.clip(r / delta, -1.0, 1.0) / (wsum[:, None] * total)  # dF/d(term), up to the term
            P = z * q[:, None, :]  # (B, K, n)
            grad_a = P.sum(axis=2)
            grad_alpha = -np.einsum("bkn,nk->bk", P, lx)
            grad_e = ee * q.sum(axis=1) if ee is not None else None
        f = np.where(np.isfinite(f), f, np.inf)
        return f, self.join(grad_a, grad_e, grad_alpha)

    def start_grid(self, ly: np.ndarray) -> np.ndarray:
        """Multi-start grid in centred coordinates, scaled to the data: at the centre point each term (and
        E) starts at a fraction of the typical y, exponents over the range seen in LM scaling (0.05-2).
        Power-law starts are few because that problem is nearly convex."""
        level = float(np.median(ly))
        if self.constant:
            exponents = (0.1, 0.4, 1.2)
            coef_fracs = (0.05, 0.3, 1.0)
            e_fracs = (0.2, 0.6, 0.9)
        else:
            exponents = (0.05, 0.3, 1.0, 2.0)
            coef_fracs = (0.5, 1.0, 2.0)
            e_fracs = ()
        a_vals = [level + np.log(c) for c in coef_fracs]
        e_vals = [level + np.log(c) for c in e_fracs]
        rows = []
        for combo in itertools.product(
            *([a_vals] * self.n_terms), *([e_vals] if self.constant else []), *([exponents] * self.n_terms)
        ):
            rows.append(combo)
        return np.array(rows, dtype=float)


FORMS: dict[str, Law] = {
    "power": Law("power", ("x",), ("A",), ("alpha",), constant=False),
    "saturating": Law("saturating", ("x",), ("A",), ("alpha",), constant=True),
    "chinchilla": Law("chinchilla", ("N", "D"), ("A", "B"), ("alpha", "beta"), constant=True),
}
