"""EBT vs Transformer++: scaling-rate comparison, extrapolation and crossover, per axis.

The scaling rate is the fitted exponent (alpha). The comparison is the relative difference
(alpha_ebt - alpha_tpp) / alpha_tpp, as the EBT paper reports it ("up to 35% higher scaling rate"); its
interval pairs the bootstrap draws of the two independent fits (draw i of one with draw i of the other, the
resamples being independent), so it carries both fits' uncertainty.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import brentq

from analysis.backtest import Backtest, backtest
from analysis.data import (
    AXIS_X,
    EBT,
    EBT_LABEL,
    TPP,
    TPP_LABEL,
    VIEW_LABELS,
    VIEW_X,
    VIEWS,
    family_label,
    split_trials,
)
from analysis.errors import FitError
from analysis.fit import FitResult, ParamEstimate, fit_law, percentile_interval, spawn_seeds
from analysis.laws import resolve_law
from analysis.options import DEFAULT_OPTIONS, AnalysisOptions
from analysis.text import pct


@dataclass(frozen=True)
class RateComparison:
    axis: str
    exponent: str
    ebt: ParamEstimate
    tpp: ParamEstimate
    relative: ParamEstimate  # (ebt - tpp) / tpp, with the paired-bootstrap interval
    level: float
    significant: bool  # the interval excludes zero and both fits are identified (analysis.identify)
    verdict: str
    identified: bool = True  # neither fit has a flagged parameter


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Draw i of one fit with draw i of the other, dropping pairs where either resample was degenerate."""
    m = min(a.shape[0], b.shape[0])
    a, b = a[:m], b[:m]
    if m == 0:  # no bootstrap
        return a, b
    ok = np.isfinite(a).reshape(m, -1).all(axis=1) & np.isfinite(b).reshape(m, -1).all(axis=1)
    return a[ok], b[ok]


def compare_rates(
    ebt: FitResult,
    tpp: FitResult,
    *,
    exponent: str | None = None,
    axis: str = "",
    level: float | None = None,
    per: str = "",
) -> RateComparison:
    """Side-by-side exponents, their relative difference with a paired-bootstrap CI, and a verdict. Any law:
    `exponent` defaults to the law's first free exponent (alpha, or eta of the over-training law); both fits
    must have it. `per` names the view when the x is not the axis' own ("per training FLOP").

    A difference is never called significant when either fit has a parameter that is not identified
    (at a bound, an interval over two decades or of zero width): its interval would rest on numbers the
    data do not determine, so the verdict says what is not identified and where points would help."""
    exponent = exponent or ebt.law.rate
    for fam, fit in ((EBT_LABEL, ebt), (TPP_LABEL, tpp)):
        if exponent not in fit.params:
            raise FitError(f"{fam}'s {fit.form} law has no fitted exponent {exponent!r} to compare")
    level = level or ebt.level
    e, t = ebt.params[exponent].value, tpp.params[exponent].value
    de, dt = _paired(ebt.draws(exponent), tpp.draws(exponent))
    with np.errstate(all="ignore"):
        rel_draws = (de - dt) / dt
        rel = (e - t) / t if t != 0 else math.nan
    lo, hi = percentile_interval(rel_draws, level)
    relative = ParamEstimate(rel, lo, hi)
    ebt_est = ParamEstimate(e, *percentile_interval(ebt.draws(exponent), level))
    tpp_est = ParamEstimate(t, *percentile_interval(tpp.draws(exponent), level))
    has_ci = math.isfinite(lo) and math.isfinite(hi)
    identified = ebt.identified and tpp.identified
    significant = has_ci and (lo > 0 or hi < 0) and identified

    where = (f" on the {axis} axis" if axis else "") + (f" {per}" if per else "")
    both = f"{exponent} {e:.3g} vs {t:.3g}"
    ci = f"{level:.0%} CI {pct(lo, 0)} to {pct(hi, 0)}"
    if not identified:
        why = " ".join(
            f"{label}'s {fit.form} law is {fit.not_identified()}."
            for label, fit in ((EBT_LABEL, ebt), (TPP_LABEL, tpp))
            if not fit.identified
        )
        verdict = (
            f"No verdict{where}: {EBT_LABEL}'s {exponent} is {pct(rel, 0)} relative to {TPP_LABEL}'s "
            f"({both}; {ci}), but the fits are not identified, so this is not evidence either way. {why}"
        )
    elif not has_ci:
        verdict = f"{EBT_LABEL}'s {exponent} is {pct(rel, 0)} relative to {TPP_LABEL}'s{where} ({both})"
        verdict += "; no bootstrap interval (too few distinct points, or no bootstrap)."
    elif significant:
        word = "faster" if rel > 0 else "slower"
        verdict = f"{EBT_LABEL} scales {abs(100 * rel):.0f}% {word} than {TPP_LABEL}{where} ({both}; {ci})."
    else:
        verdict = (
            f"No significant difference{where}: {EBT_LABEL}'s {exponent} is {pct(rel, 0)} relative to "
            f"{TPP_LABEL}'s ({both}), but the {ci} includes zero."
        )
    if tpp_est.lo <= 0:  # False for NaN (no interval)
        verdict += (
            f" {TPP_LABEL}'s {exponent} is not clearly positive, so the relative difference is unstable."
        )
    return RateComparison(axis, exponent, ebt_est, tpp_est, relative, level, significant, verdict, identified)


