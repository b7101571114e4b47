"""The planner's time estimate (`orchestrator.sweep.plan`) against measured training time on the CPU smoke
sweeps.

    .venv/bin/python benchmarks/bench_planner.py [--json-out benchmarks/results/planner.json]
    .venv/bin/python benchmarks/bench_planner.py --specs sweeps/smoke-params.yaml --steps 20 --passes 1
    .venv/bin/python benchmarks/bench_planner.py --large        # + paper shapes d128/256, context 256
    .venv/bin/python benchmarks/bench_planner.py --smoke        # 2 trials, 3 steps each (make test)

Every distinct trial of the specs (default: smoke-params, smoke-depth, smoke-batch) is planned with
`orchestrator.sweep.plan.plan` (throughput calibrated here, per spec, as `ebtscale sweep plan SPEC` does) and
trained (all of it, or its first --steps optimizer steps) in a fresh process with 1 torch thread (a sweep
worker with cpus_per_worker=1), through the trainer's own `Trial._train_step`: the code whose time the
trainer sums into train_time_s (no MLflow, no evaluation or checkpoints, which train_time_s leaves out
too). EBT trials are measured with reuse_observed_kv false and true (--ebt-reuse), whatever the spec or the
config default says.

Per trial: the steps after the first are split into --rounds rounds and the measured time per step is the
mean of the fastest round (best of rounds: the least disturbed by other load on a shared machine); the plain
mean, the first step and the main thread's CPU time are recorded too. Every trial is trained --passes times,
in passes over all trials one after the other (a burst of other load then spoils at most one pass of a
trial; the best pass is kept), and before each run the benchmark waits up to --quiet-wait seconds for the
other processes' load to drop below 0.3 cores. Planned time per step = the plan's seconds / total_steps.
ratio = measured / planned per row; total = sum of (measured per step x total_steps) / sum of the plan's
seconds over the rows, i.e. the sweep's train_time_s extrapolated from the steps run. The base trial that
all smoke specs share is trained once (marked "shared" in the later specs, counted once in the overall
total). Target (issue): every row and the total within 25%.

`--large` adds the paper's smallest shapes (d_model 128/256, 2/4 layers, context 256, micro-batch 8/4,
ZeRO-1), a few steps each, planned as one group: an extrapolation check, outside the target.
A least-squares refit of the time model's coefficients (`orchestrator.sweep.plan.time_terms`) on the measured
rows is printed too: what to put in `orchestrator/sweep/plan.py` for another machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from _bench import (
    REPO,
    LoadMonitor,
    bench_parser,
    console,
    cpu_environment,
    machine_info,
    parse_bench_args,
    print_targets,
    run_child,
    sample_busy_cores,
    table,
    write_json,
)

cpu_environment()

DEFAULT_SPECS = ("smoke-params", "smoke-depth", "smoke-batch")
TARGET_ERROR = 0.25  # issue: planner estimates within 25%
LARGE_SHAPES = {128: (2, 2, 8), 256: (4, 4, 4)}  # d_model -> n_layers, n_heads, micro-batch
# --smoke: one EBT (reuse_observed_kv) and one Transformer++ trial of one spec, 3 steps each, one pass, no
# waiting for quiet. Left out: the refit (it needs 5 rows, a process each) and --large (paper shapes: minutes)
SMOKE = {
    "specs": str(REPO / "sweeps" / "smoke-params.yaml"),
    "d_models": "32",
    "steps": 3,
    "rounds": 1,
    "ebt_reuse": "true",
    "passes": 1,
    "quiet_wait": 0,
}


# ---------------------------------------------------------------------------------------------- child


def child_main(cfg_json: str, steps: int, out: str) -> None:
    """Build the trial and time `steps` optimizer steps; writes {"step_s": [...], "cpu_s": [...]} (wall and
    main-thread CPU seconds; CPU time is recorded, not judged: see benchmarks/README.md) to out/times.json."""
    import torch

    torch.set_num_threads(1)
    from orchestrator.config import TrialConfig
    from orchestrator.train.trainer import Trial

    cfg = TrialConfig.model_validate_json(cfg_json)
    trial = Trial(cfg.model_copy(update={"trial_dir": str(Path(out) / "trial")}), None, progress=False)
    step_s, cpu_s = [], []
    for step in range(steps):
        start, cpu = time.perf_counter(), time.thread_time()
        trial._train_step(step)
        step_s.append(time.perf_counter() - start)
        cpu_s.append(time.thread_time() - cpu)
    Path(out, "times.json").write_text(json.dumps({"step_s": step_s, "cpu_s": cpu_s}))


# ---------------------------------------------------------------------------------------------- parent


def with_reuse(t: Any, reuse: bool) -> Any:
    """The planned trial with its EBT's reuse_observed_kv set (name suffixed)."""
    cfg = t.config
    model = cfg.model.model_copy(
        update={"ebt": cfg.model.ebt.model_copy(update={"reuse_observed_kv": reuse})}
    )
    from orchestrator.sweep.expand import TrialCosts

    name = f"{t.name}-{'reuse' if reuse else 'full'}"
    new = cfg.model_copy(update={"model": model, "name": name})
    return dataclasses.replace(t, name=name, id=f"{t.id}-{int(reuse)}", config=new, costs=TrialCosts.of(new))


