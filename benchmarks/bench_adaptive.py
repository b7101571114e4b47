"""Benchmark of adaptive design (#26): simulated studies with a known truth, at equal training FLOPs.

    .venv/bin/python benchmarks/bench_adaptive.py [--replicates 200] [--json-out FILE]
    .venv/bin/python benchmarks/bench_adaptive.py --smoke    # every design at tiny sizes, seconds (make test)

The axis is sweeps/study.yaml's data axis: tokens 128K-1.02M, the Transformer++'s exponent 0.073 (its fit
in the study), log-noise 0.02 (the demo design's, issue #26), a trial's cost its tokens times the family's
FLOPs per token (an EBT token ~8x a Transformer++ one). Truths: the EBT's exponent is the Transformer++'s
times (1 + effect) for each effect: no difference, the paper's data-axis claim, and a slower EBT.

Designs, all spending at most the uniform grid's FLOPs:
- uniform: the study's grid, 6 log-spaced x x 2 seeds per family;
- random: the adaptive design's start (3 x per family, 1 seed), then random trials (family, grid x) until
  the budget is spent;
- adaptive: the same start, then rounds of `--batch` trials chosen by analysis.design until it stops;
- adaptive to the grid's width: the same rounds, measuring the verdict after each and stopping once its
  interval is as narrow as the uniform grid's median (the check that stopping on an interval does not bias
  its coverage, and what share of the grid's FLOPs reaching its width takes).
Per design and truth: the median width of the 95% interval of the relative exponent difference (and its
ratio to the uniform grid's), the coverage of the truth, the rate of excluding zero (the false-positive rate
at no difference, the power otherwise), the FLOPs spent (share of the grid's). Every interval is the
report's own (analysis.design.measure: fit_law's cluster bootstrap, compare_rates).
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from _bench import bench_parser, machine_info, parse_bench_args, table, write_json
from rich.console import Console

from analysis.design import FAMILIES, STOP_TARGET, draw_losses, measure, next_round
from analysis.fit import spawn_seeds

EBT, TPP = FAMILIES
LO, HI = 128_000.0, 1_024_000.0
UNIFORM_X = np.geomspace(LO, HI, 6)
GRID = np.geomspace(LO, HI, 21)  # the candidates' x: `sweep extend`'s default of 21 log-spaced points
START_X = GRID[::5]  # 5 x, every fifth of the grid's
FLOPS_PER_TOKEN = {TPP: 1.0, EBT: 8.0}  # relative: only ratios of cost matter
ALPHA_TPP = 0.073
NOISE = 0.02
EFFECTS = (0.0, 0.3598, -0.2)
DESIGNS = ("uniform", "random", "adaptive", "adaptive to the grid's width")
TARGET_RATIO = 0.6  # issue #26: at equal FLOPs the adaptive interval at most 0.6x the grid's
FLOPS_TARGET = 0.4  # ... or the grid's width with at most 0.4x its FLOPs
COVERAGE = (0.93, 0.97)
SMOKE = {"replicates": 3, "bootstrap": 20, "workers": 1}  # --smoke: every design, a few studies


def cost(family: str, x: float) -> float:
    return FLOPS_PER_TOKEN[family] * x


UNIFORM = {fam: np.repeat(UNIFORM_X, 2) for fam in FAMILIES}
BUDGET = sum(cost(fam, v) for fam in FAMILIES for v in UNIFORM[fam])


@dataclass(frozen=True)
class Outcome:
    lo: float
    hi: float
    flops: float
    rounds: int


def _simulate(
    design: str, effect: float, seed: np.random.SeedSequence, bootstrap: int, batch: int, target: float
) -> Outcome | None:
    """One simulated study of `design` at `effect`; None when its verdict has no interval (a failed fit)."""
    draws_seed, fit_seed = seed.spawn(2)
    rng = np.random.default_rng(draws_seed)
    alpha = {TPP: ALPHA_TPP, EBT: ALPHA_TPP * (1 + effect)}

    def losses(fam: str, x: np.ndarray) -> np.ndarray:
        return draw_losses(x, alpha[fam], NOISE, rng, LO)

    if design == "uniform":
        x = {fam: UNIFORM[fam].copy() for fam in FAMILIES}
        y = {fam: losses(fam, x[fam]) for fam in FAMILIES}
        rounds = 0
    else:
        x = {fam: START_X.copy() for fam in FAMILIES}
        y = {fam: losses(fam, x[fam]) for fam in FAMILIES}
        rounds = 0
        if design == "random":
            while True:
                fam, v = FAMILIES[rng.integers(2)], float(GRID[rng.integers(GRID.size)])
                if _spent(x) + cost(fam, v) > BUDGET:
                    break
                x[fam], y[fam] = np.append(x[fam], v), np.append(y[fam], losses(fam, np.array([v])))
        else:
            stop_on_width = design == "adaptive to the grid's width"
            while True:
                r = next_round(
                    x,
                    y,
                    GRID,
                    cost,
                    batch=batch,
                    budget_left=BUDGET - _spent(x),
                    target_width=target if stop_on_width else None,
                    bootstrap=bootstrap if stop_on_width else 0,
                    seed=fit_seed,
                )
                if r.stop == STOP_TARGET and r.relative is not None:
                    return Outcome(r.relative.lo, r.relative.hi, _spent(x), rounds)
                if not r.chosen:
                    break
                rounds += 1
                for c in r.chosen:
                    fam, v = c.candidate.family, c.candidate.x
                    x[fam], y[fam] = np.append(x[fam], v), np.append(y[fam], losses(fam, np.array([v])))
    try:
        rel = measure(x, y, bootstrap=bootstrap, seed=fit_seed).relative
    except Exception:  # a fit that fails is counted, not hidden
        return None
    if not (math.isfinite(rel.lo) and math.isfinite(rel.hi)):
        return None
    return Outcome(rel.lo, rel.hi, _spent(x), rounds)


def _spent(x: dict[str, np.ndarray]) -> float:
    return sum(cost(fam, v) for fam in FAMILIES for v in x[fam])


def _run(args: tuple[str, float, np.random.SeedSequence, int, int, float]) -> Outcome | None:
    return _simulate(*args)


def summarise(design: str, effect: float, outcomes: list[Outcome | None], uniform_width: float) -> dict:
    ok = [o for o in outcomes if o is not None]
    widths = np.array([o.hi - o.lo for o in ok])
    covered = np.mean([o.lo <= effect <= o.hi for o in ok]) if ok else math.nan
    if effect == 0:
        excludes = np.mean([o.lo > 0 or o.hi < 0 for o in ok]) if ok else math.nan
    else:
        excludes = np.mean([(o.lo > 0) if effect > 0 else (o.hi < 0) for o in ok]) if ok else math.nan
    median = float(np.median(widths)) if ok else math.nan
    return {
        "design": design,
        "effect": effect,
        "studies": len(outcomes),
        "failed": len(outcomes) - len(ok),
        "median_width": median,
        "width_ratio": median / uniform_width if uniform_width else math.nan,
        "coverage": float(covered),
        "excludes_zero": float(excludes),
        "flops_share": float(np.mean([o.flops for o in ok]) / BUDGET) if ok else math.nan,
        "rounds": float(np.mean([o.rounds for o in ok])) if ok else math.nan,
    }


def main() -> int:
    p = bench_parser(__doc__, "adaptive.json")
    p.add_argument("--replicates", type=int, default=200, help="simulated studies per design and truth")
    p.add_argument("--bootstrap", type=int, default=200, help="resamples per fit (the report draws 1000)")
    p.add_argument("--batch", type=int, default=4, help="trials an adaptive round adds")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    p.add_argument("--seed", type=int, default=0, help="the simulation's root seed")
    args = parse_bench_args(p, SMOKE)
    console = Console(width=160)
    seeds = iter(spawn_seeds(args.seed, len(DESIGNS) * len(EFFECTS)))
    t0 = time.perf_counter()
    rows, uniform_width = [], {}
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for design in DESIGNS:
            for effect in EFFECTS:
                study_seeds = next(seeds).spawn(args.replicates)
                target = uniform_width.get(effect, math.inf)
                jobs = [(design, effect, s, args.bootstrap, args.batch, target) for s in study_seeds]
                outcomes = list(pool.map(_run, jobs, chunksize=max(1, len(jobs) // (4 * args.workers))))
                row = summarise(design, effect, outcomes, uniform_width.get(effect, math.nan))
                if design == "uniform":
                    uniform_width[effect] = row["median_width"]
                    row["width_ratio"] = 1.0
                rows.append(row)
                console.print(f"  {design}, effect {effect:+.0%}: done ({time.perf_counter() - t0:.0f} s)")
    columns = ["design", "effect", "median width", "vs uniform", "coverage", "excl. zero", "FLOPs", "rounds"]
    t = table(
        f"adaptive design at equal training FLOPs: {args.replicates} simulated studies per row, "
        f"{args.bootstrap} bootstrap resamples per fit",
        [*columns, "failed"],
        left=("design",),
    )
    for r in rows:
        t.add_row(
            r["design"],
            f"{r['effect']:+.0%}",
            f"{r['median_width']:.3f}",
            f"{r['width_ratio']:.2f}x",
            f"{r['coverage']:.1%}",
            f"{r['excludes_zero']:.1%}",
            f"{r['flops_share']:.2f}x",
            f"{r['rounds']:.1f}",
            str(r["failed"]),
        )
    console.print(t)
    verdicts = targets(rows)
    for line in verdicts:
        console.print(line)
    out = {
        "machine": machine_info(),  # the time, the commit, the CPU
        "smoke": args.smoke,
        "replicates": args.replicates,
        "bootstrap": args.bootstrap,
        "batch": args.batch,
        "noise": NOISE,
        "alpha_tpp": ALPHA_TPP,
        "wall_s": time.perf_counter() - t0,
        "rows": rows,
        "targets": verdicts,
    }
    write_json(args.json_out, out)
    console.print(f"wrote {args.json_out}")
    return 0


def targets(rows: list[dict]) -> list[str]:
    """The issue's targets, one line each, judged on this run's rows."""
    lines = []
    adaptive = [r for r in rows if r["design"] == "adaptive"]
    worst = max(r["width_ratio"] for r in adaptive)
    met = "met" if worst <= TARGET_RATIO else "NOT met"
    lines.append(
        f"width at equal FLOPs: adaptive/uniform at most {worst:.2f}x (target <= {TARGET_RATIO}x): {met}"
    )
    stopped = [r for r in rows if r["design"] == "adaptive to the grid's width"]
    share = max(r["flops_share"] for r in stopped)
    met = "met" if share <= FLOPS_TARGET else "NOT met"
    lines.append(
        f"FLOPs to the grid's width: at most {share:.2f}x the grid's (target <= {FLOPS_TARGET}x): {met}"
    )
    cov = [r["coverage"] for r in rows]
    met = "met" if all(COVERAGE[0] <= c <= COVERAGE[1] for c in cov) else "NOT met"
    lines.append(
        f"coverage of the 95% intervals: {min(cov):.1%} to {max(cov):.1%} over every design and truth "
        f"(target {COVERAGE[0]:.0%}-{COVERAGE[1]:.0%}): {met}"
    )
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