NO_ESTIMATE = ParamEstimate(math.nan, math.nan, math.nan)


@dataclass(frozen=True)
class Extrapolation:
    x: float
    predictions: dict[str, ParamEstimate]  # family -> predicted y at x
    difference: ParamEstimate  # y_ebt - y_tpp (paired draws); negative: EBT lower
    relative: ParamEstimate = NO_ESTIMATE  # difference / y_tpp


def extrapolate(fits: Mapping[str, FitResult], x: float, level: float | None = None) -> Extrapolation:
    """Predicted y of each family at x (e.g. 10x the largest observed, or the largest budget both reached)
    with bootstrap intervals, and the paired EBT - Transformer++ difference, absolute and relative."""
    level = level or next(iter(fits.values())).level
    preds = {}
    draws = {}
    for fam, fit in fits.items():
        draws[fam] = fit.predict_draws(x)[:, 0]
        preds[fam] = ParamEstimate(float(fit.predict(x)[0]), *percentile_interval(draws[fam], level))
    if EBT not in fits or TPP not in fits:
        return Extrapolation(float(x), preds, NO_ESTIMATE)
    de, dt = _paired(draws[EBT], draws[TPP])
    e, t = preds[EBT].value, preds[TPP].value
    diff = ParamEstimate(e - t, *percentile_interval(de - dt, level))
    relative = ParamEstimate((e - t) / t, *percentile_interval((de - dt) / dt, level))
    return Extrapolation(float(x), preds, diff, relative)


@dataclass(frozen=True)
class Crossover:
    x: float  # beyond this x the lower family stays lower (within the searched range)
    lo: float  # interval over the bootstrap draws that cross in range
    hi: float
    fraction: float  # share of paired draws whose curves cross in range
    lower_after: str  # family with the lower y beyond x
    x_range: tuple[float, float]


def _last_crossing(logx: np.ndarray, diff: np.ndarray) -> np.ndarray:
    """Per row of diff (B, G) on the log-x grid: log x of its last sign change (interpolated), else NaN."""
    s = np.sign(diff)
    change = (s[:, :-1] * s[:, 1:]) < 0
    has = change.any(axis=1)
    idx = change.shape[1] - 1 - np.argmax(change[:, ::-1], axis=1)
    rows = np.arange(diff.shape[0])
    d0, d1 = diff[rows, idx], diff[rows, idx + 1]
    with np.errstate(all="ignore"):
        t = d0 / (d0 - d1)
    out = logx[idx] + t * (logx[idx + 1] - logx[idx])
    return np.where(has, out, np.nan)


