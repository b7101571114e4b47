"""Figures of the report (matplotlib, Agg backend: no display needed). Each returns a Figure; the report
saves and embeds it."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from analysis.compare import AxisComparison
from analysis.data import EBT, TPP, VIEW_LABELS, family_label
from analysis.isoflop import IsoFlopResult

COLORS = {EBT: "#d62728", TPP: "#1f77b4"}  # another family: grey circles
MARKERS = {EBT: "o", TPP: "s"}


def _color(family: str) -> str:
    return COLORS.get(family, "#555555")


def _marker(family: str) -> str:
    return MARKERS.get(family, "o")


def plot_axis_fit(cmp: AxisComparison, excluded_points: pd.DataFrame | None = None) -> Figure:
    """Log-log points of both families, fitted curves (dashed beyond the data) and bootstrap bands."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    x_hi = cmp.extrapolation.x if cmp.extrapolation else None
    for fam in sorted(set(cmp.points["family"])):
        pts = cmp.points[cmp.points["family"] == fam]
        _points_with_spread(ax, pts, fam)
        fit = cmp.fits.get(fam)
        if fit is None:
            ax.plot([], [], color=_color(fam), label=f"{family_label(fam)}: no fit")
            continue
        lo_x, hi_x = fit.x_min[0] / 1.3, max(fit.x_max[0] * 1.3, x_hi or 0)
        grid = np.geomspace(lo_x, hi_x, 200)
        inside = grid <= fit.x_max[0] * 1.3
        pred = fit.predict(grid)
        rate = fit.law.rate if fit.law.exponent_names else None
        label = family_label(fam)
        if rate is not None:
            est, symbol = fit.params[rate], "α" if rate == "alpha" else rate
            label += f": {symbol}={est.value:.3g} [{est.lo:.3g}, {est.hi:.3g}]"
        ax.plot(grid[inside], pred[inside], color=_color(fam), label=label)
        ax.plot(grid[~inside], pred[~inside], color=_color(fam), ls="--")
        if fit.n_boot_valid:
            band_lo, band_hi = fit.predict_interval(grid)
            ax.fill_between(grid, band_lo, band_hi, color=_color(fam), alpha=0.18, lw=0)
    if excluded_points is not None and not excluded_points.empty:
        ax.scatter(
            excluded_points["x"], excluded_points["y"], marker="x", color="0.4", label="excluded", zorder=3
        )
    if x_hi:
        ax.axvline(x_hi, color="0.6", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")  # losses span < 1 decade: 2, 3, 4 reads better than 2x10^0
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    budget = cmp.axis == "flops" and cmp.view == "x"
    ax.set_xlabel(cmp.x_col + (" (budget; lowest loss per budget)" if budget else ""))
    ax.set_ylabel(cmp.y)
    view = "" if cmp.view == "x" else f" {VIEW_LABELS[cmp.view]}"
    ax.set_title(f"{cmp.axis} axis{view}: {cmp.form} law, {int(100 * _level(cmp))}% bootstrap bands")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8)
    return fig


def _points_with_spread(ax: plt.Axes, pts: pd.DataFrame, fam: str) -> None:
    """One marker per point; where a configuration has several seeds, the seeds faint and their geometric
    mean with a min-max bar, so that seed noise is seen next to the fit's band."""
    marker = _marker(fam)
    by_config = pts.groupby("config", sort=False)
    if by_config.size().max() <= 1:
        ax.scatter(pts["x"], pts["y"], color=_color(fam), marker=marker, zorder=3, s=28)
        return
    ax.scatter(pts["x"], pts["y"], color=_color(fam), marker=marker, zorder=3, s=10, alpha=0.35)
    logs = np.log(pts[["x", "y"]]).groupby(pts["config"], sort=False)
    mid = np.exp(logs.mean())
    lo, hi = by_config[["x", "y"]].min(), by_config[["x", "y"]].max()
    ax.errorbar(
        mid["x"],
        mid["y"],
        xerr=np.clip([mid["x"] - lo["x"], hi["x"] - mid["x"]], 0, None),  # exp(mean log) can round
        yerr=np.clip([mid["y"] - lo["y"], hi["y"] - mid["y"]], 0, None),  # just past min or max
        fmt=marker,
        color=_color(fam),
        ms=5,
        capsize=2,
        zorder=4,
    )


def _level(cmp: AxisComparison) -> float:
    return next(iter(cmp.fits.values())).level if cmp.fits else 0.95


