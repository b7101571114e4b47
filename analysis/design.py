"""Adaptive design: which trials to add so that an axis' verdict narrows the most per training FLOP.

The verdict is the 95% interval of the relative exponent difference r = alpha_ebt / alpha_tpp - 1, a
percentile bootstrap over configurations of each family's power-law fit (analysis.fit: configuration means,
paired draws in analysis.compare). How wide a design leaves it depends on the design, the current exponents
and the noise, not on losses not yet measured: `expected_width` simulates it (least squares on each
configuration's mean log loss, the report's resampling, common random numbers so that two designs differ
only by what differs between them). A batch is chosen greedily, each step taking the candidate with the
largest expected width reduction per training FLOP (its cost, as the caller prices it).

Why a simulation, not the textbook formula se(alpha) = noise / sqrt(sum (u - mean u)^2): that formula
rewards piling seeds at the two ends of the range, and the report's bootstrap over configurations punishes
exactly that (few configurations to resample): on simulated studies of the study's data axis (2026-12-07)
the formula's choices came out 1.5x as wide as the uniform grid (40 studies, fits to every seed), the
simulation's 0.71-0.85x (150 studies, benchmarks/bench_adaptive.py, NOTES.md).

Candidates: for either family, a new x on the caller's grid (in between or beyond what it has, within the
allowed range) or another seed at an x it has, offered only once the family has `min_distinct` distinct x.
The simulation ranks candidates; the verdict itself is always the report's bootstrap interval (`measure`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from analysis.compare import RateComparison, compare_rates
from analysis.data import EBT, TPP
from analysis.errors import FitError
from analysis.fit import ParamEstimate, Seed, fit_law, spawn_seeds
from analysis.laws import DEFAULT_HUBER_DELTA, DEFAULT_LEVEL

FAMILIES: tuple[str, str] = (EBT, TPP)
MIN_DISTINCT = 8  # distinct x per family before another seed is offered (see the module docstring)
NOISE_FLOOR = 1e-3  # the log-noise scoring assumes when the fits leave no scatter to measure
MIN_ALPHA = 1e-3  # an exponent at or below this is taken as this: a flat law's relative se is unbounded
SIM_STUDIES = 32  # simulated studies per expected width
SIM_RESAMPLES = 400  # bootstrap resamples per simulated study
SIM_SEEDS = 64  # seeds per configuration a simulation can hold
FIRST_LOSS = 5.0  # nats at a simulated family's smallest x (the scale does not change a power law's exponent)

# Why a round stops (the words `sweep extend` prints and records)
STOP_TARGET = "target width reached"
STOP_BUDGET = "budget spent"
STOP_NO_GAIN = "no candidate narrows the interval"

Cost = Callable[[str, float], float]  # (family, x) -> training FLOPs of one trial


@dataclass(frozen=True)
class Candidate:
    family: str
    x: float
    cost: float  # training FLOPs of the trial
    kind: str  # "new x" or "seed" (another seed at an x the family has)


@dataclass(frozen=True)
class Choice:
    """A chosen candidate and the expected width of the verdict's interval before and after it."""

    candidate: Candidate
    width_before: float
    width_after: float

    @property
    def gain_per_flop(self) -> float:
        return (self.width_before - self.width_after) / self.candidate.cost


def _x_key(log_x: float) -> int:
    """A stable integer for an x (its log to 6 decimals): the seed of that configuration's draws."""
    return round(log_x * 1e6) % 2**63


def _bootstrap_slopes(
    x: Sequence[float], alpha: float, noise: float, seed: Sequence[int], studies: int, resamples: int
) -> np.ndarray:
    """(studies, resamples) exponents: per simulated study the least-squares slope of each configuration's
    mean log loss (its seeds' mean, as the report fits: analysis.fit.configuration_means) on log x, under
    each bootstrap resample of the configurations (multinomial counts, as the report draws them). NaN where
    a resample keeps a single x.

    Common random numbers: each configuration's seeds draw their noise from a stream keyed by (seed, x), and
    the resampling counts come from a stream keyed by (seed, number of configurations), the configurations
    in order of first appearance. So another seed at an x changes only that x's mean, and every new x is
    judged under the same resamples as any other new x: candidates differ only by what differs between
    them, not by Monte-Carlo noise."""
    u_all = np.log(np.asarray(x, float))
    u, first, counts = np.unique(u_all, return_index=True, return_counts=True)
    order = np.argsort(first)  # configurations in order of first appearance
    u, counts = u[order], counts[order]
    means = np.empty((studies, u.size))  # per study and x: the mean of its seeds' log losses
    for g, (ug, n) in enumerate(zip(u, counts, strict=True)):
        rng = np.random.default_rng([*seed, _x_key(ug)])
        means[:, g] = -alpha * ug + noise * rng.standard_normal((studies, SIM_SEEDS))[:, :n].mean(axis=1)
    rng = np.random.default_rng([*seed, u.size])
    w = rng.multinomial(u.size, np.full(u.size, 1 / u.size), size=resamples)  # (B, G) draws of each x
    with np.errstate(all="ignore"):
        du = u - (w * u).sum(axis=1, keepdims=True) / w.sum(axis=1, keepdims=True)  # (B, G)
        sxx = (w * du**2).sum(axis=1)  # (B,)
        sxy = np.einsum("bg,sg->sb", w * du, means)  # (S, B): the weighted mean of v cancels against du
        return np.where(sxx > 1e-12, -sxy / sxx, np.nan)