def spec_trials(spec: Path, reuse: list[bool], d_models: set[int] | None = None) -> list[Any]:
    """Distinct trials of a spec (those of `d_models` only, if given), EBT trials once per reuse_observed_kv
    setting."""
    from orchestrator.sweep.expand import expand, unique_trials
    from orchestrator.sweep.spec import load_spec

    out = []
    for t in unique_trials(expand(load_spec(spec))):
        if d_models is not None and t.config.model.d_model not in d_models:
            continue
        out += [with_reuse(t, r) for r in reuse] if t.family == "ebt" else [t]
    return out


def large_trials(reuse: list[bool], out: Path) -> list[Any]:
    from model.family_ids import FAMILY_IDS
    from orchestrator.config import parse_trial_config
    from orchestrator.sweep.expand import PlannedTrial, TrialCosts

    trials = []
    for family in ("transformer_pp", "ebt"):
        for d, (layers, heads, micro) in LARGE_SHAPES.items():
            cfg = parse_trial_config(
                {
                    "name": f"{FAMILY_IDS[family].tag}-d{d}-L{layers}-S256",
                    "model": {
                        "family": family,
                        "d_model": d,
                        "n_layers": layers,
                        "n_heads": heads,
                        "vocab_size": 512,
                        "context_length": 256,
                    },
                    "data": {"source": "stdlib", "tokenizer": "bpe", "vocab_size": 512},
                    "train": {
                        "tokens": micro * 256 * 100,
                        "global_batch_size": micro,
                        "micro_batch_size": micro,
                    },
                    "deepspeed": {"zero_stage": 1, "precision": "fp32"},
                    "resources": {"num_workers": 1, "cpus_per_worker": 1},
                    "output_dir": str(out),
                }
            )
            t = PlannedTrial(
                cfg.config_hash(),
                cfg.name,
                "large",
                family,
                "large",
                0,
                d,
                None,
                "large",
                cfg.name,
                cfg,
                TrialCosts.of(cfg),
            )
            trials += [with_reuse(t, r) for r in reuse] if family == "ebt" else [t]
    return trials


def measure(cfg: Any, steps: int, root: Path) -> dict[str, Any]:
    out = root / cfg.name
    proc = run_child(__file__, cfg, steps, out)
    times = out / "times.json"
    if proc.returncode != 0 or not times.is_file():
        return {"error": (proc.stderr or proc.stdout)[-2000:], "returncode": proc.returncode}
    return json.loads(times.read_text())


