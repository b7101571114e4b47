"""The report's figures show what they say: each family's points, its fitted curve (solid over the data,
dashed beyond), the bootstrap band, seeds with their spread, excluded points, residuals, isoFLOP minima and
N*(C), System-2 curves. Read back from the matplotlib artists, not from pixels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection, PolyCollection

from analysis import plots
from analysis.compare import compare_axis
from analysis.isoflop import isoflop_allocation
from analysis.options import AnalysisOptions
from analysis.thinking import system2
from tests.analysis.synthetic_scaling import chinchilla_loss, make_split_thinking, make_trials


@pytest.fixture(scope="module")
def data_axis():
    return compare_axis(make_trials(axes=("data",), n=6, noise=0.01), "data", AnalysisOptions(bootstrap=30))


def _scatter_xy(ax) -> list[np.ndarray]:
    return [c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)]


def test_the_fit_figure_shows_points_curves_bands_and_the_extrapolation(data_axis):
    fig = plots.plot_axis_fit(data_axis)
    ax = fig.axes[0]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert ax.get_xlabel() == "tokens" and ax.get_ylabel() == "val_loss"
    assert ax.get_title() == "data axis: power law, 95% bootstrap bands"
    shown = sorted(map(tuple, np.concatenate(_scatter_xy(ax))))
    assert shown == sorted(zip(data_axis.points["x"], data_axis.points["y"], strict=True))
    for fam, label in (("ebt", "EBT"), ("transformer_pp", "Transformer++")):
        fit = data_axis.fits[fam]
        a = fit.params["alpha"]
        solid = [
            ln
            for ln in ax.get_lines()
            if ln.get_label() == f"{label}: α={a.value:.3g} [{a.lo:.3g}, {a.hi:.3g}]"
        ]
        assert len(solid) == 1
        x, y = solid[0].get_data()
        assert x.min() == pytest.approx(fit.x_min[0] / 1.3) and x.max() <= fit.x_max[0] * 1.3
        assert np.allclose(y, fit.predict(x))
        dashed = [
            ln
            for ln in ax.get_lines()
            if ln.get_linestyle() == "--" and ln.get_color() == solid[0].get_color()
        ]
        (xd, yd) = dashed[0].get_data()
        assert xd.min() > fit.x_max[0] * 1.3 and xd.max() == pytest.approx(data_axis.extrapolation.x)
        assert np.allclose(yd, fit.predict(xd))
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 2
    ebt = data_axis.fits["ebt"]
    verts = bands[0].get_paths()[0].vertices
    lo, hi = ebt.predict_interval(np.array([verts[1, 0]]))
    assert lo[0] <= verts[1, 1] * (1 + 1e-9) and verts[:, 1].max() >= hi[0] * (1 - 1e-9)
    assert [ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_linestyle() == ":"] == [
        data_axis.extrapolation.x
    ]
    assert ax.yaxis.get_major_formatter()(2.5, 0) == "2.5"
    plots.close(fig)


def test_excluded_points_are_drawn_apart_and_a_family_without_a_fit_says_so():
    cmp = compare_axis(
        make_trials(axes=("data",), n=6).query("family == 'transformer_pp' or name == 'ebt-data-0'"),
        "data",
        AnalysisOptions(bootstrap=0),
    )
    excluded = pd.DataFrame({"x": [3e6, 4e7], "y": [5.0, 4.0]})
    fig = plots.plot_axis_fit(cmp, excluded)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "EBT: no fit" in labels and "excluded" in labels
    crosses = [c for c in ax.collections if isinstance(c, PathCollection) and c.get_label() == "excluded"]
    assert np.array_equal(crosses[0].get_offsets(), [[3e6, 5.0], [4e7, 4.0]])
    assert not [c for c in ax.collections if isinstance(c, PolyCollection)]  # no bootstrap: no bands
    (curve,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("Transformer++: α=")]
    fit = cmp.fits["transformer_pp"]  # no comparison, so no extrapolation: the curve stops past its data
    assert curve.get_xdata().max() == pytest.approx(fit.x_max[0] * 1.3)
    plots.close(fig)


def test_seeds_are_shown_faint_with_their_geometric_mean_and_range():
    one = make_trials(axes=("data",), n=6, noise=0.02, seed=3)
    seeds = pd.concat(
        [
            one.assign(seed=s, name=one["name"] + f"-{s}", val_loss=one["val_loss"] * f)
            for s, f in enumerate((0.97, 1.0, 1.05))
        ],
        ignore_index=True,
    )
    cmp = compare_axis(seeds, "data", AnalysisOptions(bootstrap=0))
    fig = plots.plot_axis_fit(cmp)
    ax = fig.axes[0]
    assert sum(len(xy) for xy in _scatter_xy(ax)) == len(cmp.points)
    bars = [c for c in ax.containers if hasattr(c, "has_yerr") and c.has_yerr]
    assert len(bars) == 2
    mean_line = bars[0].lines[0]
    pts = cmp.points[cmp.points["family"] == "ebt"].sort_values("x")
    geo = np.exp(np.log(pts["y"]).groupby(pts["config"], sort=False).mean())
    assert np.allclose(np.sort(mean_line.get_ydata()), np.sort(geo.to_numpy()))
    segs = bars[0].lines[2][1].get_segments()  # the y error bars: (mean x, min y) to (mean x, max y)
    spans = sorted((s[0][1], s[1][1]) for s in segs)
    want = sorted(zip(pts.groupby("config")["y"].min(), pts.groupby("config")["y"].max(), strict=True))
    assert np.allclose(spans, want)
    faint = [c for c in ax.collections if isinstance(c, PathCollection)]
    spread = bars[0].lines[2][1]  # the seeds' min-max bars
    assert all(c.get_alpha() < 1 and c.get_zorder() < spread.get_zorder() for c in faint)  # seeds beneath
    plots.close(fig)


def test_the_residual_figure_plots_each_fit_s_log_residuals(data_axis):
    fig = plots.plot_residuals(data_axis)
    ax = fig.axes[0]
    for fam, label in (("ebt", "EBT"), ("transformer_pp", "Transformer++")):
        fit = data_axis.fits[fam]
        (line,) = [ln for ln in ax.get_lines() if ln.get_label() == f"{label} (R²log={fit.r2_log:.3f})"]
        x = data_axis.points.loc[data_axis.points["family"] == fam, "x"]
        assert np.allclose(line.get_xdata(), x) and np.allclose(line.get_ydata(), fit.residuals)
    assert ax.get_ylabel() == "log val_loss residual" and ax.get_title() == "data axis: residuals"
    plots.close(fig)


def test_the_isoflop_figure_marks_each_budget_s_minimum_and_the_n_star_law():
    Ns, Cs = [], []
    for C in np.geomspace(1e18, 1e21, 4):
        n_star = 0.6 * (C / 6) ** 0.45
        Ns.append(n_star * np.geomspace(0.2, 5, 5))
        Cs.append(np.full(5, C))
    N, C = np.concatenate(Ns), np.concatenate(Cs)
    pts = pd.DataFrame({"N": N, "C": C, "y": chinchilla_loss(N, C / (6 * N))})
    res = isoflop_allocation(N, C, pts["y"].to_numpy(), bootstrap=20)
    fig = plots.plot_isoflop({"ebt": pts}, {"ebt": res})
    left, right = fig.axes
    stars = [c for c in left.collections if isinstance(c, PathCollection)][1].get_offsets()
    assert np.allclose(stars, res.minima[["N_opt", "loss_opt"]].to_numpy())
    assert np.allclose(sorted(map(tuple, _scatter_xy(left)[0])), sorted(zip(N, pts["y"], strict=True)))
    a = res.exponents["a"]
    (legend,) = [t.get_text() for t in right.get_legend().get_texts()]
    assert legend == f"EBT: N* ∝ C^{a.value:.3g} [{a.lo:.3g}, {a.hi:.3g}]"
    law = next(ln for ln in right.get_lines() if len(ln.get_xdata()) == 50)
    assert np.allclose(law.get_ydata(), res.exponents["k_N"].value * law.get_xdata() ** a.value)
    assert law.get_xdata()[[0, -1]] == pytest.approx([res.minima["C"].min() / 2, res.minima["C"].max() * 2])
    (errs,) = right.containers
    assert np.allclose(errs.lines[0].get_xdata(), res.minima["C"]) and np.allclose(
        errs.lines[0].get_ydata(), res.minima["N_opt"]
    )
    assert (left.get_xlabel(), left.get_ylabel(), right.get_xlabel(), right.get_ylabel()) == (
        "N (parameters)",
        "loss",
        "C (FLOPs)",
        "N*(C)",
    )
    assert right.get_xscale() == right.get_yscale() == "log"
    parabolas = [ln for ln in left.get_lines() if len(ln.get_xdata()) == 80]
    assert len(parabolas) == len(res.parabolas)
    for line, budget in zip(parabolas, res.parabolas, strict=True):  # its budget's sizes, and a bit more
        sizes = pts.loc[pts["C"] == budget, "N"]
        assert line.get_xdata().min() == pytest.approx(sizes.min() * np.exp(-0.3))
        assert line.get_xdata().max() == pytest.approx(sizes.max() * np.exp(0.3))
    plots.close(fig)


def test_the_thinking_figure_has_a_panel_per_split_with_the_measured_reductions():
    s2 = system2(make_split_thinking({"val": 0.1, "ood": 0.2}), bootstrap=50)
    fig = plots.plot_thinking(s2.curves)
    assert [ax.get_title() for ax in fig.axes] == ["validation (stdlib)", "out of distribution (prose)"]
    for ax, split in zip(fig.axes, ("val", "ood"), strict=True):
        assert ax.get_xscale() == "log" and ax.get_xlabel() == "forward passes per token"
        for (fam, mode), grp in s2.curves[s2.curves["split"] == split].groupby(["family", "mode"]):
            label = f"EBT ({mode})" if fam == "ebt" else "Transformer++ (cannot think)"
            (line,) = [ln for ln in ax.get_lines() if ln.get_label() == label]
            grp = grp.sort_values("forward_passes")
            assert np.allclose(line.get_xdata(), grp["forward_passes"])
            assert np.allclose(line.get_ydata(), 100 * grp["reduction"])
            assert line.get_linestyle() == ("--" if mode == "verify" else "-")
    assert fig.axes[0].get_ylabel() == "perplexity reduction vs 1 forward pass (%)"
    plots.close(fig)


def test_the_thinking_figure_orders_its_legend_whatever_the_row_order():
    """The legend reads EBT thinking longer, EBT self-verification, then Transformer++, in every panel, also
    when the table's rows come in another order."""
    curves = system2(make_split_thinking({"val": 0.1}), bootstrap=0).curves
    fig = plots.plot_thinking(curves.iloc[::-1])
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["EBT (steps)", "EBT (verify)", "Transformer++ (cannot think)"]
    plots.close(fig)


