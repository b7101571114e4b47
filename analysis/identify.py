"""Identifiability flags: which fitted parameters the data do not pin down, and where points would help.

Why: an optimiser always returns numbers. Four model sizes do not separate the N exponent from E, a
2-budget isoFLOP sweep drove E to 3e-14 with a zero-width interval, and nothing said so; a verdict built on
such a fit reads as evidence. A parameter is flagged when

- it sits at a bound: a stated bound of the law (within 1e-6), or the implicit bound 0 of a positive
  quantity (E, or a term's size at the data's centre, below 1e-6 of the typical y: the term has vanished);
- it is a floor (E) whose interval reaches below 1% of the typical y: the data do not tell it from no floor
  (a fit to data without one can put a small E on the noise, as least squares does, and the bootstrap,
  which is not reliable next to a bound, can give it an interval that excludes 0);
- its interval spans more than two orders of magnitude: hi/lo > 100 for a one-signed interval; one that
  crosses zero spans every order of magnitude (an exponent whose sign the data do not give);
- its interval is degenerate: zero width (below 1e-6 of the value) although resamples were drawn: every
  resample returned the same number, which claims a certainty no data give (the parameter sits where the
  objective is flat, e.g. E at 0, or the data have no scatter at all).

Coefficients are judged by their term's size at the geometric-mean design point, not by A itself: A is an
extrapolation of the term to x = 1, many decades from the data, and its interval mostly mirrors the
exponent's (which is judged on its own).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from analysis.intervals import percentile_interval
from analysis.laws import Law

BOUND_TOL = 1e-6  # relative distance to a stated bound that counts as "at" it
VANISHED = 1e-6  # a positive quantity below this fraction of the typical y is at its bound 0
NO_FLOOR = 0.01  # a floor (E) whose interval reaches below this fraction of the typical y: no floor shown
MAX_SPAN = 100.0  # hi / lo beyond this: more than two orders of magnitude
DEGENERATE = 1e-6  # interval width below this fraction of the value: zero width


@dataclass(frozen=True)
class Flag:
    param: str
    kind: str  # "at_bound" | "wide" | "degenerate"
    detail: str  # e.g. "E = 3.3e-14 sits at its lower bound 0"
    stated: bool = False  # at a bound the law states (not the implicit 0 of a positive quantity)

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "detail": self.detail}


def _span_flag(name: str, value: float, lo: float, hi: float, what: str) -> Flag | None:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    if hi - lo <= DEGENERATE * max(abs(value), 1e-300):
        return Flag(name, "degenerate", f"{what} has a zero-width interval [{lo:.3g}, {hi:.3g}]")
    if lo > 0 or hi < 0:
        ratio = max(abs(lo), abs(hi)) / min(abs(lo), abs(hi))
        if ratio > MAX_SPAN:
            decades = math.log10(ratio)
            return Flag(name, "wide", f"{what}'s interval [{lo:.3g}, {hi:.3g}] spans {decades:.1f} decades")
    else:
        return Flag(
            name, "wide", f"{what}'s interval [{lo:.3g}, {hi:.3g}] crosses zero: not even its sign is known"
        )
    return None


def identifiability(
    law: Law,
    theta: np.ndarray,
    theta_draws: np.ndarray,
    centre: np.ndarray,
    y: np.ndarray,
    level: float,
) -> dict[str, tuple[Flag, ...]]:
    """Flags per free parameter (only flagged ones appear). theta / theta_draws are natural log-parameters
    ((p,), (B, p)), centre the mean log x the fit was centred on, y the fitted values."""
    typical = float(np.exp(np.median(np.log(y))))
    natural = {k: float(v[0]) for k, v in law.to_natural(theta[None, :]).items()}
    draws = law.to_natural(theta_draws) if theta_draws.size else {}
    a_c, _, _ = law.split(law.recentre(theta[None, :], centre))
    a_draws = law.split(law.recentre(theta_draws, centre))[0] if theta_draws.size else None
    bounds = law.bound_values
    flags: dict[str, list[Flag]] = {}

    def add(flag: Flag | None) -> None:
        if flag is not None:
            flags.setdefault(flag.param, []).append(flag)

    for name in law.param_names:
        value = natural[name]
        if name in bounds:
            for side, b in zip(("lower", "upper"), bounds[name], strict=True):
                if math.isfinite(b) and abs(value - b) <= BOUND_TOL * max(1.0, abs(b)):
                    detail = f"{name} = {value:.3g} sits at its {side} bound {b:g}"
                    add(Flag(name, "at_bound", detail, stated=True))
        if name == law.constant_name and 0.0 not in bounds.get(name, ()):
            if value < VANISHED * typical:
                detail = f"{name} = {value:.3g} sits at its lower bound 0 (no floor in the data)"
                add(Flag(name, "at_bound", detail))
            elif name in draws and (lo := percentile_interval(draws[name], level)[0]) < NO_FLOOR * typical:
                detail = (
                    f"{name}'s interval reaches down to {lo:.3g}, under {NO_FLOOR:.0%} of the typical y "
                    f"{typical:.3g}: the data do not show a floor"
                )
                add(Flag(name, "at_bound", detail))
        if name in law.coef_names:
            k = law.coef_names.index(name)
            size = float(np.exp(a_c[0, k]))
            what = f"{name}'s term (at the data's centre)"
            if size < VANISHED * typical:
                add(Flag(name, "at_bound", f"{what} is {size:.3g}, at its lower bound 0: the term vanished"))
            if a_draws is not None:
                add(_span_flag(name, size, *percentile_interval(np.exp(a_draws[:, k]), level), what))
        elif name in draws:
            add(_span_flag(name, value, *percentile_interval(draws[name], level), name))
    return {k: tuple(v) for k, v in flags.items()}


def advice(
    law: Law,
    flags: dict[str, tuple[Flag, ...]],
    x_names: tuple[str, ...],
    X: np.ndarray,
) -> str:
    """Where points would pin the flagged parameters down, e.g. "add points at larger n_params (now 4
    distinct, up to 1e+09)": larger values for a floor (E) or a vanished term, a wider range otherwise."""
    wants: dict[int, set[str]] = {}
    binding = [f.param for fl in flags.values() for f in fl if f.stated]
    for name, fl in flags.items():
        kinds = {f.kind for f in fl if not f.stated}
        if not kinds:
            continue
        for v in law.params_of(name):
            j = law.variables.index(v)
            wants.setdefault(j, set()).add("larger" if kinds == {"at_bound"} else "wider")
    parts = []
    for j in sorted(wants):
        col = X[:, j]
        distinct = np.unique(col).size
        if wants[j] == {"larger"}:
            parts.append(f"larger {x_names[j]} (now {distinct} distinct, up to {col.max():.3g})")
        else:
            parts.append(
                f"more {x_names[j]} values over a wider range (now {distinct} distinct, "
                f"{col.min():.3g} to {col.max():.3g})"
            )
    out = "add points at " + " and ".join(parts) if parts else ""
    if binding:
        names = ", ".join(dict.fromkeys(binding))
        widen = f"widen or drop the bound on {names}: it decides the fit, not the data"
        out = f"{out}; {widen}" if out else widen
    return out