def crossover(
    ebt: FitResult, tpp: FitResult, x_range: tuple[float, float] | None = None, level: float | None = None
) -> Crossover | None:
    """Largest x in x_range where the fitted curves cross, or None if they do not. The default range,
    [smallest observed x / 10, largest observed x * 1000], keeps the answer within a sane extrapolation."""
    level = level or ebt.level
    if x_range is None:
        x_range = (min(ebt.x_min[0], tpp.x_min[0]) / 10, max(ebt.x_max[0], tpp.x_max[0]) * 1000)
    logx = np.linspace(np.log(x_range[0]), np.log(x_range[1]), 512)
    x = np.exp(logx)
    diff = np.log(ebt.predict(x)) - np.log(tpp.predict(x))
    point = _last_crossing(logx, diff[None, :])[0]
    if not math.isfinite(point):
        return None
    i = int(np.searchsorted(logx, point))
    lo_x, hi_x = logx[max(i - 1, 0)], logx[min(i, logx.size - 1)]

    def gap(lx: float) -> float:
        return float(np.log(ebt.predict(math.exp(lx))[0]) - np.log(tpp.predict(math.exp(lx))[0]))

    if lo_x < hi_x and gap(lo_x) * gap(hi_x) < 0:
        point = brentq(gap, lo_x, hi_x, xtol=1e-12)
    de, dt = _paired(ebt.predict_draws(x), tpp.predict_draws(x))
    crossings = _last_crossing(logx, np.log(de) - np.log(dt)) if de.size else np.array([])
    fraction = float(np.isfinite(crossings).mean()) if crossings.size else math.nan
    lo, hi = percentile_interval(np.exp(crossings), level)
    lower_after = EBT if diff[-1] < 0 else TPP
    return Crossover(math.exp(point), lo, hi, fraction, lower_after, (float(x_range[0]), float(x_range[1])))


# ------------------------------------------------------------------------------------------------ per axis


def axis_points(
    fit_rows: pd.DataFrame, axis: str, y: str = "val_loss", x_col: str | None = None
) -> pd.DataFrame:
    """The (family, name, config, x, y) points that enter an axis' fit, from rows that passed split_trials.

    `config` names the configuration a row is one seed of (its axis value; on the flops axis, budget and
    model size): the cluster the bootstrap resamples. `x_col` puts another column (a cost: train_flops,
    device_seconds) on x for the same rows. The flops axis is an isoFLOP grid (several model sizes per
    budget), and loss against C is only a law along its compute-efficient frontier, so that axis keeps, per
    (family, budget), the model size with the lowest mean loss over its seeds, at x = the budget (the
    trial's own FLOPs when it has no budget)."""
    rows = fit_rows[fit_rows["axis"] == axis]
    own = rows[AXIS_X[axis]]
    if axis == "flops":
        own = rows["flops_budget"].where(rows["flops_budget"].notna(), rows["flops"])
    sizes = rows["n_params"] if axis == "flops" else pd.Series(np.nan, index=rows.index)
    config = [repr(v) if axis != "flops" else f"{v!r} N={n!r}" for v, n in zip(own, sizes, strict=True)]
    pts = pd.DataFrame(
        {
            "family": rows["family"],
            "name": rows["name"],
            "config": pd.Series(config, index=rows.index, dtype=object),
            "x": own if x_col is None else rows[x_col],
            "y": rows[y],
        }
    )
    if axis == "flops" and not pts.empty:
        mean = pts.groupby(["family", "config"])["y"].transform("mean")
        best = mean.groupby([pts["family"], own]).transform("min")
        pts = pts[mean == best]
    return pts.sort_values(["family", "x"], kind="stable").reset_index(drop=True)


@dataclass
class AxisComparison:
    axis: str
    x_col: str
    y: str
    form: str
    points: pd.DataFrame  # family, name, config, x, y of the fitted points
    fits: dict[str, FitResult] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # family -> why it has no fit
    rate: RateComparison | None = None
    extrapolation: Extrapolation | None = None
    crossover: Crossover | None = None
    view: str = "x"  # "x": the axis' own x; "flops" / "time": the training cost (analysis.data.VIEWS)
    missing_x: dict[str, int] = field(default_factory=dict)  # family -> finished trials without this x
    gap: Extrapolation | None = None  # both families at the largest x both reached
    gap_verdict: str = ""
    backtests: dict[str, Backtest] = field(default_factory=dict)
    backtest_notes: dict[str, str] = field(default_factory=dict)  # family -> why there is no backtest

    @property
    def flagged(self) -> list[str]:
        """Families whose law missed its held-out largest point."""
        return [f for f, b in self.backtests.items() if b.flagged]


