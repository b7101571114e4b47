"""The study report: one self-contained HTML page (PNGs inlined as data URIs), a Markdown twin that links
the PNGs under plots/, and summary.json with every number. All content is built once as a list of blocks
(heading, paragraph, table, image, pre) and rendered to both formats, so the two cannot disagree."""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis import plots
from analysis.backtest import Backtest, backtest
from analysis.claims import WORDS, Claims, build_claims
from analysis.compare import AxisComparison, RateComparison, axis_points, compare_axis, compare_rates
from analysis.data import (
    EBT,
    EBT_LABEL,
    TPP,
    TPP_LABEL,
    VIEW_LABELS,
    VIEWS,
    axes_present,
    family_label,
    split_trials,
    tidy_thinking,
    tidy_trials,
)
from analysis.errors import FitError
from analysis.fit import FitResult, ParamEstimate, compute_optimal, fit_law, spawn_seeds
from analysis.isoflop import IsoFlopResult, flops_per_token_from_trials, isoflop_allocation
from analysis.laws import grid_design, resolve_law
from analysis.learning import LearningCheck, learning_check
from analysis.options import DEFAULT_OPTIONS, AnalysisOptions
from analysis.rounds import check_round_frame, plot_rounds, round_rows
from analysis.text import fmt, pct
from analysis.thinking import MODE_LABELS, SPLIT_LABELS, System2, system2
from analysis.tuning import check_tuning_frame, plot_tuning, tuning_rows

CHINCHILLA_N = "n_params"  # total parameters, as Hoffmann et al. count N for compute-optimal allocation
# how the grid law's variables are named in the report: the trial columns, or what they are computed from
GRID_COLUMNS = {"N": CHINCHILLA_N, "D": "tokens", "C": "C=6ND", "M": "M=D/N"}


def fmt_ci(est: ParamEstimate) -> str:
    return f"[{fmt(est.lo)}, {fmt(est.hi)}]"


# ------------------------------------------------------------------------------------------------ blocks


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    path: Path  # the saved PNG
    alt: str


@dataclass
class Block:
    kind: str  # "h1" | "h2" | "h3" | "p" | "lines" | "table" | "image" | "pre"
    content: Any