def expected_width(
    design: Mapping[str, Sequence[float]],
    alpha: Mapping[str, float],
    noise: float,
    level: float = DEFAULT_LEVEL,
    *,
    studies: int = SIM_STUDIES,
    resamples: int = SIM_RESAMPLES,
    seed: int = 0,
) -> float:
    """The median width, over `studies` simulated studies, of the relative exponent difference's percentile
    interval under the report's resampling (whole configurations, paired draws), for trials at
    `design[family]` (one x per trial), the current exponents and log-noise. inf when a family's trials do
    not pin a slope (under 3 trials or one distinct x). `seed` fixes the draws (see _bootstrap_slopes)."""
    if any(len(design[f]) < 3 or np.unique(np.asarray(design[f], float)).size < 2 for f in FAMILIES):
        return math.inf
    # a NaN exponent (a failed fit) is taken as MIN_ALPHA too
    a = {fam: float(alpha[fam]) if float(alpha[fam]) > MIN_ALPHA else MIN_ALPHA for fam in FAMILIES}
    slopes = {
        fam: _bootstrap_slopes(design[fam], a[fam], noise, (seed, k), studies, resamples)
        for k, fam in enumerate(FAMILIES)
    }
    # a degenerate resample (one x) is NaN in every study: drop its column, as compare_rates drops the pair
    kept = np.isfinite(slopes[EBT][0]) & np.isfinite(slopes[TPP][0])
    with np.errstate(all="ignore"):
        rel = (slopes[EBT][:, kept] - slopes[TPP][:, kept]) / slopes[TPP][:, kept]  # (S, B) paired draws
    if rel.shape[1] < 2:
        return math.inf
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(rel, [tail, 100 - tail], axis=1)
    return float(np.median(hi - lo))


def candidates(
    design: Mapping[str, Sequence[float]], grid: Sequence[float], cost: Cost, min_distinct: int = MIN_DISTINCT
) -> list[Candidate]:
    """Every trial that may be added: per family, each grid x it lacks, and another seed at each x it has
    once it has `min_distinct` distinct x."""
    out = []
    for fam in FAMILIES:
        have = {float(v) for v in design[fam]}
        for x in sorted({float(v) for v in grid}):
            if x not in have:
                out.append(Candidate(fam, x, float(cost(fam, x)), "new x"))
            elif len(have) >= min_distinct:
                out.append(Candidate(fam, x, float(cost(fam, x)), "seed"))
    return out


def choose_batch(
    design: Mapping[str, Sequence[float]],
    grid: Sequence[float],
    cost: Cost,
    alpha: Mapping[str, float],
    noise: float,
    *,
    batch: int,
    budget: float = math.inf,
    min_distinct: int = MIN_DISTINCT,
    level: float = DEFAULT_LEVEL,
) -> list[Choice]:
    """Up to `batch` trials, chosen greedily by expected width reduction per FLOP, costing at most `budget`
    together; fewer (maybe none) when no affordable candidate narrows the interval."""
    current = {fam: [float(v) for v in design[fam]] for fam in FAMILIES}
    if not math.isfinite(expected_width(current, alpha, noise, level)):
        raise FitError("an adaptive round starts from at least 3 trials at 2 or more distinct x per family")
    chosen: list[Choice] = []
    left = budget
    for _ in range(batch):
        now = expected_width(current, alpha, noise, level)
        best: Choice | None = None
        for cand in candidates(current, grid, cost, min_distinct):
            if cand.cost > left or cand.cost <= 0:
                continue
            trial = {**current, cand.family: [*current[cand.family], cand.x]}
            choice = Choice(cand, now, expected_width(trial, alpha, noise, level))
            if not choice.width_after < now:
                continue
            if best is None or choice.gain_per_flop > best.gain_per_flop:
                best = choice
        if best is None:
            break
        chosen.append(best)
        current[best.candidate.family].append(best.candidate.x)
        left -= best.candidate.cost
    return chosen


