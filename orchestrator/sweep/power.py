"""The plan's power section: per axis, what the planned design can tell before anything trains.

Wires the planned trials (their x per family and their seeds) to analysis.power, which simulates the
design with the report's fitting code. The two numbers a simulation needs come from the store when earlier
sweeps are there: the noise (the median spread of log loss between seeds of one configuration, analysis'
seed-noise table) and each axis' Transformer++ exponent (its power-law fit); else the defaults below, and
the plan says which it used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from orchestrator.sweep.plan import Plan
from orchestrator.tracking import resolve_tracking_uri

if TYPE_CHECKING:
    from rich.console import Console

    from analysis.power import DesignPower
    from orchestrator.sweep.spec import SweepSpec

# sd of log final loss between seeds when no earlier sweep says: the demo design's in issue #26 (2%)
DEFAULT_NOISE = 0.02
# the Transformer++'s exponent per axis when the store has none: the power laws of sweeps/study.yaml's
# report (2026-12-07, 2c67f0d, README "The study"); its params exponent (0.010) was not identified and its
# depth exponent was negative, so those axes (and any other) assume DEFAULT_ALPHA
DEFAULT_ALPHAS: dict[str, float] = {"data": 0.073, "batch": 0.058, "flops": 0.091}
DEFAULT_ALPHA = 0.05
REPLICATES = 40  # simulated studies per axis (power within ~±8 points: its Monte-Carlo error)
BOOTSTRAP = 50  # resamples per simulated fit (the report draws 1000: a median width moves by a few %)


@dataclass
class PowerInputs:
    """Noise and exponents for the simulation, and where each came from (for the plan's caption)."""

    noise: float = DEFAULT_NOISE
    noise_source: str = f"default {DEFAULT_NOISE:g} (no earlier sweep with several seeds in the store)"
    alphas: dict[str, float] = field(default_factory=dict)  # measured per axis
    alpha_source: str = "defaults (no earlier sweep in the store)"

    def alpha(self, axis: str) -> float:
        return self.alphas.get(axis, DEFAULT_ALPHAS.get(axis, DEFAULT_ALPHA))


def planned_designs(p: Plan) -> dict[str, tuple[dict[str, np.ndarray], int]]:
    """Per axis: the distinct x of each family (the analysis' x: tokens, batch size, non-embedding
    parameters, layers, the FLOP budget) and the number of seeds per configuration."""
    from analysis.data import AXIS_X

    rows = pd.DataFrame(
        [
            {
                "axis": r.trial.axis,
                "family": r.trial.family,
                "seed": r.trial.seed,
                "tokens": r.tokens,
                "batch_size": r.global_batch,
                "n_params_non_embedding": r.params_non_embedding,
                "n_layers": r.trial.config.model.n_layers,
                "flops": r.trial.flops_budget if r.trial.flops_budget is not None else r.flops,
            }
            for r in p.rows
        ]
    )
    out: dict[str, tuple[dict[str, np.ndarray], int]] = {}
    for axis, grp in rows.groupby("axis", sort=False):
        col = AXIS_X.get(str(axis))
        if col is None:
            continue
        x = {str(fam): np.unique(g[col].to_numpy(float)) for fam, g in grp.groupby("family")}
        out[str(axis)] = (x, int(grp["seed"].nunique()))
    return out


def measured_inputs(trials: pd.DataFrame) -> PowerInputs:
    """Noise and exponents from the finished trials of earlier sweeps (a tidy trials table, any sweeps): per
    axis and family a power law fitted as the report fits it; the noise is the median scatter of log loss
    around those laws (seed-to-seed spread and misfit alike: what the verdict's bootstrap sees), the
    exponents the Transformer++'s."""
    from analysis.compare import axis_points
    from analysis.data import TPP, split_trials, tidy_trials
    from analysis.errors import FitError
    from analysis.fit import fit_law

    out = PowerInputs()
    if trials.empty:
        return out
    ok, _ = split_trials(tidy_trials(trials))
    scatter = []
    for axis in sorted(set(ok["axis"])):
        pts = axis_points(ok, axis)
        for fam, grp in pts[pts["x"] > 0].groupby("family"):
            if grp["x"].nunique() < 3:  # two x fit any power law exactly: no scatter to measure
                continue
            try:
                fit = fit_law(grp["x"].to_numpy(), grp["y"].to_numpy(), "power", bootstrap=0)
            except FitError:
                continue
            scatter.append(float(np.sqrt((fit.residuals**2).sum() / (grp["x"].size - 2))))
            alpha = fit.params["alpha"].value
            if fam == TPP and math.isfinite(alpha) and alpha > 0:
                out.alphas[str(axis)] = alpha
    if scatter:
        out.noise = float(np.median(scatter))
        out.noise_source = (
            f"measured {out.noise:.3g}: the median scatter of log loss around {len(scatter)} power-law fits "
            "(axis and family) of earlier sweeps in the store"
        )
    if out.alphas:
        out.alpha_source = f"fitted to earlier sweeps in the store on {', '.join(sorted(out.alphas))}"
    return out


def plan_power(
    p: Plan,
    inputs: PowerInputs,
    effects: Mapping[str, float | None],
    *,
    replicates: int = REPLICATES,
    bootstrap: int = BOOTSTRAP,
    seed: int = 0,
) -> list[DesignPower]:
    """A DesignPower per planned axis (see analysis.power), at `effects[axis]` (None: width only)."""
    from analysis.errors import FitError
    from analysis.power import design_power

    out = []
    for axis, (x, seeds) in planned_designs(p).items():
        if len(x) < 2:
            continue
        try:
            out.append(
                design_power(
                    axis,
                    x,
                    seeds=seeds,
                    alpha=inputs.alpha(axis),
                    noise=inputs.noise,
                    effect=effects.get(axis),
                    replicates=replicates,
                    bootstrap=bootstrap,
                    seed=seed,
                )
            )
        except FitError:
            continue
    return out


def store_trials(uri: str) -> pd.DataFrame:
    """Every sweep's trials in the store, as one tidy table (empty when there is no store yet)."""
    from orchestrator.sweep.results import SweepNotFound, load_sweep_trials
    from orchestrator.tracking import existing_store, mlflow_client

    try:
        existing_store(uri)
    except FileNotFoundError:
        return pd.DataFrame()
    tables = []
    for exp in mlflow_client(uri).search_experiments():
        try:
            tables.append(load_sweep_trials(uri, exp.name))
        except SweepNotFound:
            continue
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def store_inputs(uri: str) -> PowerInputs:
    """measured_inputs of every sweep in the store at `uri`; the defaults, saying why, when it cannot be
    read (a dry run: a store of another MLflow version or an unreachable server must not stop the plan)."""
    try:
        trials = store_trials(uri)
    except Exception as err:  # any failure to read leaves the defaults, with the reason
        out = PowerInputs()
        why = " ".join(str(err).split())[:160]
        out.noise_source = f"default {DEFAULT_NOISE:g} (the store could not be read: {why})"
        return out
    return measured_inputs(trials)


def power_section(
    sweep: SweepSpec, p: Plan, effect: float | None = None
) -> tuple[list[DesignPower], PowerInputs]:
    """The plan's power section: noise and exponents from earlier sweeps in the sweep's store (else the
    defaults), at `effect` on every axis, or the paper's verified number per axis (else width only)."""
    from analysis.claims import PAPER_RATES

    inputs = store_inputs(resolve_tracking_uri(sweep.output_dir))
    paper = {axis: rate.value for axis, rate in PAPER_RATES.items()}
    effects = {r.trial.axis: effect if effect is not None else paper.get(r.trial.axis) for r in p.rows}
    return plan_power(p, inputs, effects), inputs


def print_power(console: Console, powers: list[DesignPower], inputs: PowerInputs) -> None:
    """The power table under the plan: what each axis' verdict can tell, and what the numbers assume."""
    from rich.table import Table

    from analysis.text import pct, plus_minus

    table = Table(title="power: what each axis can tell (simulated with the report's fitting code)")
    for col in (
        "axis",
        "x per family",
        "seeds",
        "TPP alpha",
        "95% interval",
        "effect",
        "power",
        "detectable",
    ):
        table.add_column(col, justify="left" if col in ("axis", "x per family") else "right")
    for d in powers:
        has_power = d.effect is not None and d.power is not None
        table.add_row(
            d.axis,
            ", ".join(str(n) for n in d.n_x.values()),
            str(d.seeds),
            f"{d.alpha:.3g}",
            plus_minus(d.median_width / 2),
            pct(d.effect, 0) if d.effect is not None else "–",
            f"{d.power:.0%}" if has_power and math.isfinite(d.power) else "–",
            plus_minus(d.detectable),
        )
    first = powers[0] if powers else None
    runs = (
        f"{first.replicates} simulated studies per axis, {first.bootstrap} bootstrap resamples per fit "
        if first
        else ""
    )
    table.caption = (
        f"noise: {inputs.noise_source}; exponents: {inputs.alpha_source}. {runs}(the report draws 1000: "
        "a median width moves by a few %). effect: the paper's number where verified, or --effect; power: "
        "the share of simulated studies whose interval excludes zero on its side; detectable: the "
        "difference found with 80% power."
    )
    console.print(table)