def best_of_rounds(step_s: list[float], rounds: int) -> float:
    """Mean of the fastest of `rounds` consecutive groups of the steps after the first."""
    rest = step_s[1:] or step_s
    size = max(1, len(rest) // rounds)
    groups = [rest[i : i + size] for i in range(0, len(rest) - size + 1, size)]
    return min(sum(g) / len(g) for g in groups)


REGRESSORS = ("step", "layer_passes", "attention_elements", "executed_flops")


def time_model_features(cfg: Any) -> dict[str, float]:
    """The time model's regressors for one optimizer step (`orchestrator.sweep.plan.time_terms`)."""
    from orchestrator.sweep import plan

    return {"step": 1.0, **plan.time_terms(cfg)}


def refit(rows: list[dict[str, Any]], gemm_rate: float) -> dict[str, Any]:
    """Least squares (relative error) of measured per-step times on the time model's regressors: the
    coefficients `orchestrator/sweep/plan.py` would need to match these rows."""
    import numpy as np

    X = np.array([[r["features"][n] for n in REGRESSORS] for r in rows])
    y = np.array([r["measured_step_s"] for r in rows])
    coef, *_ = np.linalg.lstsq(X / y[:, None], np.ones_like(y), rcond=None)
    ratios = y / (X @ coef)
    return {
        "rows": [r["trial"] for r in rows],
        "STEP_OVERHEAD_S": coef[0],
        "PASS_OVERHEAD_S": coef[1],
        "MATH_ATTENTION_S_PER_ELEMENT": coef[2],
        "effective_flops_per_s": 1 / coef[3],
        "CALIBRATION_EFFICIENCY": 1 / coef[3] / gemm_rate,
        "ratios": [float(x) for x in ratios],
    }


def planned_rows(trials: list[Any], group: str) -> list[dict[str, Any]]:
    """Plan `trials` as one sweep (calibrated here, as `ebtscale sweep plan` does): one row per distinct
    trial, with its config and planned time."""
    from orchestrator.sweep.plan import plan

    p = plan(trials)
    rows = []
    for r in p.unique_rows:
        cfg = r.trial.config
        rows.append(
            {
                "group": group,
                "trial": r.trial.name,
                "id": r.trial.id,
                "config": cfg,
                "family": r.trial.family,
                "reuse_observed_kv": cfg.model.ebt.reuse_observed_kv if cfg.model.family == "ebt" else None,
                "total_steps": r.steps,
                "micro_batches": cfg.grad_accum_steps,
                "flops_per_step": r.flops / r.steps,
                "throughput_flops_per_worker": p.throughput_flops,
                "planned_s": r.seconds,
                "planned_step_s": r.seconds / r.steps,
                "features": time_model_features(cfg),
            }
        )
    return rows


def wait_for_quiet(max_wait_s: float, threshold: float = 0.3) -> float:
    """Wait (up to max_wait_s) until other processes keep fewer than `threshold` cores busy (sampled over
    1 s while this process idles); returns the last sample."""
    deadline = time.monotonic() + max_wait_s
    busy = sample_busy_cores(1.0)
    while busy > threshold and time.monotonic() < deadline:
        busy = sample_busy_cores(5.0)
    return busy


def measure_rows(rows: list[dict[str, Any]], args: argparse.Namespace, root: Path) -> None:
    """Train every distinct trial once per pass (fresh process each time), passes one after the other so that
    a burst of other load spoils at most one of a trial's passes; fills each row's measurements. The base
    trial that the smoke specs share is trained once: later rows with its id are marked shared."""
    runs: dict[str, list[dict[str, Any]]] = {}
    first_row: dict[str, dict[str, Any]] = {}
    for row in rows:
        first_row.setdefault(row["id"], row)
    for n in range(args.passes):
        for trial_id, row in first_row.items():
            steps = args.large_steps if row["group"] == "large" else args.steps
            steps = steps if steps > 0 else row["total_steps"]
            busy = wait_for_quiet(args.quiet_wait) if args.quiet_wait > 0 else float("nan")
            result = measure(row["config"], steps, root / f"pass{n}" / row["group"])
            result["busy_cores_before"] = busy
            if "error" not in result:
                rounds = 1 if row["group"] == "large" else args.rounds
                result["best_round_s"] = best_of_rounds(result["step_s"], rounds)
                console().print(
                    f"pass {n + 1}/{args.passes} {row['trial']}: {result['best_round_s'] * 1e3:.1f} ms/step, "
                    f"{row['planned_step_s'] * 1e3:.1f} planned (other load before: {busy:.2f} cores)"
                )
            runs.setdefault(trial_id, []).append(result)
    for row in rows:
        row["shared"] = first_row[row["id"]] is not row
        ok = [r for r in runs[row["id"]] if "error" not in r]
        if not ok:
            row.update(runs[row["id"]][-1])
            continue
        best = min(ok, key=lambda r: r["best_round_s"])
        step_s = best["step_s"]
        measured = best["best_round_s"]
        row.update(
            {
                "passes": [r["best_round_s"] for r in ok],
                "busy_cores_before": [r["busy_cores_before"] for r in ok],
                "steps_run": len(step_s),
                "step_s": step_s,
                "cpu_step_s": best["cpu_s"],
                "measured_step_s": measured,
                "mean_step_s": sum(step_s) / len(step_s),
                "first_step_s": step_s[0],
                "ratio": measured / row["planned_step_s"],
                "mean_ratio": sum(step_s) / len(step_s) / row["planned_step_s"],
            }
        )


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if "error" not in r]
    planned = sum(r["planned_s"] for r in ok)
    measured = sum(r["measured_step_s"] * r["total_steps"] for r in ok)
    ratios = [r["ratio"] for r in ok]
    return {
        "rows": len(ok),
        "planned_total_s": planned,
        "measured_total_s": measured,
        "total_ratio": measured / planned if planned else float("nan"),
        "ratio_min": min(ratios, default=float("nan")),
        "ratio_max": max(ratios, default=float("nan")),
        "rows_within_target": sum(abs(x - 1) <= TARGET_ERROR for x in ratios),
    }