def measure(
    x: Mapping[str, np.ndarray],
    y: Mapping[str, np.ndarray],
    *,
    bootstrap: int,
    level: float = DEFAULT_LEVEL,
    seed: Seed = 0,
    huber_delta: float = DEFAULT_HUBER_DELTA,
) -> RateComparison:
    """The verdict as the report computes it: a power law per family (the cluster bootstrap over each x's
    seeds) and the paired-bootstrap relative exponent difference. Raises FitError when a fit fails.
    `huber_delta`: the fit's loss, the report's by default (benchmarks/bench_calibration.py compares)."""
    fit_seeds = spawn_seeds(seed, len(FAMILIES))
    fits = {}
    for fam, fit_seed in zip(FAMILIES, fit_seeds, strict=True):
        xf, yf = np.asarray(x[fam], float), np.asarray(y[fam], float)
        fits[fam] = fit_law(
            xf,
            yf,
            "power",
            groups=xf,
            bootstrap=bootstrap,
            level=level,
            seed=fit_seed,
            huber_delta=huber_delta,
        )
    return compare_rates(fits[EBT], fits[TPP], level=level)


def point_fits(x: Mapping[str, np.ndarray], y: Mapping[str, np.ndarray]) -> tuple[dict[str, float], float]:
    """What the next round's scoring assumes: each family's exponent, the least-squares slope of log loss on
    log x (the report's Huber fit agrees at these noise levels; this one is instant and never fails; NaN
    below 2 distinct x), and the log-noise, the pooled scatter of log loss around both lines."""
    alphas, squares, dof = {}, 0.0, 0
    for fam in FAMILIES:
        u, v = np.log(np.asarray(x[fam], float)), np.log(np.asarray(y[fam], float))
        if np.unique(u).size < 2:
            alphas[fam] = math.nan
            continue
        slope, intercept = np.polyfit(u, v, 1)
        alphas[fam] = -float(slope)
        squares += float(((v - intercept - slope * u) ** 2).sum())
        dof += u.size - 2
    return alphas, math.sqrt(squares / dof) if dof > 0 else math.nan


@dataclass(frozen=True)
class Round:
    """One adaptive round: the verdict on the trials so far, what the scoring assumed, the trials to add,
    and, when none is added, why."""

    n_trials: int
    width: float  # the measured (bootstrap) interval's width; NaN when not measured
    relative: ParamEstimate | None  # the relative exponent difference with its interval
    alphas: dict[str, float]
    noise: float
    chosen: list[Choice]
    stop: str | None

    @property
    def cost(self) -> float:
        return sum(c.candidate.cost for c in self.chosen)


def next_round(
    x: Mapping[str, np.ndarray],
    y: Mapping[str, np.ndarray],
    grid: Sequence[float],
    cost: Cost,
    *,
    batch: int,
    budget_left: float,
    target_width: float | None = None,
    bootstrap: int = 0,
    min_distinct: int = MIN_DISTINCT,
    level: float = DEFAULT_LEVEL,
    seed: Seed = 0,
) -> Round:
    """Measure the verdict on the finished trials (`bootstrap` resamples; 0: not measured), stop at
    `target_width`, else choose up to `batch` trials costing at most `budget_left` (choose_batch)."""
    relative, width = None, math.nan
    if bootstrap > 0:
        relative = measure(x, y, bootstrap=bootstrap, level=level, seed=seed).relative
        width = relative.hi - relative.lo
    alphas, noise = point_fits(x, y)
    n_trials = sum(len(x[fam]) for fam in FAMILIES)
    if target_width is not None and width <= target_width:
        return Round(n_trials, width, relative, alphas, noise, [], STOP_TARGET)
    if not math.isfinite(noise) or noise <= 0:
        noise = NOISE_FLOOR
    design = {fam: list(np.asarray(x[fam], float)) for fam in FAMILIES}
    chosen = choose_batch(
        design,
        grid,
        cost,
        alphas,
        noise,
        batch=batch,
        budget=budget_left,
        min_distinct=min_distinct,
        level=level,
    )
    stop = None
    if not chosen:
        offered = candidates(design, grid, cost, min_distinct)
        stop = STOP_BUDGET if offered and all(c.cost > budget_left for c in offered) else STOP_NO_GAIN
    return Round(n_trials, width, relative, alphas, noise, in_measured_units(chosen, width), stop)


def in_measured_units(chosen: list[Choice], width: float) -> list[Choice]:
    """The chosen trials' expected widths rescaled so that the simulated width of the current design equals
    the measured one. The simulation's level is not the verdict's (the report's robust fit is less
    efficient than least squares, and real losses miss a pure power law), so its widths rank candidates but
    would overstate what a round achieves: on the demo's data axis they were about half the next round's
    measured width (README, "Adaptive rounds"). Unchanged when nothing was measured."""
    if not chosen or not (math.isfinite(width) and width > 0):
        return chosen
    k = width / chosen[0].width_before
    return [Choice(c.candidate, c.width_before * k, c.width_after * k) for c in chosen]


def draw_losses(x: np.ndarray, alpha: float, noise: float, rng: np.random.Generator, x0: float) -> np.ndarray:
    """Simulated final losses at `x` (one per trial) under L = FIRST_LOSS (x / x0)^-alpha with log-normal
    noise of sd `noise`: the truth of the power and design simulations."""
    x = np.asarray(x, float)
    return FIRST_LOSS * (x / x0) ** -alpha * np.exp(noise * rng.standard_normal(x.size))