def describe_gap(gap: Extrapolation, label: str, y: str, level: float) -> str:
    """Which family is ahead (lower y) at the largest common x, by how much, with the paired CI."""
    r = gap.relative
    at = f"at {label} = {gap.x:.4g} (the largest both families reached)"
    if not (math.isfinite(r.lo) and math.isfinite(r.hi)):
        rel = pct(r.value)
        return (
            f"At {label} = {gap.x:.4g}, {EBT_LABEL}'s {y} is {rel} relative to {TPP_LABEL}'s (no interval)."
        )
    ci = f"{level:.0%} CI {pct(r.lo)} to {pct(r.hi)}"
    if r.hi < 0:
        lower = f"{abs(100 * r.value):.1f}% lower"
        return f"{EBT_LABEL} is ahead {at}: its {y} is {lower} than {TPP_LABEL}'s ({ci})."
    if r.lo > 0:
        return f"{TPP_LABEL} is ahead {at}: {EBT_LABEL}'s {y} is {100 * r.value:.1f}% higher ({ci})."
    rel = pct(r.value)
    return (
        f"Neither family is clearly ahead {at}: {EBT_LABEL}'s {y} is {rel} relative, but the {ci} "
        "includes zero."
    )


def compare_axis(
    trials: pd.DataFrame, axis: str, options: AnalysisOptions = DEFAULT_OPTIONS, *, view: str = "x"
) -> AxisComparison:
    """Fit both families on one axis of a tidy trials table and compare them: against the axis' own x
    (view 'x') or the training cost of the same trials (views 'flops', 'time'). A family whose points cannot
    be fitted gets a note (the FitError message) instead of a fit; the comparison needs both fits. The
    bootstrap resamples configurations (all seeds of one together), the two families with independent seeds
    (spawned from `options.seed`); each family's law is also backtested on its largest x."""
    y, form, level = options.y, options.form, options.level
    law = resolve_law(form)
    if law.n_vars != 1 or not law.exponent_names:
        raise FitError(
            f"the per-axis law needs one variable and a free exponent, got {law.describe()} "
            f"(variables {', '.join(law.variables)}); laws over N and D go in grid_form"
        )
    if axis not in AXIS_X:
        raise FitError(f"unknown axis {axis!r}; expected one of {', '.join(AXIS_X)}")
    if view not in VIEWS:
        raise FitError(f"unknown view {view!r}; expected one of {', '.join(VIEWS)}")
    x_col = AXIS_X[axis] if view == "x" else VIEW_X[view]
    ok, _ = split_trials(trials, y)
    points = axis_points(ok, axis, y, None if view == "x" else x_col)
    usable = np.isfinite(points["x"]) & (points["x"] > 0)
    out = AxisComparison(axis, x_col, y, form, points[usable].reset_index(drop=True), view=view)
    out.missing_x = points[~usable].groupby("family").size().astype(int).to_dict()
    seeds = dict(zip((EBT, TPP), spawn_seeds(options.seed, 2), strict=True))
    for fam in (EBT, TPP):
        pts = out.points[out.points["family"] == fam]
        if pts.empty:
            lost = out.missing_x.get(fam, 0)
            why = f"its {lost} finished trial(s) have no positive {x_col}" if lost else "no finished trials"
            out.notes[fam] = f"{family_label(fam)} on the {axis} axis: {why}"
            continue
        common = {"groups": pts["config"].to_numpy(), "bootstrap": options.bootstrap, "level": level}
        try:
            out.fits[fam] = fit_law(
                pts["x"].to_numpy(),
                pts["y"].to_numpy(),
                form,
                x_names=(x_col,),
                y_name=y,
                seed=seeds[fam],
                **common,
            )
        except FitError as err:
            out.notes[fam] = str(err)
            continue
        try:
            out.backtests[fam] = backtest(
                pts["x"].to_numpy(),
                pts["y"].to_numpy(),
                form,
                x_names=(x_col,),
                seed=seeds[fam].spawn(1)[0],
                **common,
            )
        except FitError as err:
            out.backtest_notes[fam] = str(err)
    if EBT in out.fits and TPP in out.fits:
        ebt, tpp = out.fits[EBT], out.fits[TPP]
        per = "" if view == "x" else VIEW_LABELS[view]
        out.rate = compare_rates(ebt, tpp, axis=axis, level=level, per=per)
        x_far = options.extrapolate_factor * max(ebt.x_max[0], tpp.x_max[0])
        out.extrapolation = extrapolate(out.fits, x_far, level)
        out.crossover = crossover(ebt, tpp, level=level)
        out.gap = extrapolate(out.fits, min(ebt.x_max[0], tpp.x_max[0]), level)
        out.gap_verdict = describe_gap(out.gap, x_col, y, level)
        if out.gap.x < max(ebt.x_min[0], tpp.x_min[0]):
            out.gap_verdict += " The ranges do not overlap: one family's value there is extrapolated."
    return out
