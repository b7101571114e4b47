"""Before a sweep runs: how wide will its verdict's interval be, and how often would it detect a given
difference? Answered by simulating the planned design with the report's own fitting and bootstrap code.

A design is one axis: the distinct x each family trains at and the seeds per x. The truth is the per-axis
power law L = A x^-alpha for each family, the Transformer++ at `alpha` and the EBT at alpha (1 + effect),
with log-normal noise of sd `noise` on every final loss (seeds and configurations alike). Each simulated
study draws the losses, fits both families as the report does (`fit_law`, the cluster bootstrap over a
configuration's seeds) and compares their exponents (`compare_rates`). Over the simulated studies:

- the median width of the 95% interval of the relative exponent difference (EBT vs Transformer++);
- the power: the share of studies whose interval excludes zero on the side of the true difference;
- the smallest detectable difference: the one found with 80% power. For an interval of width w around a
  roughly normal estimate, se = w / (2 z) with z = 1.96, and the difference detected 80% of the time is
  (z + 0.84) se = 0.715 w (at a true difference of zero the rate is the 5% false-positive rate).

Why a simulation rather than a formula: the interval is a percentile bootstrap of a nonlinear fit on a few
points, whose width the textbook standard error does not give; the simulation uses the very code the
report will use, so the plan and the verdict cannot disagree about the method.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from analysis.data import EBT, TPP
from analysis.design import draw_losses, measure
from analysis.errors import FitError
from analysis.fit import Seed, spawn_seeds
from analysis.laws import DEFAULT_LEVEL
from analysis.text import pct, plus_minus

Z80 = 0.8416  # the standard normal's 80% quantile: a test with this much margin beyond z detects 80%


@dataclass(frozen=True)
class DesignPower:
    """What one planned axis can tell, by simulation (see the module docstring)."""

    axis: str
    n_x: dict[str, int]  # distinct x per family
    seeds: int  # seeds per configuration
    alpha: float  # the Transformer++'s true exponent
    effect: float | None  # the true relative difference the power is for (None: width only)
    noise: float  # sd of log loss
    replicates: int  # simulated studies
    bootstrap: int  # resamples per fit (the report uses more: see `note`)
    median_width: float  # of the relative difference's interval
    power: float | None  # share of studies whose interval excludes zero on the effect's side
    failed: int  # simulated studies without an interval (a fit failed)
    level: float = DEFAULT_LEVEL

    @property
    def detectable(self) -> float:
        """The smallest relative difference found with 80% power (normal approximation from the width)."""
        z = _z(self.level)
        return (z + Z80) / (2 * z) * self.median_width

    def line(self) -> str:
        """`data: ±24% wide, +36% detected 64% of the time, smallest detectable ±17%`."""
        text = f"{self.axis}: 95% interval {plus_minus(self.median_width / 2)} wide"
        if self.effect is not None and self.power is not None:
            text += f", {pct(self.effect, 0)} detected {self.power:.0%} of the time"
        return text + f", smallest detectable difference {plus_minus(self.detectable)}"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: a number no simulated study could give (no interval at all) is null, not NaN."""
        record = {
            "axis": self.axis,
            "n_x": self.n_x,
            "seeds": self.seeds,
            "alpha": self.alpha,
            "effect": self.effect,
            "noise": self.noise,
            "replicates": self.replicates,
            "bootstrap": self.bootstrap,
            "level": self.level,
            "median_width": self.median_width,
            "power": self.power,
            "detectable": self.detectable,
            "failed": self.failed,
        }
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}


def _z(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2))


def design_power(
    axis: str,
    x: Mapping[str, np.ndarray],
    *,
    seeds: int,
    alpha: float,
    noise: float,
    effect: float | None = None,
    replicates: int,
    bootstrap: int,
    level: float = DEFAULT_LEVEL,
    seed: Seed = 0,
) -> DesignPower:
    """Simulate `replicates` studies of one axis: `x[family]` the distinct x each family trains at, `seeds`
    per x, the Transformer++'s exponent `alpha`, the EBT's alpha (1 + effect) (effect None: equal rates, and
    no power is reported), log-noise `noise`. See the module docstring for what is returned."""
    xs = {fam: np.unique(np.asarray(x[fam], float)) for fam in (EBT, TPP)}
    if min(v.size for v in xs.values()) < 2 or seeds < 1:
        raise FitError(f"{axis}: a design needs at least 2 distinct x per family and 1 seed")
    true_alpha = {TPP: alpha, EBT: alpha * (1 + (effect or 0.0))}
    draws_seed, *fit_seeds = spawn_seeds(seed, replicates + 1)  # the losses', then each study's fits
    rng = np.random.default_rng(draws_seed)
    x_trials = {fam: np.repeat(xs[fam], seeds) for fam in (EBT, TPP)}  # each x, `seeds` times
    widths, hits, failed = [], 0, 0
    for r in range(replicates):
        y = {fam: draw_losses(x_trials[fam], true_alpha[fam], noise, rng, xs[fam][0]) for fam in (EBT, TPP)}
        try:
            rel = measure(x_trials, y, bootstrap=bootstrap, level=level, seed=fit_seeds[r]).relative
        except FitError:
            failed += 1
            continue
        if not (math.isfinite(rel.lo) and math.isfinite(rel.hi)):
            failed += 1
            continue
        widths.append(rel.hi - rel.lo)
        if effect is not None and effect != 0:
            hits += bool(rel.lo > 0) if effect > 0 else bool(rel.hi < 0)
        elif effect is not None:
            hits += bool(rel.lo > 0 or rel.hi < 0)  # at zero: the false-positive rate
    done = replicates - failed
    return DesignPower(
        axis=axis,
        n_x={fam: int(v.size) for fam, v in xs.items()},
        seeds=seeds,
        alpha=alpha,
        effect=effect,
        noise=noise,
        replicates=replicates,
        bootstrap=bootstrap,
        median_width=float(np.median(widths)) if widths else math.nan,
        power=(hits / done if done else math.nan) if effect is not None else None,
        failed=failed,
        level=level,
    )