def plot_residuals(cmp: AxisComparison) -> Figure:
    """Log residuals (log y - log y_hat) against x: structure here means the law's form is wrong."""
    fig, ax = plt.subplots(figsize=(6.4, 3.0), layout="constrained")
    for fam, fit in cmp.fits.items():
        pts = cmp.points[cmp.points["family"] == fam]
        ax.plot(
            pts["x"],
            fit.residuals,
            marker=_marker(fam),
            color=_color(fam),
            ls="-",
            lw=0.8,
            label=f"{family_label(fam)} (R²log={fit.r2_log:.3f})",
        )
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel(cmp.x_col)
    ax.set_ylabel(f"log {cmp.y} residual")
    ax.set_title(f"{cmp.axis} axis: residuals")
    ax.grid(True, alpha=0.25)
    if cmp.fits:
        ax.legend(fontsize=8)
    return fig


def plot_isoflop(trials_by_family: dict[str, pd.DataFrame], results: dict[str, IsoFlopResult]) -> Figure:
    """Left: loss against N per budget with the fitted parabolas; right: N*(C) with the power law."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    for fam, res in results.items():
        pts = trials_by_family[fam]
        ax.scatter(pts["N"], pts["y"], color=_color(fam), marker=_marker(fam), s=18, alpha=0.7)
        for C, (c0, c1, c2, centre) in res.parabolas.items():
            sel = pts["C"] == C
            u = np.linspace(np.log(pts.loc[sel, "N"]).min() - 0.3, np.log(pts.loc[sel, "N"]).max() + 0.3, 80)
            uc = u - centre
            ax.plot(np.exp(u), c0 + c1 * uc + c2 * uc * uc, color=_color(fam), lw=0.8)
        m = res.minima
        ax.scatter(m["N_opt"], m["loss_opt"], color=_color(fam), marker="*", s=90, edgecolor="k", zorder=4)
        a = res.exponents["a"]
        ax2.errorbar(
            m["C"],
            m["N_opt"],
            yerr=[m["N_opt"] - m["N_opt_lo"], m["N_opt_hi"] - m["N_opt"]],
            fmt=_marker(fam),
            color=_color(fam),
            label=f"{family_label(fam)}: N* ∝ C^{a.value:.3g} [{a.lo:.3g}, {a.hi:.3g}]",
        )
        Cg = np.geomspace(m["C"].min() / 2, m["C"].max() * 2, 50)
        ax2.plot(Cg, res.exponents["k_N"].value * Cg**a.value, color=_color(fam), lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("N (parameters)")
    ax.set_ylabel("loss")
    ax.set_title("isoFLOP profiles (★ = parabola minimum)")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("C (FLOPs)")
    ax2.set_ylabel("N*(C)")
    ax2.set_title("compute-optimal model size")
    for a_ in (ax, ax2):
        a_.grid(True, which="both", alpha=0.25)
    ax2.legend(fontsize=8)
    return fig


def plot_thinking(curves: pd.DataFrame) -> Figure:
    """System-2 (analysis.thinking curves): % perplexity reduction against forward passes per token, one
    panel per split (validation, out of distribution), EBT thinking longer (solid) and self-verification
    (dashed) with their intervals, Transformer++ flat at 0%."""
    splits = [s for s in ("val", "ood") if s in set(curves["split"])] or sorted(set(curves["split"]))
    splits = splits or ["val"]
    fig, axes = plt.subplots(
        1, len(splits), figsize=(5.5 * len(splits), 3.8), layout="constrained", sharey=True
    )
    axes = np.atleast_1d(axes)
    for ax, split in zip(axes, splits, strict=True):
        data = curves[curves["split"] == split]
        for (fam, mode), grp in data.groupby(["family", "mode"], sort=True):
            grp = grp.sort_values("forward_passes")
            label = f"{family_label(fam)} ({mode})" if fam == EBT else f"{family_label(fam)} (cannot think)"
            ls = "--" if mode == "verify" else "-"
            x, y = grp["forward_passes"], 100 * grp["reduction"]
            ax.plot(x, y, marker=_marker(fam), ls=ls, color=_color(fam), label=label)
            lo, hi = 100 * grp["reduction_lo"], 100 * grp["reduction_hi"]
            if fam == EBT and np.isfinite(lo).all() and np.isfinite(hi).all():
                ax.fill_between(x, lo, hi, color=_color(fam), alpha=0.12 if ls == "-" else 0.07, lw=0)
        source = data["source"].iloc[0] if len(data) and data["source"].iloc[0] else ""
        title = {"val": "validation", "ood": "out of distribution"}.get(split, split)
        ax.set_title(f"{title}{f' ({source})' if source else ''}")
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("forward passes per token")
        ax.grid(True, which="both", alpha=0.25)
        if not data.empty:
            ax.legend(fontsize=8)
    axes[0].set_ylabel("perplexity reduction vs 1 forward pass (%)")
    fig.suptitle("System-2 thinking: perplexity reduction against forward passes")
    return fig


def close(fig: Figure) -> None:
    plt.close(fig)