def test_a_split_and_a_family_the_figures_have_no_style_for_are_still_drawn_under_their_names():
    """A split other than val/ood is titled by its name; a family without a colour or marker of its own (a
    new model family) is drawn in grey circles rather than failing the report."""
    curves = system2(make_split_thinking({"test": 0.1}), bootstrap=0).curves
    curves = curves.assign(family=curves["family"].replace({"transformer_pp": "dit"}))
    fig = plots.plot_thinking(curves)
    (ax,) = fig.axes
    assert ax.get_title().split(" (")[0] == "test"
    (line,) = [ln for ln in ax.get_lines() if ln.get_label().endswith("(cannot think)")]
    assert line.get_marker() == "o" and line.get_color() == "#555555"
    plots.close(fig)


def test_each_family_has_its_own_marker_and_the_grid_is_faint(data_axis):
    """EBT circles and Transformer++ squares (the residual figure's lines); faint grid lines in both."""
    fig = plots.plot_residuals(data_axis)
    ax = fig.axes[0]
    markers = {
        ln.get_label().split(" (")[0]: ln.get_marker() for ln in ax.get_lines() if "R²" in ln.get_label()
    }
    assert markers == {"EBT": "o", "Transformer++": "s"}
    for fig_ in (fig, plots.plot_axis_fit(data_axis)):
        gridlines = fig_.axes[0].xaxis.get_gridlines()
        assert gridlines and all(g.get_alpha() == 0.25 for g in gridlines)
        plots.close(fig_)


def test_the_bands_are_named_by_the_fits_level():
    cmp = compare_axis(
        make_trials(axes=("data",), n=6, noise=0.01), "data", AnalysisOptions(bootstrap=30, level=0.8)
    )
    fig = plots.plot_axis_fit(cmp)
    assert fig.axes[0].get_title() == "data axis: power law, 80% bootstrap bands"
    plots.close(fig)


def test_close_closes_the_figure_it_is_given_not_the_current_one():
    import matplotlib.pyplot as plt

    mine, current = plt.figure(), plt.figure()
    plots.close(mine)
    assert not plt.fignum_exists(mine.number) and plt.fignum_exists(current.number)
    plt.close(current)