@dataclass
class Doc:
    blocks: list[Block] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(Block(f"h{level}", text))

    def p(self, text: str) -> None:
        self.blocks.append(Block("p", text))

    def lines(self, lines: Sequence[str]) -> None:
        """Short lines read as one block: the first screen."""
        self.blocks.append(Block("lines", list(lines)))

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.blocks.append(Block("table", Table(list(columns), [[str(c) for c in r] for r in rows])))

    def image(self, path: Path, alt: str) -> None:
        self.blocks.append(Block("image", Image(path, alt)))

    def pre(self, text: str) -> None:
        self.blocks.append(Block("pre", text))


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:0.6em 0 1.2em;font-size:0.9em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f2f2f2} img{max-width:100%;display:block;margin:0.5em 0}
pre{background:#f7f7f7;padding:0.8em;overflow-x:auto;font-size:0.85em}
p.headline{font-size:1.08em;background:#f5f8ff;border-left:4px solid #4a74d9;padding:0.6em 0.9em}
ul.first-screen{font-size:1.05em;background:#f5f8ff;border-left:4px solid #4a74d9;
padding:0.6em 0.9em 0.6em 2em}
"""


def render_html(doc: Doc, title: str) -> str:
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"]
    out.append(f"<style>{CSS}</style></head><body>")
    first_p = not any(b.kind == "lines" for b in doc.blocks)  # without a first screen, the first p is it
    for b in doc.blocks:
        if b.kind.startswith("h"):
            out.append(f"<{b.kind}>{html.escape(b.content)}</{b.kind}>")
        elif b.kind == "p":
            cls = " class='headline'" if first_p else ""
            first_p = False
            out.append(f"<p{cls}>{html.escape(b.content)}</p>")
        elif b.kind == "lines":
            items = "".join(f"<li>{html.escape(line)}</li>" for line in b.content)
            out.append(f"<ul class='first-screen'>{items}</ul>")
        elif b.kind == "table":
            head = "".join(f"<th>{html.escape(c)}</th>" for c in b.content.columns)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in b.content.rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif b.kind == "image":
            data = base64.b64encode(b.content.path.read_bytes()).decode("ascii")
            out.append(f"<img alt='{html.escape(b.content.alt)}' src='data:image/png;base64,{data}'>")
        elif b.kind == "pre":
            out.append(f"<pre>{html.escape(b.content)}</pre>")
    out.append("</body></html>")
    return "\n".join(out)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(doc: Doc, out_dir: Path) -> str:
    out: list[str] = []
    for b in doc.blocks:
        if b.kind.startswith("h"):
            out.append("#" * int(b.kind[1]) + " " + b.content)
        elif b.kind == "p":
            out.append(b.content)
        elif b.kind == "lines":
            out.append("\n".join(f"- {line}" for line in b.content))
        elif b.kind == "table":
            t = b.content
            out.append("| " + " | ".join(_md_cell(c) for c in t.columns) + " |")
            out.append("|" + "---|" * len(t.columns))
            out.extend("| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows)
        elif b.kind == "image":
            out.append(f"![{b.content.alt}]({b.content.path.relative_to(out_dir).as_posix()})")
        elif b.kind == "pre":
            out.append("```\n" + b.content + "\n```")
        out.append("")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------ analysis


@dataclass
class ComputeOptimal:
    """The flops axis of one family: the grid law's fit (Chinchilla's L(N, D) by default), its backtest on the
    largest budget, and the isoFLOP allocation (or why not)."""

    family: str
    points: pd.DataFrame  # N, D, C, y
    chinchilla: FitResult | None = None  # the grid law's fit, whatever its form (options.grid_form)
    backtest: Backtest | None = None
    allocation: list[dict[str, float]] = field(default_factory=list)  # N*, D* from the law at some budgets
    isoflop: IsoFlopResult | None = None
    notes: list[str] = field(default_factory=list)


def _compute_optimal(fit_rows: pd.DataFrame, family: str, options: AnalysisOptions) -> ComputeOptimal:
    y, bootstrap, level = options.y, options.bootstrap, options.level
    rows = fit_rows[(fit_rows["axis"] == "flops") & (fit_rows["family"] == family)]
    C = rows["flops_budget"].where(rows["flops_budget"].notna(), rows["flops"])
    pts = pd.DataFrame({"N": rows[CHINCHILLA_N], "D": rows["tokens"], "C": C, "y": rows[y]})
    usable = (pts[["N", "D", "C"]] > 0).all(axis=1)  # False for NaN too
    out = ComputeOptimal(family, pts[usable].reset_index(drop=True))
    if not usable.all():
        out.notes.append(
            f"{int((~usable).sum())} flops-axis trial(s) lack a positive {CHINCHILLA_N} or tokens"
        )
    if out.points.empty:
        out.notes.append("no usable finished trials on the flops axis")
        return out
    pts = out.points
    fpt = flops_per_token_from_trials(rows[CHINCHILLA_N], rows["flops"], rows["tokens"])
    seeds = spawn_seeds(options.seed, 2)
    law = resolve_law(options.grid_form)
    what = "Chinchilla fit" if law.name == "chinchilla" else f"{law.describe()} fit"
    try:
        X = grid_design(law, pts["N"], pts["D"])
        common = {
            "x_names": tuple(GRID_COLUMNS[v] for v in law.variables),
            "y_name": y,
            "bootstrap": bootstrap,
            "level": level,
        }
        fit = fit_law(X, pts["y"].to_numpy(), law, seed=seeds[0], **common)
        out.chinchilla = fit
        budgets = sorted(set(pts["C"].dropna()))
        out.allocation = compute_optimal(fit, [*budgets, 10 * budgets[-1]], flops_per_token=fpt)
    except FitError as err:
        out.notes.append(f"{what}: {err}")
    if out.chinchilla is not None:
        try:  # the largest budget held out: does the law extrapolate in compute?
            out.backtest = backtest(
                X,
                pts["y"].to_numpy(),
                law,
                holdout=pts["C"].to_numpy(),
                holdout_name="budget",
                seed=seeds[0].spawn(1)[0],
                x_names=common["x_names"],
                bootstrap=bootstrap,
                level=level,
            )
        except FitError as err:
            out.notes.append(f"backtest of the {law.describe()} law on the largest budget: {err}")
    try:
        out.isoflop = isoflop_allocation(
            pts["N"], pts["C"], pts["y"], flops_per_token=fpt, bootstrap=bootstrap, seed=seeds[1], level=level
        )
    except FitError as err:
        out.notes.append(f"isoFLOP analysis: {err}")
    return out


@dataclass
class Analysis:
    options: AnalysisOptions  # what was fitted and how (its seed: the root of every fit's seed)
    axes: list[AxisComparison]
    excluded: pd.DataFrame
    compute: dict[str, ComputeOptimal]
    thinking: pd.DataFrame | None
    views: dict[str, list[AxisComparison]] = field(default_factory=dict)  # "flops"/"time" -> per axis
    seed_noise: pd.DataFrame = field(default_factory=pd.DataFrame)  # see seed_noise()
    system2: System2 | None = None  # perplexity reduction per forward pass, validation vs OOD
    grid_rate: RateComparison | None = None  # the grid law's exponent, EBT vs Transformer++
    claims: Claims | None = None  # the paper's numbers beside ours (analysis/claims.py)
    learning: LearningCheck | None = None  # did every fitted trial learn (analysis/learning.py)


def analyse(
    trials: pd.DataFrame, options: AnalysisOptions = DEFAULT_OPTIONS, *, thinking: pd.DataFrame | None = None
) -> Analysis:
    """Every number of the report, no plotting: per-axis comparisons, flops-axis allocation, exclusions."""
    trials = tidy_trials(trials)
    fit_rows, excluded = split_trials(trials, options.y)
    axes = axes_present(trials)
    root = np.random.SeedSequence(options.seed)
    axis_seeds = spawn_seeds(root, len(axes) + 1)
    cost_views = [v for v in VIEWS if v != "x"]
    view_seeds = spawn_seeds(root, len(axes) * len(cost_views))  # spawned after: the x view's seeds stay
    comparisons = [
        compare_axis(trials, axis, replace(options, seed=s))
        for axis, s in zip(axes, axis_seeds[:-1], strict=True)
    ]
    views = {
        v: [compare_axis(trials, axis, replace(options, seed=view_seeds.pop()), view=v) for axis in axes]
        for v in cost_views
    }
    compute = {}
    if "flops" in axes:
        fam_seeds = spawn_seeds(axis_seeds[-1], 2)
        compute = {
            fam: _compute_optimal(fit_rows, fam, replace(options, seed=s))
            for fam, s in zip((EBT, TPP), fam_seeds, strict=True)
        }
    grid_rate = None
    grid_fits = [co.chinchilla for co in compute.values() if co.chinchilla is not None]
    if len(grid_fits) == 2:
        grid_rate = compare_rates(*grid_fits, axis="flops grid", level=options.level)
    think = tidy_thinking(thinking) if thinking is not None else None
    s2 = None
    if think is not None and not think.empty:  # its seed spawned last: the fits' seeds stay as they were
        seed = spawn_seeds(root, 1)[0]
        s2 = system2(think, bootstrap=options.bootstrap, level=options.level, seed=seed)
    noise = seed_noise(fit_rows, axes, options.y)
    claims = build_claims(comparisons, views, s2, options.level, options.y)
    learned = learning_check(fit_rows)
    return Analysis(
        options, comparisons, excluded, compute, think, views, noise, s2, grid_rate, claims, learned
    )


def seed_noise(fit_rows: pd.DataFrame, axes: Sequence[str], y: str = "val_loss") -> pd.DataFrame:
    """Per axis and family, how much seeds of one configuration disagree: configurations, how many have
    several seeds, and the median / largest standard deviation of log y across a configuration's seeds
    (about the relative spread). One seed per configuration gives zero multi-seed configurations."""
    rows = []
    for axis in axes:
        pts = axis_points(fit_rows, axis, y)
        for fam, grp in pts.groupby("family", sort=True):
            sd = np.log(grp["y"]).groupby(grp["config"]).std(ddof=1).dropna()
            rows.append(
                {
                    "axis": axis,
                    "family": fam,
                    "configs": int(grp["config"].nunique()),
                    "multi_seed_configs": int(sd.size),
                    "max_seeds": int(grp.groupby("config").size().max()),
                    "median_sd_log": float(sd.median()) if sd.size else math.nan,
                    "max_sd_log": float(sd.max()) if sd.size else math.nan,
                }
            )
    return pd.DataFrame(rows, columns=SEED_NOISE_COLUMNS)


SEED_NOISE_COLUMNS = [
    "axis",
    "family",
    "configs",
    "multi_seed_configs",
    "max_seeds",
    "median_sd_log",
    "max_sd_log",
]


# ------------------------------------------------------------------------------------------------ writing


def _view_sentence(c: AxisComparison) -> str:
    """What one view of one axis says: which family is ahead at the largest common x, whether the slopes
    differ, and any law its backtest flags (or why the view has no comparison)."""
    label = f"per {c.x_col}" if c.view == "x" else VIEW_LABELS[c.view]
    label = label[0].upper() + label[1:]
    if c.rate is None:
        why = "; ".join(c.notes.values()) or "no comparison"
        return f"{label}: not compared ({why})."
    text = f"{label}: {c.gap_verdict} {c.rate.verdict}"
    for fam in c.flagged:
        text += f" Backtest flag: {family_label(fam)}'s law misses its held-out largest point."
    return text


def _headline(an: Analysis) -> str:
    """The summary line: every compared axis in all three views (its own x, per FLOP, per second)."""
    compared = [c for c in an.axes if c.rate is not None]
    missing = [c.axis for c in an.axes if c.rate is None]
    if not compared:
        both = f"{EBT_LABEL} and {TPP_LABEL}"
        text = f"No axis has fits for both {both} yet, so no scaling-rate comparison can be made."
    else:
        parts = []
        for c in compared:
            views = [c, *(vs[an.axes.index(c)] for vs in an.views.values())]
            parts.append(f"{c.axis.capitalize()} axis — " + " ".join(_view_sentence(v) for v in views))
        text = " ".join(parts)
    if missing and compared:
        text += f" Not compared (too few usable trials): {', '.join(missing)} axis."
    o = an.options
    scope = f"{o.form} law fits of {o.y}, {o.bootstrap} bootstrap resamples, {o.level:.0%} intervals."
    text = f"{text} ({scope})"
    if an.system2 is not None:
        text += f" {an.system2.verdict}"
    return text


def _param_rows(fits: dict[str, FitResult]) -> list[list[str]]:
    rows = []
    for fam, fit in fits.items():
        for name, est in [*fit.params.items(), *fit.derived.items()]:
            flag = fit.flag_text(name)
            ident = ("no: " + flag) if flag else ("yes" if name in fit.params else "")
            rows.append(
                [
                    family_label(fam),
                    name,
                    fmt(est.value),
                    fmt_ci(est),
                    ident,
                    fmt(fit.r2_log),
                    str(fit.n_points),
                ]
            )
        for name, value in fit.fixed.items():
            rows.append(
                [family_label(fam), name, fmt(value), "fixed", "", fmt(fit.r2_log), str(fit.n_points)]
            )
    return rows


def _identification_notes(doc: Doc, fits: dict[str, FitResult]) -> None:
    """A paragraph per fit with a parameter the data do not pin down, saying where to add points."""
    for fam, fit in fits.items():
        if not fit.identified:
            doc.p(f"{family_label(fam)}'s {fit.form} law is {fit.not_identified()}.")


PARAM_COLUMNS = ["family", "parameter", "value", "CI", "identified", "R² (log)", "points"]


def _axis_section(
    doc: Doc, cmp: AxisComparison, excluded: pd.DataFrame, trials: pd.DataFrame, plot_dir: Path
) -> None:
    doc.h(2, f"{cmp.axis.capitalize()} axis (x = {cmp.x_col})")
    if cmp.axis == "flops":
        doc.p(
            "Loss against compute is fitted along the compute-efficient frontier: per family and budget, the "
            "lowest-loss trial of the isoFLOP grid, at x = the budget."
        )
    if cmp.rate is not None:
        doc.p(cmp.rate.verdict)
        doc.p(cmp.gap_verdict)
    for fam, note in cmp.notes.items():
        doc.p(f"{family_label(fam)}: no fit — {note}.")
    for fam, bt in cmp.backtests.items():
        doc.p(bt.describe(family_label(fam)))
    if cmp.points.empty:
        return
    ex_names = excluded.loc[excluded["axis"] == cmp.axis, "name"]
    ex = trials[trials["name"].isin(ex_names) & (trials["axis"] == cmp.axis)]
    ex_pts = pd.DataFrame({"x": ex[cmp.x_col], "y": ex[cmp.y]})
    ex_pts = ex_pts[
        np.isfinite(ex_pts["x"]) & np.isfinite(ex_pts["y"]) & (ex_pts["x"] > 0) & (ex_pts["y"] > 0)
    ]
    _figure(doc, plots.plot_axis_fit(cmp, ex_pts), plot_dir / f"{cmp.axis}_fit.png", f"{cmp.axis} axis fit")
    if cmp.fits:
        _figure(
            doc, plots.plot_residuals(cmp), plot_dir / f"{cmp.axis}_residuals.png", f"{cmp.axis} residuals"
        )
        doc.h(3, "Parameters")
        doc.table(PARAM_COLUMNS, _param_rows(cmp.fits))
        _identification_notes(doc, cmp.fits)
    if cmp.extrapolation is not None:
        e = cmp.extrapolation
        doc.h(3, f"Extrapolation to {cmp.x_col} = {fmt(e.x)}")
        rows = [[family_label(f), fmt(p.value), fmt_ci(p)] for f, p in e.predictions.items()]
        rows.append([f"{EBT_LABEL} − {TPP_LABEL}", fmt(e.difference.value), fmt_ci(e.difference)])
        doc.table(["family", f"predicted {cmp.y}", "CI"], rows)
    if cmp.fits.keys() >= {EBT, TPP}:
        c = cmp.crossover
        if c is None:
            doc.p(f"The fitted curves do not cross for {cmp.x_col} within the searched range.")
        else:
            doc.p(
                f"The fitted curves cross at {cmp.x_col} ≈ {fmt(c.x)} "
                f"(bootstrap CI {fmt(c.lo)} to {fmt(c.hi)}; "
                f"{c.fraction:.0%} of resampled pairs cross within {fmt(c.x_range[0])}–{fmt(c.x_range[1])}); "
                f"beyond it {family_label(c.lower_after)} has the lower {cmp.y}."
            )


def _figure(doc: Doc, fig, path: Path, alt: str) -> None:
    fig.savefig(path, dpi=110)
    plots.close(fig)
    doc.image(path, alt)


def _compute_section(doc: Doc, an: Analysis, plot_dir: Path) -> None:
    doc.h(2, "Compute-optimal allocation (flops axis)")
    doc.p(
        f"N is {CHINCHILLA_N} (total parameters). FLOPs per token come from each family's own trials "
        "(flops / tokens, a power law in N), not 6N: an EBT token costs several forward passes."
    )
    law_rows, alloc_rows, iso_rows, minima_rows = [], [], [], []
    grid_fits = {fam: co.chinchilla for fam, co in an.compute.items() if co.chinchilla is not None}
    for fam, co in an.compute.items():
        for note in co.notes:
            doc.p(f"{family_label(fam)}: {note}.")
        if co.chinchilla is not None:
            law_rows += _param_rows({fam: co.chinchilla})
            alloc_rows += [
                [
                    family_label(fam),
                    fmt(r["C"]),
                    fmt(r["N_opt"]),
                    f"[{fmt(r['N_opt_lo'])}, {fmt(r['N_opt_hi'])}]",
                    fmt(r["D_opt"]),
                    f"[{fmt(r['D_opt_lo'])}, {fmt(r['D_opt_hi'])}]",
                    fmt(r["loss_opt"]),
                ]
                for r in co.allocation
            ]
        if co.isoflop is not None:
            for name, est in co.isoflop.exponents.items():
                iso_rows.append([family_label(fam), name, fmt(est.value), fmt_ci(est)])
            for _, r in co.isoflop.minima.iterrows():
                minima_rows.append(
                    [
                        family_label(fam),
                        fmt(r["C"]),
                        fmt(r["N_opt"]),
                        f"[{fmt(r['N_opt_lo'])}, {fmt(r['N_opt_hi'])}]",
                        fmt(r["D_opt"]),
                        fmt(r["loss_opt"]),
                        "yes" if r["in_range"] else "no (extrapolated)",
                    ]
                )
            for C, reason in co.isoflop.skipped.items():
                doc.p(f"{family_label(fam)}: budget {fmt(C)} skipped — {reason}.")
    if law_rows:
        law = resolve_law(an.options.grid_form)
        if law.name == "chinchilla":
            doc.h(3, "Chinchilla law L(N, D) = E + A/N^α + B/D^β")
        else:
            doc.h(3, f"Grid law L = {law.describe()} (C = 6ND, M = D/N)")
        doc.table(PARAM_COLUMNS, law_rows)
        _identification_notes(doc, grid_fits)
        if an.grid_rate is not None:
            doc.p(an.grid_rate.verdict)
        for fam, co in an.compute.items():
            if co.backtest is not None:
                doc.p(co.backtest.describe(family_label(fam)))
        if law.name == "chinchilla":
            doc.p(
                "a = β/(α+β) and b = α/(α+β) are the exponents of N* ∝ C^a and D* ∝ C^b implied by the law."
            )
        doc.table(["family", "C", "N*", "CI", "D*", "CI", f"{an.options.y} at optimum"], alloc_rows)
    if iso_rows:
        doc.h(3, "isoFLOP minima (parabola in log N per budget)")
        doc.table(
            ["family", "C", "N*", "CI", "D*", f"{an.options.y} at N*", "minimum inside sampled N"],
            minima_rows,
        )
        doc.table(["family", "quantity (N* = k_N C^a, D* = k_D C^b)", "value", "CI"], iso_rows)
        iso = {f: co.isoflop for f, co in an.compute.items() if co.isoflop is not None}
        pts = {f: an.compute[f].points for f in iso}
        _figure(doc, plots.plot_isoflop(pts, iso), plot_dir / "isoflop.png", "isoFLOP profiles")


def _thinking_section(doc: Doc, s2: System2, plot_dir: Path) -> None:
    doc.h(2, "System-2 thinking")
    doc.p(s2.verdict)
    doc.p(
        "As the EBT paper measures it: the percentage reduction of perplexity against forward passes per "
        "token (EBT: thinking steps, or steps × candidates with self-verification), relative to the same "
        "model's perplexity on the same text at 1 forward pass. Transformer++ predicts in one forward pass "
        "and cannot spend more: its line is its one measurement repeated, 0% by construction. Intervals "
        f"resample the evaluated windows ({s2.bootstrap} draws)."
    )
    _figure(doc, plots.plot_thinking(s2.curves), plot_dir / "thinking.png", "System-2 perplexity reduction")
    rows = []
    for r in s2.curves.itertuples(index=False):
        if r.family != EBT and r.forward_passes != 1:
            continue  # cannot think: one row, its measurement (repeated at every budget in summary.json)
        est = ParamEstimate(r.reduction, r.reduction_lo, r.reduction_hi)
        ci = f"[{pct(est.lo)}, {pct(est.hi)}]" if math.isfinite(est.lo) and r.family == EBT else ""
        rows.append(
            [
                f"{SPLIT_LABELS.get(r.split, r.split)} ({r.source})" if r.source else r.split,
                family_label(r.family),
                MODE_LABELS.get(r.mode, r.mode) if r.family == EBT else "one forward pass",
                fmt(r.steps),
                fmt(r.candidates),
                fmt(r.forward_passes) if r.family == EBT else "1 (any budget)",
                fmt(r.perplexity),
                pct(r.reduction),
                ci,
            ]
        )
    columns = ["text", "family", "mode", "steps", "candidates", "forward passes", "perplexity"]
    doc.table([*columns, "perplexity reduction", "CI"], rows)
    for note in s2.notes:
        doc.p(note)


CLAIM_COLUMNS = [
    "axis",
    "paper",
    "where in the paper",
    *(f"ours {VIEW_LABELS[v]} [CI] ±half-width: word" for v in VIEWS),
]
SYSTEM2_CLAIM_COLUMNS = ["text", "paper", "where in the paper", "ours [CI] ±half-width: word"]


def _claims_section(doc: Doc, claims: Claims, learning: LearningCheck | None) -> None:
    """The paper's numbers beside ours (analysis/claims.py), the words defined once, the learning check."""
    from analysis.claims import ABSTRACT_RATE, PAPER

    doc.h(2, f"Claims: the EBT paper beside this study ({claims.level:.0%} intervals)")
    doc.p(
        f"The relative scaling-rate difference (α_{EBT_LABEL} − α_{TPP_LABEL}) / α_{TPP_LABEL} as the paper "
        f"reports it ({PAPER}) and as this study measures it in each view. Words: "
        + "; ".join(f"{w}: {meaning}" for w, meaning in WORDS.items())
        + ". ±: half the interval's width, the smallest difference this study could have told from zero. "
        "A cell without a word says why: no fit, a fit not identified, no interval, or no verified paper "
        f"number (those are left out, never guessed; the {ABSTRACT_RATE})."
    )
    rows = [
        [a.axis, a.paper.text(), a.paper.source, *(a.cells[v].text() if v in a.cells else "–" for v in VIEWS)]
        for a in claims.axes
    ]
    doc.table(CLAIM_COLUMNS, rows)
    if claims.system2:
        s0 = claims.system2[0]
        mode = MODE_LABELS.get(s0.mode, s0.mode)
        doc.p(
            "System-2: the gain from thinking, as a perplexity reduction relative to no thinking; ours is "
            f"the {EBT_LABEL}'s {mode} at {s0.forward_passes:g} forward passes per token ({TPP_LABEL} cannot "
            "think: 0% by construction)."
        )
        doc.table(
            SYSTEM2_CLAIM_COLUMNS,
            [
                [SPLIT_LABELS.get(s.split, s.split), s.paper.text(), s.paper.source, s.cell.text(digits=1)]
                for s in claims.system2
            ],
        )
    for note in claims.notes:
        doc.p(note)
    if learning is not None:
        doc.p(learning.verdict)


RATE_COLUMNS = [
    "axis",
    "x",
    f"α {EBT_LABEL} [CI]",
    f"α {TPP_LABEL} [CI]",
    "relative difference [CI]",
    "significant",
    "verdict",
]


def _rates_section(doc: Doc, an: Analysis) -> None:
    doc.h(2, "Scaling rates")
    if not an.axes:
        doc.p("The table holds no trials on any known axis.")
        return
    rows = []
    for c in an.axes:
        r = c.rate
        if r is None:
            why = "; ".join(f"{family_label(f)}: {n}" for f, n in c.notes.items()) or "no comparison"
            rows.append([c.axis, c.x_col, "–", "–", "–", "–", why])
            continue
        relative = f"{pct(r.relative.value)} [{pct(r.relative.lo)}, {pct(r.relative.hi)}]"
        rows.append(
            [
                c.axis,
                c.x_col,
                f"{fmt(r.ebt.value)} {fmt_ci(r.ebt)}",
                f"{fmt(r.tpp.value)} {fmt_ci(r.tpp)}",
                relative,
                "yes" if r.significant else "no",
                r.verdict,
            ]
        )
    doc.table(RATE_COLUMNS, rows)


VIEW_COLUMNS = [
    "axis",
    "view",
    "x",
    "largest common x",
    f"{EBT_LABEL} vs {TPP_LABEL} there [CI]",
    "ahead",
    "relative α difference [CI]",
    "slopes differ",
    "backtest flags",
]


def _ahead(c: AxisComparison) -> str:
    r = c.gap.relative if c.gap is not None else None
    if r is None or not (math.isfinite(r.lo) and math.isfinite(r.hi)):
        return "–"
    return EBT_LABEL if r.hi < 0 else TPP_LABEL if r.lo > 0 else "neither"


def _view_row(c: AxisComparison) -> list[str]:
    label = VIEW_LABELS[c.view]
    flags = ", ".join(family_label(f) for f in c.flagged) or "none"
    if c.rate is None or c.gap is None:
        why = "; ".join(c.notes.values()) or "no comparison"
        return [c.axis, label, c.x_col, "–", "–", "–", "–", "–", why]
    r, g = c.rate.relative, c.gap.relative
    return [
        c.axis,
        label,
        c.x_col,
        fmt(c.gap.x),
        f"{pct(g.value)} [{pct(g.lo)}, {pct(g.hi)}]",
        _ahead(c),
        f"{pct(r.value)} [{pct(r.lo)}, {pct(r.hi)}]",
        "yes" if c.rate.significant else "no",
        flags,
    ]


def _views_section(doc: Doc, an: Analysis, trials: pd.DataFrame, plot_dir: Path) -> None:
    doc.h(2, "Equal compute and equal time")
    n_exec = int((trials["train_flops_source"] == "executed").sum())
    doc.p(
        "Every axis is also fitted against what its trials cost: train_flops, the training FLOPs each "
        "trial executed (inner optimisation steps and second-order backward included; the executed count "
        f"for {n_exec} of {len(trials)} rows, the study convention `flops` for the others, which equals it "
        "unless an EBT reuses observed keys/values), and device_seconds, measured training wall-clock times "
        "workers (optimizer steps only), comparable within one sweep on one kind of hardware. Per view: "
        "which family has the lower loss at the largest x both reached (paired bootstrap CI of the relative "
        "difference) and whether the fitted slopes differ."
    )
    rows = [_view_row(c) for c in an.axes]
    for vs in an.views.values():
        rows += [_view_row(c) for c in vs]
    doc.table(VIEW_COLUMNS, sorted(rows, key=lambda r: _axis_rank(an, r[0])))
    for vs in an.views.values():
        for c in vs:
            if c.fits:
                path = plot_dir / f"{c.axis}_{c.view}_fit.png"
                _figure(doc, plots.plot_axis_fit(c), path, f"{c.axis} axis {VIEW_LABELS[c.view]}")


def _axis_rank(an: Analysis, axis: str) -> int:
    return [c.axis for c in an.axes].index(axis)


BACKTEST_COLUMNS = [
    "axis",
    "view",
    "family",
    "held-out x",
    "train points",
    "observed",
    "predicted [interval]",
    "error [interval]",
    "flagged",
]


def _backtest_section(doc: Doc, an: Analysis) -> None:
    doc.h(2, "Backtests")
    doc.p(
        "Each family's law, refitted without the points at its largest x (all seeds), predicts them; the "
        "interval joins the refit's bootstrap with the scatter of a configuration around the law (t "
        "distribution). A held-out point outside it is flagged: that law's extrapolation is not to be "
        "trusted. Needs 5 distinct x."
    )
    rows = []
    for c in [*an.axes, *(c for vs in an.views.values() for c in vs)]:
        for fam, b in c.backtests.items():
            rows.append(
                [
                    c.axis,
                    VIEW_LABELS[c.view],
                    family_label(fam),
                    fmt(b.x_holdout),
                    str(b.n_train),
                    fmt(b.observed),
                    f"{fmt(b.predicted.value)} {fmt_ci(b.predicted)}",
                    f"{pct(b.error.value)} [{pct(b.error.lo)}, {pct(b.error.hi)}]",
                    "FLAGGED" if b.flagged else "no",
                ]
            )
    for fam, co in an.compute.items():
        b = co.backtest
        if b is not None:
            rows.append(
                [
                    "flops grid",
                    "largest budget held out",
                    family_label(fam),
                    b.where,
                    str(b.n_train),
                    fmt(b.observed),
                    f"{fmt(b.predicted.value)} {fmt_ci(b.predicted)}",
                    f"{pct(b.error.value)} [{pct(b.error.lo)}, {pct(b.error.hi)}]",
                    "FLAGGED" if b.flagged else "no",
                ]
            )
    if rows:
        doc.table(BACKTEST_COLUMNS, rows)
    else:
        doc.p("No family has 5 distinct x on any axis: nothing to backtest.")


def _seed_noise_section(doc: Doc, an: Analysis) -> None:
    doc.h(2, "Seed noise")
    noise = an.seed_noise
    if noise.empty or not (noise["multi_seed_configs"] > 0).any():
        doc.p(
            "One seed per configuration: the intervals carry no seed-to-seed variation beyond the points' "
            "scatter."
        )
        return
    doc.p(
        "Seeds of one configuration are not independent evidence about a law: the bootstrap resamples "
        "configurations (all seeds of one together), and the plots show each configuration's spread. "
        "sd log y is the standard deviation of log loss across a configuration's seeds (about the relative "
        "spread)."
    )
    rows = [
        [
            r.axis,
            family_label(r.family),
            r.configs,
            r.multi_seed_configs,
            r.max_seeds,
            fmt(r.median_sd_log),
            fmt(r.max_sd_log),
        ]
        for r in noise.itertuples()
    ]
    doc.table(
        ["axis", "family", "configs", "with several seeds", "most seeds", "median sd log y", "max sd log y"],
        rows,
    )


def _design_section(doc: Doc, rounds: pd.DataFrame, plot_dir: Path) -> None:
    check_round_frame(rounds)
    doc.h(2, "Design: adaptive rounds")
    stop = next((s for s in reversed(rounds["stop"].tolist()) if s), "")
    doc.p(
        "After the sweep, `sweep extend` added trials in rounds: each round measured the verdict's interval, "
        "then added the trials expected to narrow it most per training FLOP (new axis values or another "
        f"seed, either family). Stopped: {stop or 'not yet (rounds still to run)'}."
    )
    _figure(doc, plot_rounds(rounds), plot_dir / "design.png", "design: interval width against FLOPs added")
    rows = [
        [
            r["axis"],
            str(r["round"]),
            fmt(r["flops_before"]),
            fmt(r["width"]),
            r["added"] or "–",
            fmt(r["expected_width"]),
            fmt(r["flops"]),
        ]
        for r in rounds.to_dict("records")
    ]
    doc.table(
        [
            "axis",
            "round",
            "FLOPs added before",
            "width",
            "trials added (why)",
            "expected width after",
            "their FLOPs",
        ],
        rows,
    )


def _tuning_section(doc: Doc, tuning: pd.DataFrame, plot_dir: Path) -> None:
    check_tuning_frame(tuning)
    doc.h(2, "Tuning")
    doc.p(
        "Before the sweep, each family was tuned at each model size: sampled configurations, trained on a "
        "fraction of the budget, early-stopped by ASHA on validation loss. The sweep trains the choice: the "
        "lowest final loss among the trials that trained their whole tuning budget."
    )
    _figure(doc, plot_tuning(tuning), plot_dir / "tuning.png", "tuning: loss against each searched value")
    rows = []
    for r in tuning_rows(tuning):
        chosen = ", ".join(f"{k} {fmt(v)}" for k, v in r["chosen"].items()) or "none finished"
        outcomes = ", ".join(f"{n} {s}" for s, n in r["by_status"].items())
        warning = "; ".join(
            f"{k} at the {side} edge of its range: widen it" for k, side in r["edges"].items()
        )
        loss = fmt(r["val_loss"]) if r["val_loss"] is not None else ""
        rows.append([family_label(r["family"]), r["size"], chosen, loss, outcomes, warning])
    doc.table(["family", "size", "chosen", "val loss", "trials", "warning"], rows)


def _excluded_section(doc: Doc, excluded: pd.DataFrame) -> None:
    doc.h(2, "Excluded trials")
    if excluded.empty:
        doc.p("None: every trial finished with a usable result.")
    else:
        doc.table(list(excluded.columns), excluded.astype(str).to_numpy().tolist())


def _provenance_section(doc: Doc, provenance: dict) -> None:
    doc.h(2, "Provenance")
    simple = [[str(k), str(v)] for k, v in provenance.items() if not isinstance(v, dict | list | tuple)]
    nested = {k: v for k, v in provenance.items() if isinstance(v, dict | list | tuple)}
    if simple:
        doc.table(["key", "value"], simple)
    for key, value in nested.items():
        doc.h(3, str(key))
        doc.pre(json.dumps(value, indent=2, default=str, sort_keys=True))
    if not provenance:
        doc.p("No provenance given.")


def _comparison_summary(c: AxisComparison) -> dict[str, Any]:
    """One view of one axis, as summary.json carries it (keys documented in docs/analysis.md)."""
    entry: dict[str, Any] = {"x": c.x_col, "fits": {f: fit.to_dict() for f, fit in c.fits.items()}}
    entry["notes"] = c.notes
    entry["missing_x"] = c.missing_x
    if c.rate is not None:
        entry["relative_exponent_difference"] = c.rate.relative.to_dict()
        entry["significant"] = c.rate.significant
        entry["verdict"] = c.rate.verdict
    if c.gap is not None:
        entry["gap"] = {
            "x": c.gap.x,
            "relative": c.gap.relative.to_dict(),
            "difference": c.gap.difference.to_dict(),
            "ahead": _ahead(c),
            "verdict": c.gap_verdict,
        }
    if c.extrapolation is not None:
        e = c.extrapolation
        entry["extrapolation"] = {"x": e.x, **{f: p.to_dict() for f, p in e.predictions.items()}}
    if c.crossover is not None:
        entry["crossover"] = {
            "x": c.crossover.x,
            "lo": c.crossover.lo,
            "hi": c.crossover.hi,
            "fraction": c.crossover.fraction,
            "lower_after": c.crossover.lower_after,
        }
    entry["backtests"] = {f: b.to_dict() for f, b in c.backtests.items()}
    entry["backtest_notes"] = c.backtest_notes
    return entry


def _summary(an: Analysis) -> dict[str, Any]:
    axes = {}
    for i, c in enumerate(an.axes):
        entry = _comparison_summary(c)
        entry["views"] = {v: _comparison_summary(vs[i]) for v, vs in an.views.items()}
        entry["seed_noise"] = (
            an.seed_noise[an.seed_noise["axis"] == c.axis].drop(columns="axis").to_dict(orient="records")
        )
        axes[c.axis] = entry
    compute = {
        f: {
            "chinchilla": co.chinchilla.to_dict() if co.chinchilla else None,
            "grid_law": resolve_law(an.options.grid_form).describe(),
            "backtest": co.backtest.to_dict() if co.backtest else None,
            "allocation": co.allocation,
            "isoflop": {k: v.to_dict() for k, v in co.isoflop.exponents.items()} if co.isoflop else None,
            "notes": co.notes,
        }
        for f, co in an.compute.items()
    }
    return {
        "first_screen": an.claims.first_screen() if an.claims is not None else [],
        "headline": _headline(an),
        "claims": an.claims.to_dict() if an.claims is not None else None,
        "learning": an.learning.to_dict() if an.learning is not None else None,
        "y": an.options.y,
        "form": an.options.form,
        "level": an.options.level,
        "bootstrap": an.options.bootstrap,
        "axes": axes,
        "compute_optimal": compute,
        "grid_rate": (
            {
                "exponent": an.grid_rate.exponent,
                "relative": an.grid_rate.relative.to_dict(),
                "significant": an.grid_rate.significant,
                "identified": an.grid_rate.identified,
                "verdict": an.grid_rate.verdict,
            }
            if an.grid_rate is not None
            else None
        ),
        "excluded": an.excluded.to_dict(orient="records"),
        "system2": an.system2.to_dict() if an.system2 is not None else None,
    }


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return str(v)


def write_report(
    trials: pd.DataFrame,
    out_dir: Path,
    provenance: dict,
    thinking: pd.DataFrame | None = None,
    options: AnalysisOptions = DEFAULT_OPTIONS,
    *,
    tuning: pd.DataFrame | None = None,
    rounds: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """Analyse a trials table and write report.html (self-contained), report.md, summary.json and
    plots/*.png under out_dir. Returns {"html", "markdown", "summary", "plots_dir"}.

    `options.form` is the per-axis law whose exponent is compared ('power', as the EBT paper's scaling
    rates, or 'saturating'); axes with too few usable points are reported as such, never raised. `tuning`:
    the tuning stage's table (analysis/tuning.py), `rounds` the adaptive rounds' (analysis/rounds.py), each
    reported in a section of its own."""
    out_dir = Path(out_dir)
    plot_dir = out_dir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    an = analyse(trials, options, thinking=thinking)
    tidy = tidy_trials(trials)

    title = f"{EBT_LABEL} vs {TPP_LABEL} scaling report"
    doc = Doc()
    doc.h(1, title)
    if an.claims is not None and an.claims.first_screen():
        doc.lines(an.claims.first_screen())
        _claims_section(doc, an.claims, an.learning)
        doc.h(2, "Every verdict")
    doc.p(_headline(an))
    _rates_section(doc, an)
    if an.axes:
        _views_section(doc, an, tidy, plot_dir)
    for c in an.axes:
        _axis_section(doc, c, an.excluded, tidy, plot_dir)
    if an.compute:
        _compute_section(doc, an, plot_dir)
    if an.system2 is not None:
        _thinking_section(doc, an.system2, plot_dir)
    if an.axes:
        _backtest_section(doc, an)
        _seed_noise_section(doc, an)
    if tuning is not None and not tuning.empty:
        _tuning_section(doc, tuning, plot_dir)
    if rounds is not None and not rounds.empty:
        _design_section(doc, rounds, plot_dir)
    _excluded_section(doc, an.excluded)
    _provenance_section(doc, provenance)

    paths = {
        "html": out_dir / "report.html",
        "markdown": out_dir / "report.md",
        "summary": out_dir / "summary.json",
        "plots_dir": plot_dir,
    }
    paths["html"].write_text(render_html(doc, title), encoding="utf-8")
    paths["markdown"].write_text(render_markdown(doc, out_dir), encoding="utf-8")
    summary = _summary(an)
    if tuning is not None and not tuning.empty:
        summary["tuning"] = tuning_rows(tuning)
    if rounds is not None and not rounds.empty:
        summary["design"] = round_rows(rounds)
    paths["summary"].write_text(json.dumps(summary, indent=2, default=_json_default), encoding="utf-8")
    return paths
