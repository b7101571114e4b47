"""Scaling laws as data, and their Huber objective in log space (value and analytic gradient, batched).

A law is a sum of power terms plus an optional irreducible constant:

    y = E + sum_k A_k * prod_j x_j ** p_kj,    p_kj = sum of sign * (an exponent parameter or a number)

Why as data: a skeptic's law ties exponents (one exponent for N and D), fixes what is known (E from a
larger study) and bounds the rest, and the over-training law of Gadre et al. (2024),
E + (A M^eta + B M^-eta) C^-eta, is not a sum of independent power terms: its two terms use the same eta
with opposite signs on M. A named exponent used in several places is therefore one parameter, each use with
its sign; a number in its place is a fixed exponent. Every such law has the same log-sum-exp objective, so
one fitting and bootstrap machinery (analysis.fit) serves all of them.

Fitted as Hoffmann et al. (2022) do: log y_hat = LSE(a_1 + sum_j p_1j log x_j, ..., [e]) with A_k = exp(a_k)
and E = exp(e) positive without bounds, and the Huber loss of log y_hat - log y. Internally each log x_j is
centred on its mean (a_k is then the log of term k at the geometric-mean design point), which decorrelates
a_k from the exponents and keeps L-BFGS well conditioned; a_k = a_centred_k - sum_j p_kj mean(log x_j).

Parameter vector layout (internal and natural-log alike): [a_1..a_K, (e, when E is free), free exponents in
order of first appearance]. Fixed values (E or an exponent) are not parameters. Bounds, when a law states
them, apply to E and exponents (coefficients are positive by construction and are re-expressed by the
centring, so a box on them would not stay a box).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from analysis.errors import FitError

# Fitting conventions shared by the fits and the CLI (kept here, numpy-only, so the CLI imports fast).
DEFAULT_HUBER_DELTA = 1e-3  # Hoffmann et al.: residuals in log loss beyond 1e-3 count linearly
DEFAULT_BOOTSTRAP = 1000
DEFAULT_LEVEL = 0.95

Exponent = str | float  # a parameter name (shared wherever it is used) or a fixed number


@dataclass(frozen=True)
class Power:
    """One factor variable ** (sign * exponent)."""

    variable: str
    exponent: Exponent
    sign: float = -1.0


@dataclass(frozen=True)
class Term:
    """coef * prod(powers); the coefficient is always a free parameter (it sets the term's scale)."""

    coef: str
    powers: tuple[Power, ...]


@dataclass(frozen=True)
class Law:
    """A scaling law: its terms, the constant (a parameter name, a fixed value or None), the parameters
    held at a value, and bounds (natural scale) on E and exponents. See the module docstring."""

    name: str
    terms: tuple[Term, ...]
    constant: str | float | None = "E"
    fixed: tuple[tuple[str, float], ...] = ()
    bounds: tuple[tuple[str, tuple[float, float]], ...] = ()
    _c: _Compiled = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_c", _compile(self))

    # ---- structure
    @property
    def variables(self) -> tuple[str, ...]:
        return self._c.variables

    @property
    def n_vars(self) -> int:
        return len(self._c.variables)

    @property
    def n_terms(self) -> int:
        return len(self.terms)

    @property
    def coef_names(self) -> tuple[str, ...]:
        return tuple(t.coef for t in self.terms)

    @property
    def exponent_names(self) -> tuple[str, ...]:
        """Free exponents, in order of first appearance."""
        return self._c.exponents

    @property
    def constant_name(self) -> str | None:
        """The free constant's name (E), or None when the law has none or holds it fixed."""
        return self._c.constant_name

    @property
    def constant_value(self) -> float:
        """The fixed constant (0 when the law has none); NaN when the constant is fitted."""
        return self._c.constant_value

    @property
    def n_params(self) -> int:
        return self.n_terms + int(self.constant_name is not None) + len(self.exponent_names)

    @property
    def param_names(self) -> tuple[str, ...]:
        """Free parameters in display order: E first (when fitted), then coefficients, then exponents."""
        e = (self.constant_name,) if self.constant_name else ()
        return e + self.coef_names + self.exponent_names

    @property
    def rate(self) -> str:
        """The exponent a scaling-rate comparison reads by default: the first free one."""
        if not self.exponent_names:
            raise FitError(f"the law {self.name} has no free exponent to compare")
        return self.exponent_names[0]

    @property
    def fixed_values(self) -> dict[str, float]:
        return dict(self.fixed)

    @property
    def bound_values(self) -> dict[str, tuple[float, float]]:
        return dict(self.bounds)

    def with_fixed(self, values: Mapping[str, float]) -> Law:
        """The same law with parameters held at values (E or exponents)."""
        fixed = {**self.fixed_values, **{k: float(v) for k, v in values.items()}}
        label = ", ".join(f"{k}={v:g}" for k, v in values.items())
        return replace(self, name=f"{self.name} with {label}", fixed=tuple(fixed.items()))

    def with_bounds(self, values: Mapping[str, tuple[float, float]]) -> Law:
        bounds = {**self.bound_values, **{k: (float(lo), float(hi)) for k, (lo, hi) in values.items()}}
        return replace(self, bounds=tuple(bounds.items()))

    def describe(self) -> str:
        """The law as text, with fixed values substituted (e.g. 'E + A*N^-alpha + B*D^-alpha')."""
        fixed = self.fixed_values
        parts = []
        const = self.constant
        if isinstance(const, str) and const in fixed:
            const = fixed[const]
        if const is not None and not (isinstance(const, float) and const == 0):
            parts.append(const if isinstance(const, str) else f"{const:g}")
        for t in self.terms:
            factors = [t.coef]
            for pw in t.powers:
                e = fixed.get(pw.exponent, pw.exponent) if isinstance(pw.exponent, str) else pw.exponent
                if isinstance(e, str):
                    factors.append(f"{pw.variable}^{'-' if pw.sign < 0 else ''}{e}")
                else:
                    factors.append(f"{pw.variable}^{pw.sign * e:g}")
            parts.append("*".join(factors))
        return " + ".join(parts)

    def params_of(self, name: str) -> tuple[str, ...]:
        """The variables a parameter acts on (E: all of them): where points are needed to pin it down."""
        if name == self.constant_name:
            return self.variables
        used = []
        for t in self.terms:
            if name == t.coef:
                used += [p.variable for p in t.powers]
            used += [p.variable for p in t.powers if p.exponent == name]
        return tuple(v for v in self.variables if v in used)

    # ---- parameter vectors
    def split(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """(a (B, K), e (B,) or None, exponents (B, M)) views of a (B, p) parameter array."""
        K = self.n_terms
        has_e = self.constant_name is not None
        return theta[:, :K], (theta[:, K] if has_e else None), theta[:, K + int(has_e) :]

    def join(self, a: np.ndarray, e: np.ndarray | None, alpha: np.ndarray) -> np.ndarray:
        parts = [a] + ([e[:, None]] if e is not None else []) + [alpha]
        return np.concatenate(parts, axis=1)

    def slopes(self, alpha: np.ndarray) -> np.ndarray:
        """(B, K, J) power of variable j in term k: G @ exponents + the fixed part."""
        c = self._c
        return np.einsum("kjm,bm->bkj", c.G, alpha) + c.H[None, :, :]

    def recentre(self, theta: np.ndarray, shift: np.ndarray) -> np.ndarray:
        """Re-express parameters for log x -> log x - shift (shift (J,)): a_k -> a_k + sum_j p_kj shift_j."""
        a, e, alpha = self.split(theta)
        return self.join(a + np.einsum("bkj,j->bk", self.slopes(alpha), shift), e, alpha)

    def to_natural(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Uncentred log-parameters (B, p) -> {'E', 'A', 'alpha', ...}: arrays of shape (B,)."""
        a, e, alpha = self.split(theta)
        out: dict[str, np.ndarray] = {}
        if e is not None:
            out[self.constant_name] = np.exp(e)
        for k, name in enumerate(self.coef_names):
            out[name] = np.exp(a[:, k])
        for m, name in enumerate(self.exponent_names):
            out[name] = alpha[:, m]
        return {name: out[name] for name in self.param_names}

    # ---- evaluation
    def _exp_terms(self, theta: np.ndarray, lx: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, float]:
        """exp of each power term, (B, K, n), exp(e) ((B,) or None) and the fixed constant; lx is (n, J).

        No max-shift: log y is O(1), so a term over/underflows only at absurd parameters, where the
        resulting inf/NaN objective makes the line search reject the step."""
        a, e, alpha = self.split(theta)
        S = self.slopes(alpha)
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            # laid out (B, n, K) and viewed as (B, K, n), as the terms always were: sums over points then
            # run in the same order, so the historical forms keep their numbers bit for bit
            powers = np.einsum("bkj,nj->bnk", S, lx, order="C").transpose(0, 2, 1)
            z = np.exp(a[:, :, None] + powers)
            return z, (np.exp(e) if e is not None else None), self._c.fixed_constant

    def log_predict(self, theta: np.ndarray, lx: np.ndarray) -> np.ndarray:
        """(B, n) log y_hat = log-sum-exp of the terms."""
        z, ee, c0 = self._exp_terms(theta, lx)
        total = z.sum(axis=1) + (ee[:, None] if ee is not None else 0.0) + c0
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(total)

    def log_predict_rows(self, theta: np.ndarray, lx: np.ndarray) -> np.ndarray:
        """(B,) log y_hat of parameter row b at its own point lx[b] ((B, J)): one point per parameter set."""
        a, e, alpha = self.split(theta)
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            z = np.exp(a + np.einsum("bkj,bj->bk", self.slopes(alpha), lx))
            total = z.sum(axis=1) + (np.exp(e) if e is not None else 0.0) + self._c.fixed_constant
            return np.log(total)

    def objective(
        self, theta: np.ndarray, lx: np.ndarray, ly: np.ndarray, w: np.ndarray, delta: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Weighted mean Huber loss of the log residuals divided by delta, and its gradient: (B,), (B, p).

        w is (B, n) or (1, n) (bootstrap counts or ones). Dividing by delta and by sum(w) makes the value
        read as a mean absolute log residual and keeps gradients O(1) whatever delta and n are, so the
        optimiser's tolerances mean the same everywhere; the minimiser is that of Hoffmann's sum of Huber
        losses. Non-finite predictions give f = inf (the line search then backs off)."""
        z, ee, c0 = self._exp_terms(theta, lx)
        total = z.sum(axis=1) + (ee[:, None] if ee is not None else 0.0) + c0
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            r = np.log(total) - ly[None, :]
            absr = np.abs(r)
            small = np.minimum(absr, delta)
            wsum = w.sum(axis=1)
            f = (w * (small * (absr - 0.5 * small))).sum(axis=1) / (delta * wsum)
            q = w * np.clip(r / delta, -1.0, 1.0) / (wsum[:, None] * total)  # dF/d(term), up to the term
            P = z * q[:, None, :]  # (B, K, n)
            grad_a = P.sum(axis=2)
            if self._c.diagonal:  # term k = A_k x_k^-alpha_k: the historical arithmetic, bit for bit
                grad_alpha = -np.einsum("bkn,nk->bk", P, lx)
            else:
                Q = np.einsum("bkn,nj->bkj", P, lx)  # d/d(power of variable j in term k)
                grad_alpha = np.einsum("bkj,kjm->bm", Q, self._c.G)
            grad_e = ee * q.sum(axis=1) if ee is not None else None
        f = np.where(np.isfinite(f), f, np.inf)
        return f, self.join(grad_a, grad_e, grad_alpha)

    def internal_bounds(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(lower, upper) of the internal parameter vector, or None when the law states no bounds (the
        optimiser then runs unconstrained, exactly as before bounds existed)."""
        if not self.bounds:
            return None
        lo = np.full(self.n_params, -np.inf)
        hi = np.full(self.n_params, np.inf)
        K, has_e = self.n_terms, self.constant_name is not None
        for name, (b_lo, b_hi) in self.bounds:
            if name == self.constant_name:
                with np.errstate(divide="ignore"):
                    lo[K], hi[K] = np.log(b_lo), np.log(b_hi)
            else:
                m = K + int(has_e) + self.exponent_names.index(name)
                lo[m], hi[m] = b_lo, b_hi
        return lo, hi

    def start_grid(self, ly: np.ndarray) -> np.ndarray:
        """Multi-start grid in centred coordinates, scaled to the data: at the centre point each term (and
        E) starts at a fraction of the typical y, exponents over the range seen in LM scaling (0.05-2).
        Power-law starts are few because that problem is nearly convex."""
        level = float(np.median(ly))
        if self.constant_name is not None:
            exponents = (0.1, 0.4, 1.2)
            coef_fracs = (0.05, 0.3, 1.0)
            e_fracs = (0.2, 0.6, 0.9)
        else:
            exponents = (0.05, 0.3, 1.0, 2.0)
            coef_fracs = (0.5, 1.0, 2.0)
            e_fracs = ()
            if self.constant_value > 0:  # the terms make up what the fixed E leaves
                rest = np.exp(ly) - self.constant_value
                level = float(np.log(np.median(rest[rest > 0]))) if (rest > 0).any() else level
        a_vals = [level + np.log(c) for c in coef_fracs]
        e_vals = [level + np.log(c) for c in e_fracs]
        rows = []
        for combo in itertools.product(
            *([a_vals] * self.n_terms),
            *([e_vals] if self.constant_name is not None else []),
            *([exponents] * len(self.exponent_names)),
        ):
            rows.append(combo)
        grid = np.array(rows, dtype=float)
        bounds = self.internal_bounds()
        if bounds is not None:
            grid = np.unique(np.clip(grid, *_inside(*bounds)), axis=0)
        return grid


def _inside(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds pulled in by a hair, so a start clipped to them is not already on the boundary."""
    width = np.where(np.isfinite(hi - lo), hi - lo, np.inf)
    pad = np.minimum(1e-3 * width, 1e-3)
    return lo + np.where(np.isfinite(lo), pad, 0), hi - np.where(np.isfinite(hi), pad, 0)


# ------------------------------------------------------------------------------------------------ compile


@dataclass(frozen=True)
class _Compiled:
    variables: tuple[str, ...]
    exponents: tuple[str, ...]  # free exponent names
    constant_name: str | None
    constant_value: float  # the fixed constant, NaN when fitted
    fixed_constant: float  # what the objective adds (0.0 when none or fitted)
    G: np.ndarray  # (K, J, M): power of variable j in term k per unit of free exponent m
    H: np.ndarray  # (K, J): the fixed part of that power
    diagonal: bool  # term k is A_k x_k^-alpha_k (power, saturating, chinchilla): G = -identity, H = 0


def _compile(law: Law) -> _Compiled:
    """Check the law's structure and lay out its arrays; FitError saying what is wrong otherwise."""
    if not law.terms:
        raise FitError(f"the law {law.name!r} has no power term")
    fixed = dict(law.fixed)
    variables: list[str] = []
    exponents: list[str] = []
    for t in law.terms:
        if not t.powers:
            raise FitError(f"term {t.coef} of {law.name!r} involves no variable")
        for pw in t.powers:
            if pw.variable not in variables:
                variables.append(pw.variable)
            if isinstance(pw.exponent, str) and pw.exponent not in fixed and pw.exponent not in exponents:
                exponents.append(pw.exponent)
    coefs = [t.coef for t in law.terms]
    if len(set(coefs)) < len(coefs):
        raise FitError(f"{law.name!r}: each term needs a coefficient of its own, got {', '.join(coefs)}")
    const = law.constant
    names = {"a variable": variables, "a coefficient": coefs, "an exponent": exponents}
    if isinstance(const, str):
        names["the constant"] = [const]
    seen: dict[str, str] = {}
    for kind, group in names.items():
        for n in group:
            if n in seen and seen[n] != kind:
                raise FitError(f"{law.name!r}: {n} is used both as {seen[n]} and as {kind}")
            seen[n] = kind
    for n in fixed:
        if n in coefs:
            raise FitError(f"{law.name!r}: coefficient {n} cannot be fixed (it sets its term's scale)")
        if n not in seen and not any(
            isinstance(p.exponent, str) and p.exponent == n for t in law.terms for p in t.powers
        ):
            raise FitError(f"{law.name!r} has no parameter {n} to fix (parameters: {', '.join(seen)})")
        if not math.isfinite(fixed[n]):
            raise FitError(f"{law.name!r}: {n} fixed to {fixed[n]}, not a finite number")
    constant_name: str | None = None
    constant_value = 0.0
    if isinstance(const, str):
        if const in fixed:
            constant_value = fixed[const]
        else:
            constant_name, constant_value = const, math.nan
    elif const is not None:
        constant_value = float(const)
    if not (math.isnan(constant_value) or constant_value >= 0):
        raise FitError(f"{law.name!r}: the constant must be >= 0, got {constant_value:g}")
    K, J, M = len(law.terms), len(variables), len(exponents)
    G, H = np.zeros((K, J, M)), np.zeros((K, J))
    for k, t in enumerate(law.terms):
        for pw in t.powers:
            j = variables.index(pw.variable)
            e = fixed.get(pw.exponent, pw.exponent) if isinstance(pw.exponent, str) else pw.exponent
            if isinstance(e, str):
                G[k, j, exponents.index(e)] += pw.sign
            else:
                H[k, j] += pw.sign * float(e)
    for k, l_ in itertools.combinations(range(K), 2):
        if np.array_equal(G[k], G[l_]) and np.array_equal(H[k], H[l_]):
            raise FitError(
                f"{law.name!r}: terms {law.terms[k].coef} and {law.terms[l_].coef} have the same powers, so "
                "their coefficients cannot be told apart"
            )
    for name, (lo, hi) in law.bounds:
        if name in coefs:
            raise FitError(f"{law.name!r}: bounds apply to E and exponents, not coefficient {name}")
        if name != constant_name and name not in exponents:
            raise FitError(f"{law.name!r} has no free parameter {name} to bound")
        if not lo < hi:
            raise FitError(f"{law.name!r}: bounds of {name} need lo < hi, got {lo:g}, {hi:g}")
        if name == constant_name and lo < 0:
            raise FitError(f"{law.name!r}: {name} is positive, so its lower bound must be >= 0, got {lo:g}")
    fixed_constant = 0.0 if constant_name is not None else constant_value
    diagonal = (
        K == J == M and np.array_equal(G, -np.eye(K)[:, :, None] * np.eye(K)[None, :, :]) and not H.any()
    )
    return _Compiled(
        tuple(variables), tuple(exponents), constant_name, constant_value, fixed_constant, G, H, diagonal
    )


# ------------------------------------------------------------------------------------------------ parsing

MAX_LAW_CHARS = 200
_TOKEN = re.compile(
    r"\s*(?:(\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?)|([A-Za-z_]\w*)|(\*\*|[-+*/^()]))"
)


@dataclass
class _Mono:
    """A product: a number, plain names (coefficients or the constant) and powers (variable, sign, exp)."""

    factor: float = 1.0
    names: list[str] = field(default_factory=list)
    powers: list[tuple[str, float, Exponent]] = field(default_factory=list)

    def times(self, other: _Mono) -> _Mono:
        return _Mono(self.factor * other.factor, self.names + other.names, self.powers + other.powers)


class _Parser:
    """Recursive descent over  sum := prod ('+' prod)* ; prod := unit (('*' | '/') unit)* ;
    unit := NUMBER | NAME ['^' expo] | '(' sum ')' ; expo := [sign] (NAME | NUMBER) | '(' expo ')'.
    Products of sums are expanded, so (A*M^eta + B*M^-eta)*C^-eta becomes two terms. Nothing is evaluated."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if not m:
                raise FitError(f"law {text!r}: cannot read {text[pos:].strip()[:10]!r}")
            num, name, op = m.groups()
            self.tokens.append(
                ("num", num) if num else ("name", name) if name else ("op", "^" if op == "**" else op)
            )
            pos = m.end()
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok != ("op", value)):
            want = f"{value!r}" if value else "more"
            raise FitError(
                f"law {self.text!r}: expected {want} at the end"
                if tok is None
                else f"law {self.text!r}: expected {want}, got {tok[1]!r}"
            )
        self.i += 1
        return tok

    def parse(self) -> list[_Mono]:
        out = self.sum()
        if self.peek() is not None:
            tok = self.peek()
            hint = (
                " (terms are added: a subtracted term cannot be fitted in log space)"
                if tok == ("op", "-")
                else ""
            )
            raise FitError(f"law {self.text!r}: unexpected {tok[1]!r}{hint}")
        return out

    def sum(self) -> list[_Mono]:
        monos = self.prod()
        while self.peek() == ("op", "+"):
            self.take("+")
            monos += self.prod()
        return monos

    def prod(self) -> list[_Mono]:
        monos = self.unit()
        while self.peek() in (("op", "*"), ("op", "/")):
            op = self.take()[1]
            right = self.unit()
            if op == "/":
                if len(right) != 1 or right[0].names:
                    raise FitError(f"law {self.text!r}: divide only by numbers and powers (A/N^alpha)")
                r = right[0]
                right = [_Mono(1.0 / r.factor, [], [(v, -s, e) for v, s, e in r.powers])]
            monos = [a.times(b) for a in monos for b in right]
        return monos

    def unit(self) -> list[_Mono]:
        kind, value = self.take()
        if (kind, value) == ("op", "("):
            inner = self.sum()
            self.take(")")
            if self.peek() == ("op", "^"):
                raise FitError(f"law {self.text!r}: raise variables to powers, not parenthesised sums")
            return inner
        if kind == "num":
            return [_Mono(float(value))]
        if kind == "name":
            if self.peek() == ("op", "^"):
                self.take("^")
                sign, exp = self.expo()
                return [_Mono(1.0, [], [(value, sign, exp)])]
            return [_Mono(1.0, [value])]
        raise FitError(f"law {self.text!r}: unexpected {value!r}")

    def expo(self) -> tuple[float, Exponent]:
        if self.peek() == ("op", "("):
            self.take("(")
            out = self.expo()
            self.take(")")
            return out
        sign = 1.0
        while self.peek() in (("op", "-"), ("op", "+")):
            sign *= -1.0 if self.take()[1] == "-" else 1.0
        kind, value = self.take()
        if kind == "num":
            return 1.0, sign * float(value)
        if kind == "name":
            return sign, value
        raise FitError(f"law {self.text!r}: an exponent is a name or a number, got {value!r}")


def parse_law(text: str, name: str | None = None) -> Law:
    """A law from a short expression: 'E + A*N^-alpha + B*D^-alpha', 'E + (A*M^eta + B*M^-eta)*C^-eta',
    '1.69 + A*C^-alpha' (a number fixes E), 'A/N^0.34' (a number fixes an exponent). Names raised to a power
    are variables, names in exponents are exponents (the same name: one shared exponent), a lone name
    multiplying powers is its term's coefficient, a lone name or number on its own is E. No eval."""
    if not isinstance(text, str) or not text.strip():
        raise FitError("a law needs an expression, e.g. 'E + A*N^-alpha + B*D^-alpha'")
    if len(text) > MAX_LAW_CHARS:
        raise FitError(f"a law expression is at most {MAX_LAW_CHARS} characters, got {len(text)}")
    monos = _Parser(text).parse()
    constant: str | float | None = None
    terms: list[Term] = []
    for m in monos:
        if not m.powers:
            if m.names and (len(m.names) > 1 or m.factor != 1.0):
                raise FitError(f"law {text!r}: the constant is one name or one number, got {_show(m)}")
            if constant is not None:
                raise FitError(f"law {text!r}: more than one constant term")
            constant = m.names[0] if m.names else m.factor
            continue
        if len(m.names) != 1 or m.factor != 1.0:
            what = "no coefficient" if not m.names else _show(m)
            raise FitError(
                f"law {text!r}: every power term needs one coefficient name (A*N^-alpha), got {what}"
            )
        merged: dict[tuple[str, Exponent], float] = {}
        for v, s, e in m.powers:
            if isinstance(e, float):
                s, e = s * e, 1.0  # a number exponent carries its own sign
                merged[(v, "__num__")] = merged.get((v, "__num__"), 0.0) + s
            else:
                merged[(v, e)] = merged.get((v, e), 0.0) + s
        powers = tuple(
            Power(v, s, 1.0) if e == "__num__" else Power(v, e, s) for (v, e), s in merged.items() if s != 0
        )
        terms.append(Term(m.names[0], powers))
    if len(terms) > 8:
        raise FitError(f"law {text!r}: at most 8 power terms, got {len(terms)}")
    return Law(name or " ".join(text.split()), tuple(terms), constant)


def _show(m: _Mono) -> str:
    return "*".join([*([f"{m.factor:g}"] if m.factor != 1.0 else []), *m.names]) or "1"


FORM_TEXT: dict[str, str] = {
    "power": "A*x^-alpha",
    "saturating": "E + A*x^-alpha",
    "chinchilla": "E + A*N^-alpha + B*D^-beta",
    "shared": "E + A*N^-alpha + B*D^-alpha",
    "overtrain": "E + C^-eta*(A*M^eta + B*M^-eta)",
    "compute": "E + A*C^-alpha",
}
FORMS: dict[str, Law] = {name: parse_law(text, name) for name, text in FORM_TEXT.items()}

# Columns of a parameters x data grid each law variable reads: N and D themselves, C = 6ND, M = D/N.
GRID_VARIABLES: tuple[str, ...] = ("N", "D", "C", "M")


def grid_design(law: Law, N: np.ndarray, D: np.ndarray) -> np.ndarray:
    """(n, J) values of a law's variables at model sizes N and token counts D (variables among N, D, C = 6ND
    and M = D/N), so one grid of trials feeds Chinchilla-style and over-training laws alike."""
    N, D = np.broadcast_arrays(np.asarray(N, float).ravel(), np.asarray(D, float).ravel())
    values = {"N": N, "D": D, "C": 6.0 * N * D, "M": D / N}
    missing = [v for v in law.variables if v not in values]
    if missing:
        raise FitError(
            f"the law {law.name} reads {', '.join(missing)}; a parameters x data grid gives "
            f"{', '.join(GRID_VARIABLES)} (C = 6ND, M = D/N)"
        )
    return np.column_stack([values[v] for v in law.variables])


def resolve_law(spec: str | Law) -> Law:
    """A Law from a Law, a named form (FORMS) or an expression; FitError naming the choices otherwise."""
    if isinstance(spec, Law):
        return spec
    if not isinstance(spec, str):
        raise FitError(f"a law is a form name or an expression, got {type(spec).__name__}")
    if spec in FORMS:
        return FORMS[spec]
    if not any(c in spec for c in "+*/^()"):
        raise FitError(
            f"unknown form {spec!r}; expected one of {', '.join(FORMS)} or an expression like "
            "'E + A*N^-alpha + B*D^-alpha'"
        )
    return parse_law(spec)