def render(result: dict[str, Any]) -> None:
    out = console()
    t = table(
        "planner time per optimizer step vs measured (train_time_s per step, best of rounds)",
        (
            "group",
            "trial",
            "micro-b.",
            "GFLOP/step",
            "planned ms",
            "measured ms",
            "ratio",
            "mean ratio",
            "first ms",
            "trial planned s",
        ),
        left=("group", "trial"),
    )
    for group, summary in result["summary"].items():
        for r in (x for x in result["rows"] if x["group"] == group):
            if "error" in r:
                t.add_row(group, r["trial"], "error")
                continue
            t.add_row(
                group,
                r["trial"] + (" (shared)" if r["shared"] else ""),
                str(r["micro_batches"]),
                f"{r['flops_per_step'] / 1e9:.2f}",
                f"{r['planned_step_s'] * 1e3:.1f}",
                f"{r['measured_step_s'] * 1e3:.1f}",
                f"{r['ratio']:.2f}",
                f"{r['mean_ratio']:.2f}",
                f"{r['first_step_s'] * 1e3:.0f}",
                f"{r['planned_s']:.1f}",
            )
        t.add_row(
            group,
            f"total ({summary['rows_within_target']}/{summary['rows']} rows within 25%)",
            "",
            "",
            "",
            "",
            f"{summary['total_ratio']:.2f}",
            "",
            "",
            f"{summary['planned_total_s']:.1f}",
            style="bold",
        )
        t.add_section()
    out.print(t)
    for label, fit in (("smoke rows", result.get("refit")), ("all rows", result.get("refit_all"))):
        if fit:
            out.print(
                f"refit on the {label}: STEP_OVERHEAD_S {fit['STEP_OVERHEAD_S'] * 1e3:.2f} ms, "
                f"PASS_OVERHEAD_S {fit['PASS_OVERHEAD_S'] * 1e3:.2f} ms, MATH_ATTENTION_S_PER_ELEMENT "
                f"{fit['MATH_ATTENTION_S_PER_ELEMENT'] * 1e9:.2f} ns, CALIBRATION_EFFICIENCY "
                f"{fit['CALIBRATION_EFFICIENCY']:.2f} ({fit['effective_flops_per_s'] / 1e9:.1f} GFLOP/s): "
                f"ratios {min(fit['ratios']):.2f}-{max(fit['ratios']):.2f}"
            )
    print_targets(out, result)


