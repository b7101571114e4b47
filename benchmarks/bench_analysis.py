"""Benchmark of the analysis fits: multi-start fit + 1000 bootstrap resamples, chinchilla and single-axis.

    .venv/bin/python benchmarks/bench_analysis.py [--json-out benchmarks/results/analysis.json]
    .venv/bin/python benchmarks/bench_analysis.py --smoke    # every part at tiny sizes, seconds (make test)

Also times two slower ways of bootstrapping in the same run, on fewer resamples, and states the ratio per
resample extrapolated to the full count: one scipy L-BFGS-B per resample warm-started from the full fit
(the usual loop), and the naive loop that reruns the whole multi-start grid for every resample.
Wall-clock times are the best of --repeat runs (the machine may be shared).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Callable

import numpy as np
import scipy
from _bench import bench_parser, parse_bench_args, table
from rich.console import Console
from scipy.optimize import minimize

from analysis.fit import DEFAULT_HUBER_DELTA, fit_law
from analysis.laws import FORMS, Law

DELTA = DEFAULT_HUBER_DELTA
# --smoke: both cases, every way of bootstrapping, one round, a handful of resamples
SMOKE = {
    "bootstrap": 20,
    "points": 40,
    "single_points": 12,
    "loop_boot": 2,
    "naive_boot": 1,
    "naive_boot_single": 1,
    "repeat": 1,
}


def chinchilla_data(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e10), n))
    D = np.exp(rng.uniform(np.log(1e9), np.log(1e12), n))
    y = (1.69 + 406.4 * N**-0.34 + 410.7 * D**-0.28) * np.exp(0.01 * rng.standard_normal(n))
    return np.column_stack([N, D]), y


def saturating_data(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = np.geomspace(1e6, 1e10, n)
    return x[:, None], (1.8 + 80 * x**-0.3) * np.exp(0.01 * rng.standard_normal(n))


def best_times(repeat: int, jobs: dict[str, Callable[[], object]]) -> dict[str, dict[str, float]]:
    """Best wall and CPU seconds of each job over `repeat` interleaved rounds: on a shared machine the
    minimum is the least-disturbed run, and interleaving exposes every job to the same load."""
    best = {name: {"wall_s": math.inf, "cpu_s": math.inf} for name in jobs}
    for _ in range(repeat):
        for name, job in jobs.items():
            w, c = time.perf_counter(), time.process_time()
            job()
            best[name]["wall_s"] = min(best[name]["wall_s"], time.perf_counter() - w)
            best[name]["cpu_s"] = min(best[name]["cpu_s"], time.process_time() - c)
    return best


def scipy_fit(
    law: Law, start: np.ndarray, lx: np.ndarray, ly: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, float]:
    def fun(t: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = law.objective(t[None, :], lx, ly, w[None, :], DELTA)
        return float(f[0]), g[0]

    res = minimize(
        fun, start, jac=True, method="L-BFGS-B", options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-12}
    )
    return res.x, float(res.fun)


def loop_bootstrap(
    law: Law, X: np.ndarray, y: np.ndarray, n_boot: int, starts: np.ndarray, seed: int
) -> None:
    """Reference loop: one scipy fit per (resample, start); `starts` is the warm start or the whole grid."""
    lx = np.log(X)
    lx = lx - lx.mean(axis=0)
    ly = np.log(y)
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        w = rng.multinomial(y.size, np.full(y.size, 1.0 / y.size)).astype(float)
        min((scipy_fit(law, s, lx, ly, w) for s in starts), key=lambda r: r[1])


def bench_case(
    name: str, form: str, X: np.ndarray, y: np.ndarray, args: argparse.Namespace, naive_boot: int
) -> dict:
    law = FORMS[form]
    full = fit_law(X, y, form, bootstrap=0)
    warm = law.recentre(full.theta[None, :], np.log(X).mean(axis=0))  # natural -> centred coordinates
    grid = law.start_grid(np.log(y))
    times = best_times(
        args.repeat,
        {
            "fit": lambda: fit_law(X, y, form, bootstrap=0),
            "fit_plus_bootstrap": lambda: fit_law(X, y, form, bootstrap=args.bootstrap, seed=0),
            "scipy_warm_loop": lambda: loop_bootstrap(law, X, y, args.loop_boot, warm, 1),
            "naive_multistart_loop": lambda: loop_bootstrap(law, X, y, naive_boot, grid, 2),
        },
    )
    counts = {
        "batched": args.bootstrap,
        "scipy_warm_loop": args.loop_boot,
        "naive_multistart_loop": naive_boot,
    }
    out: dict = {
        "case": name,
        "form": form,
        "n_points": int(y.size),
        "n_starts": int(grid.shape[0]),
        "bootstrap": args.bootstrap,
        "measured_resamples": counts,
        "times": times,
    }
    for clock in ("wall_s", "cpu_s"):
        boot = max(times["fit_plus_bootstrap"][clock] - times["fit"][clock], 1e-9)
        per = {"batched": boot / args.bootstrap}
        per |= {k: times[k][clock] / counts[k] for k in ("scipy_warm_loop", "naive_multistart_loop")}
        out[clock] = {
            "fit": times["fit"][clock],
            "fit_plus_bootstrap": times["fit_plus_bootstrap"][clock],
            "bootstrap_only": boot,
            "per_resample_ms": {k: 1e3 * v for k, v in per.items()},
            "bootstrap_extrapolated_s": {k: v * args.bootstrap for k, v in per.items()},
            "speedup_vs_scipy_warm_loop": per["scipy_warm_loop"] / per["batched"],
            "speedup_vs_naive_multistart_loop": per["naive_multistart_loop"] / per["batched"],
        }
    return out


def main() -> None:
    parser = bench_parser(__doc__, "analysis.json")
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--points", type=int, default=250, help="chinchilla points")
    parser.add_argument("--single-points", type=int, default=40, help="single-axis (saturating) points")
    parser.add_argument("--loop-boot", type=int, default=50, help="resamples timed for the warm scipy loop")
    parser.add_argument("--naive-boot", type=int, default=2, help="chinchilla resamples for the naive loop")
    parser.add_argument("--naive-boot-single", type=int, default=50, help="single-axis naive-loop resamples")
    parser.add_argument("--repeat", type=int, default=3)
    args = parse_bench_args(parser, SMOKE)

    rng = np.random.default_rng(0)
    load_before = os.getloadavg()
    cases = [
        bench_case("chinchilla", "chinchilla", *chinchilla_data(args.points, rng), args, args.naive_boot),
        bench_case(
            "single-axis",
            "saturating",
            *saturating_data(args.single_points, rng),
            args,
            args.naive_boot_single,
        ),
    ]
    result = {
        "smoke": args.smoke,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "note": "loop timings are measured on fewer resamples and extrapolated linearly to --bootstrap",
        "cases": cases,
    }

    console = Console(width=140)
    columns = (
        "case",
        "points",
        "starts",
        "fit s",
        "fit + bootstrap s",
        "bootstrap ms/resample",
        "warm scipy loop s*",
        "naive loop s*",
        "speedup vs warm* / naive*",
    )
    title = f"analysis fits, {args.bootstrap} bootstrap resamples (best of {args.repeat} rounds)"
    grid = table(title, columns, left=("case",))
    for c in cases:
        for clock in ("wall_s", "cpu_s"):
            t = c[clock]
            ex = t["bootstrap_extrapolated_s"]
            grid.add_row(
                f"{c['form']} ({clock[:-2]})",
                str(c["n_points"]),
                str(c["n_starts"]),
                f"{t['fit']:.2f}",
                f"{t['fit_plus_bootstrap']:.2f}",
                f"{t['per_resample_ms']['batched']:.2f}",
                f"{ex['scipy_warm_loop']:.1f}",
                f"{ex['naive_multistart_loop']:.0f}",
                f"{t['speedup_vs_scipy_warm_loop']:.1f}x / {t['speedup_vs_naive_multistart_loop']:.0f}x",
            )
    console.print(grid)
    console.print(
        "* loops timed on "
        + "; ".join(
            f"{c['case']}: {c['measured_resamples']['scipy_warm_loop']} (warm) and "
            f"{c['measured_resamples']['naive_multistart_loop']} (naive) resamples"
            for c in cases
        )
        + f", extrapolated linearly to {args.bootstrap}. wall = elapsed, cpu = this process's CPU time."
    )
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
