"""The options of one analysis, bundled: what is fitted (`y`, the per-axis law `form`, the grid law
`grid_form`), how its intervals are drawn (`bootstrap` resamples, `seed`, `level`) and how far the
comparison extrapolates.

Why one frozen value: the same seven options travel from a command's flags through the report, each axis
comparison and the fits; as one object they cannot drift apart on the way, and their defaults are written
here once (the fitting conventions themselves stay in analysis/laws.py, numpy-only, so the command line
imports this fast). Low-level fits (`fit_law`, `backtest`, `system2`, ...) keep plain keyword arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from analysis.laws import DEFAULT_BOOTSTRAP, DEFAULT_LEVEL

if TYPE_CHECKING:  # analysis.fit loads scipy: the command line reads the defaults without it
    from analysis.fit import Seed


@dataclass(frozen=True)
class AnalysisOptions:
    """How to analyse a trials table; `dataclasses.replace` derives a variant (e.g. a spawned seed)."""

    y: str = "val_loss"  # the measured quantity fitted
    form: str = "power"  # the per-axis law whose exponent is compared: a FORMS name or an expression in x
    grid_form: str = (
        "chinchilla"  # the law over N, D (or C = 6ND, M = D/N) fitted to each family's flops grid
    )
    bootstrap: int = DEFAULT_BOOTSTRAP  # resamples for the intervals (0: none)
    seed: Seed = 0  # the root of every fit's independent seeds
    level: float = DEFAULT_LEVEL  # confidence level of the intervals
    extrapolate_factor: float = 10.0  # the comparison extrapolates to this multiple of the largest x


DEFAULT_OPTIONS = AnalysisOptions()