def main() -> None:
    parser = bench_parser(__doc__, "planner.json")
    parser.add_argument(
        "--specs",
        default=",".join(str(REPO / "sweeps" / f"{s}.yaml") for s in DEFAULT_SPECS),
        help="comma-separated sweep specs",
    )
    parser.add_argument("--steps", type=int, default=0, help="optimizer steps per trial (0: the whole trial)")
    parser.add_argument(
        "--rounds", type=int, default=4, help="rounds the steps are split into (best is kept)"
    )
    parser.add_argument(
        "--ebt-reuse", default="false,true", help="EBT reuse_observed_kv settings to measure, e.g. true"
    )
    parser.add_argument(
        "--large", action="store_true", help="add d_model 128/256 at context 256 (outside target)"
    )
    parser.add_argument("--large-steps", type=int, default=4)
    parser.add_argument(
        "--d-models",
        default="",
        help="only the specs' trials of these d_model values, e.g. 32,48 (default: all)",
    )
    parser.add_argument(
        "--passes",
        type=int,
        default=2,
        help="times every trial is trained, one pass after the other (best kept)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60,
        help="before each trial, wait up to this many s for other load to drop below 0.3 cores (0: off)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parse_bench_args(parser, SMOKE)
    if args.child:
        child_main(args.child, args.steps, args.out)
        return

    from orchestrator.sweep.plan import CALIBRATION_EFFICIENCY, calibrate_throughput

    load = LoadMonitor()
    reuse = [s.strip().lower() == "true" for s in args.ebt_reuse.split(",") if s.strip()]
    d_models = {int(d) for d in args.d_models.split(",") if d.strip()} or None
    rows: list[dict[str, Any]] = []
    for spec in args.specs.split(","):
        rows += planned_rows(spec_trials(Path(spec), reuse, d_models), Path(spec).stem)
    with tempfile.TemporaryDirectory(prefix="bench-planner-") as tmp:
        root = Path(tmp)
        if args.large:
            rows += planned_rows(large_trials(reuse, root), "large")
        measure_rows(rows, args, root)
    for row in rows:
        del row["config"]
    groups = dict.fromkeys(r["group"] for r in rows)
    summary = {g: summarise([r for r in rows if r["group"] == g]) for g in groups}
    all_rows = [r for r in rows if "error" not in r and not r["shared"]]
    target_rows = [r for r in all_rows if r["group"] != "large"]
    summary["all smoke"] = summarise(target_rows)
    gemm_rate = calibrate_throughput(m=512, k=64, n=192, threads=1) / CALIBRATION_EFFICIENCY
    result: dict[str, Any] = {
        "benchmark": "planner",
        "machine": machine_info(),
        "args": {k: str(v) for k, v in vars(args).items() if k not in ("child", "out", "json_out")},
        "gemm_flops_per_s": gemm_rate,
        "rows": rows,
        "summary": summary,
        "refit": refit(target_rows, gemm_rate) if len(target_rows) >= 5 else None,
        "refit_all": refit(all_rows, gemm_rate) if len(all_rows) > len(target_rows) else None,
        "load": load.summary(),
    }
    s = summary["all smoke"]
    result["targets"] = [
        {
            "name": f"planner time within {TARGET_ERROR:.0%} of measured train time, every smoke row",
            "value": f"measured/planned {s['ratio_min']:.2f}-{s['ratio_max']:.2f}, "
            f"{s['rows_within_target']}/{s['rows']} rows within",
            "met": s["rows_within_target"] == s["rows"],
        },
        {
            "name": f"planner time within {TARGET_ERROR:.0%} of measured train time, smoke sweeps' total",
            "value": f"measured/planned {s['total_ratio']:.2f}",
            "met": abs(s["total_ratio"] - 1) <= TARGET_ERROR,
        },
    ]
    render(result)
    write_json(args.json_out, result)
    console().print(f"wrote {args.json_out}")


if __name__ == "__main__":
    main()
