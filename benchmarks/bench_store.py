"""Analysis speed at sweep scale: `sweep plan` and `report` of a synthetic ~10,000-trial sweep.

    .venv/bin/python benchmarks/bench_store.py [--json-out benchmarks/results/store.json]
    .venv/bin/python benchmarks/bench_store.py --trials 1000        # one small size, a quick look
    .venv/bin/python benchmarks/bench_store.py --smoke              # 90 trials, no CLI runs (make test)

The sweep: both families x all five axes (data, batch, params, depth, isoFLOP grid) of tiny models, with as
many seeds as it takes to reach --trials distinct trials (45 per family and seed). Each size is measured in
the same run (default 1,000 and 10,000: the ratio shows how each stage scales).

Plan: the functions `ebtscale sweep plan` calls, in process: `load_spec` (YAML + validation), `expand`,
`plan` (throughput calibration included) and `render_plan` printed by a 200-column rich console into memory;
then the CLI itself once, in a fresh interpreter (`python -m orchestrator.cli sweep plan SPEC`).

Report: a real MLflow sqlite store of the sweep, one parent run and one FINISHED child run per trial, holding
what a trained sweep holds (ensure_runs' tags, the trainer's params, its last metric values and
record_outcome's final metrics and status). The first child is written through the real path
(`RunTracker` + `record_outcome`), the others with one `log_batch` each; the benchmark checks that both
read back with the same keys. val_loss follows a known Chinchilla law per family, L = E + A/N^alpha +
B/D^beta (N = total parameters, D = trained tokens) with 1% log-normal noise, so the fits mean something:
the report's flops-axis Chinchilla fit is compared with the true exponents. Metric histories and trial
artifacts are not written (the report reads neither). Building a store is set-up, not timed; stores are
cached under --cache-dir, keyed by STORE_VERSION and the seed count (--rebuild to force).
Timed: `load_sweep_trials` (MLflow -> DataFrame), `write_report` (--bootstrap resamples), the rest of the
report command ("other": opening the store, provenance, thinking curves, publishing to MLflow), then
`python -m orchestrator.cli report` once. Imports are paid before the first size (the CLI runs include
theirs). In-process stages are the best of --repeat runs (wall clock; the machine may be shared).
"""

from __future__ import annotations

import functools
import importlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from _bench import (
    REPO,
    LoadMonitor,
    bench_parser,
    console,
    cpu_environment,
    machine_info,
    parse_bench_args,
    print_targets,
    table,
    write_json,
)

cpu_environment()
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")

STORE_VERSION = "1"  # bump whenever what build_store writes changes: cached stores are keyed by it
SWEEP = "bench-store"
NOISE = 0.01  # log-normal noise of val_loss
# The synthetic truth, L(N, D) = E + A / N^alpha + B / D^beta per family: the EBT starts worse, scales faster.
LAWS: dict[str, dict[str, float]] = {
    "transformer_pp": {"E": 1.8, "A": 60.0, "alpha": 0.34, "B": 30.0, "beta": 0.30},
    "ebt": {"E": 1.8, "A": 80.0, "alpha": 0.38, "B": 40.0, "beta": 0.33},
}
PLAN_STAGES = ("validate", "expand", "plan", "render")
TARGET_S = 60.0  # a stage slower than this at 10,000 trials is a problem to fix (issue, benchmark 4)
# --smoke: one seed (90 trials), 20 bootstrap resamples, the store built afresh in a temp folder (its build
# is code to check too). Left out: a second size (the scaling line) and the CLI runs (the report's ~20 plots
# cost as much again each time, whatever the size)
SMOKE = {"trials": "90", "bootstrap": 20, "no_cli": True, "cache_dir": None}


def synthetic_spec(seeds: int, output_dir: Path) -> dict[str, Any]:
    """A spec (the schema of sweeps/*.yaml) with 45 distinct trials per family and seed on five axes."""
    return {
        "name": SWEEP,
        "description": "synthetic sweep for benchmarks/bench_store.py",
        "families": ["ebt", "transformer_pp"],
        "seeds": list(range(seeds)),
        "base": {
            "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "vocab_size": 512, "context_length": 64},
            "data": {"source": "stdlib", "tokenizer": "bpe", "vocab_size": 512},
            "optim": {"lr": 0.003},
            "train": {
                "tokens": 64000,
                "global_batch_size": 8,
                "micro_batch_size": 8,
                "eval_every": 50,
                "checkpoint_every": 100,
            },
            "deepspeed": {"zero_stage": 1, "precision": "fp32"},
            "resources": {"num_workers": 1, "cpus_per_worker": 1},
        },
        "output_dir": str(output_dir),
        "axes": {
            "data": {"tokens": {"start": 16000, "stop": 1024000, "num": 10}},
            "batch": {"global_batch_size": [8, 16, 32, 64]},
            "params": {"d_model": [32, 48, 64, 80, 96, 128, 160, 192], "head_dim": 16},
            "depth": {"n_layers": [1, 2, 3, 4, 6, 8]},
            "flops": {
                "d_model": [32, 48, 64, 80, 96, 128, 160, 192],
                "head_dim": 16,
                "budgets": [1e12, 3e12, 1e13, 3e13],
                "points": 5,
            },
        },
    }


def seeds_for(trials: int) -> int:
    """Seeds that give about `trials` distinct trials (the count per seed is read off a 1-seed expansion)."""
    from orchestrator.sweep.expand import expand, unique_trials
    from orchestrator.sweep.spec import parse_spec

    per_seed = len(unique_trials(expand(parse_spec(synthetic_spec(1, Path(tempfile.gettempdir()))))))
    return max(1, round(trials / per_seed))


def best_of(repeat: int, job: Callable[[], Any]) -> tuple[float, Any]:
    """(best wall seconds over `repeat` runs, the last run's result): the least-disturbed run."""
    best, out = math.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = job()
        best = min(best, time.perf_counter() - start)
    return best, out


def cli_wall(args: list[str]) -> float:
    """Wall seconds of `python -m orchestrator.cli ARGS` in a fresh interpreter (imports included)."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args], cwd=REPO, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"ebtscale {' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return wall


# ---------------------------------------------------------------------------------------------- plan


def bench_plan(spec_file: Path, repeat: int, run_cli: bool) -> dict[str, Any]:
    """The in-process stages of `ebtscale sweep plan SPEC`, then the CLI's wall time."""
    from rich.console import Console

    from orchestrator.sweep.expand import expand
    from orchestrator.sweep.plan import plan, render_plan
    from orchestrator.sweep.spec import load_spec

    def render(p: Any) -> int:
        out = Console(file=io.StringIO(), width=200)  # what the CLI prints to a pipe
        out.print(render_plan(p))
        return len(out.file.getvalue())

    times: dict[str, float] = {}
    times["validate"], spec = best_of(repeat, lambda: load_spec(spec_file))
    times["expand"], trials = best_of(repeat, lambda: expand(spec))
    times["plan"], result = best_of(repeat, lambda: plan(trials))
    times["render"], chars = best_of(repeat, lambda: render(result))
    times["total"] = sum(times.values())
    out: dict[str, Any] = {"rows": len(result.rows), "trials": result.n_trials, "table_chars": chars}
    out["seconds"] = times
    out["cli_wall_s"] = cli_wall(["sweep", "plan", str(spec_file)]) if run_cli else None
    return out


# ---------------------------------------------------------------------------------------------- store


def true_loss(family: str, n_params: float, tokens: float) -> float:
    law = LAWS[family]
    return law["E"] + law["A"] / n_params ** law["alpha"] + law["B"] / tokens ** law["beta"]


@functools.cache
def data_fingerprint(data: Any) -> str:
    """model.data.fingerprint hashes the corpus (30 ms): once per data config, not once per trial."""
    from model.data import fingerprint

    return fingerprint(data)


def trial_record(unit: Any, rng: np.random.Generator) -> dict[str, Any]:
    """What the trainer logs for a finished trial: params (as Trial._start_tracker), the last value of every
    per-step metric (as Trial.run) and the final metrics (as record_outcome), with a synthetic val_loss."""
    from model.family import count_params, train_flops_per_token

    cfg = unit.config
    counts = count_params(cfg.model)
    steps = cfg.total_steps
    tokens = steps * cfg.tokens_per_step
    flops_per_token = train_flops_per_token(cfg.model)
    flops = flops_per_token * tokens
    val_loss = true_loss(unit.family, counts["total"], tokens) * math.exp(NOISE * rng.standard_normal())
    train_time_s = flops / 2e9
    params = {
        **cfg.model_dump(mode="json", exclude={"output_dir"}),
        "n_params": counts["total"],
        "n_params_non_embedding": counts["non_embedding"],
        "tokens": tokens,
        "flops_per_token": flops_per_token,
        "flops": flops,
        "total_steps": steps,
        "trial_id": cfg.config_hash(),
        "data_fingerprint": data_fingerprint(cfg.data),
    }
    last = {
        "train_loss": val_loss * 0.98,
        "lr": cfg.optim.lr * cfg.optim.min_lr_ratio,
        "tokens_per_s": tokens / train_time_s,
        "tokens_seen": tokens,
        "flops_cumulative": flops,
        "val_loss": val_loss,
        "val_perplexity": math.exp(min(val_loss, 50.0)),
    }
    return {"params": params, "last": last, "steps": steps, "tokens": tokens, "train_time_s": train_time_s}


def _create_child(client: Any, exp_id: str, parent_id: str, unit: Any) -> str:
    """The child run as `runner.ensure_runs` creates it (its tags; SCHEDULED follows)."""
    from orchestrator.sweep.runner import child_run_tags

    return client.create_run(
        exp_id, run_name=unit.name, tags=child_run_tags(SWEEP, unit, parent_id)
    ).info.run_id


def _write_real(uri: str, client: Any, run_id: str, unit: Any, rec: dict[str, Any], folder: Path) -> None:
    """One trial through the trainer's own tracking calls: RunTracker (resumed run) and record_outcome."""
    from orchestrator import tags
    from orchestrator.tracking import RunTracker, record_outcome
    from orchestrator.trial_dir import TrialDir, TrialResult, TrialStatus

    client.set_terminated(run_id, status="SCHEDULED")
    tracker = RunTracker.start(uri, SWEEP, unit.name, resume_run_id=run_id)
    tracker.log_params(rec["params"])
    tracker.set_tags({tags.STATUS: TrialStatus.RUNNING, tags.TRIAL_ID: unit.id})
    tracker.log_metrics(rec["last"], step=rec["steps"])
    val = rec["last"]["val_loss"]
    result = TrialResult("finished", "", rec["steps"], rec["tokens"], val, math.exp(val), rec["train_time_s"])
    trial = TrialDir(folder)
    folder.mkdir(parents=True, exist_ok=True)
    result.save(trial.result)
    record_outcome(tracker, result, trial)


def _write_bulk(client: Any, run_id: str, unit: Any, rec: dict[str, Any]) -> None:
    """The same end state in one log_batch: params as RunTracker.log_params stores them, the final tags and
    metrics of record_outcome, then the run closed FINISHED."""
    from mlflow.entities import Metric, Param, RunTag

    from orchestrator import tags
    from orchestrator.tracking import flatten

    now = int(time.time() * 1000)
    val = rec["last"]["val_loss"]
    metrics = [Metric(k, float(v), now, rec["steps"]) for k, v in rec["last"].items()]
    final = {
        "train_time_s": rec["train_time_s"],
        "final_val_loss": val,
        "final_val_perplexity": math.exp(val),
    }
    metrics += [Metric(k, float(v), now, rec["steps"]) for k, v in final.items()]
    params = [Param(k, str(v)[:6000]) for k, v in flatten(rec["params"]).items() if v is not None]
    final_tags = {tags.STATUS: "finished", tags.STATUS_REASON: "", tags.TRIAL_ID: unit.id}
    for i in range(0, len(params), 100):  # MLflow's limit of params per batch
        client.log_batch(
            run_id,
            params=params[i : i + 100],
            tags=[RunTag(k, v) for k, v in final_tags.items()] if i == 0 else [],
            metrics=metrics if i == 0 else [],
        )
    client.set_terminated(run_id, status="FINISHED")


def _same_shape(client: Any, real_id: str, bulk_id: str) -> None:
    """The bulk-written run must carry exactly the keys (and fixed tags) of the one written the real way."""
    a, b = client.get_run(real_id).data, client.get_run(bulk_id).data
    for what in ("params", "metrics", "tags"):
        ka, kb = set(getattr(a, what)), set(getattr(b, what))
        if ka != kb:
            raise AssertionError(f"bulk-written {what} differ from the real path's: {sorted(ka ^ kb)}")
    from orchestrator import tags

    for key in (tags.STATUS, tags.STATUS_REASON, tags.SWEEP):
        if a.tags[key] != b.tags[key]:
            raise AssertionError(f"tag {key}: {a.tags[key]!r} (real) vs {b.tags[key]!r} (bulk)")


def build_store(spec_dict: dict[str, Any], root: Path) -> dict[str, Any]:
    """A finished sweep's MLflow store at root/mlflow.db: the parent run (as ensure_runs writes it) and one
    child per distinct trial."""
    from orchestrator import tags
    from orchestrator.sweep.expand import expand
    from orchestrator.sweep.runner import trial_units
    from orchestrator.sweep.spec import parse_spec
    from orchestrator.tracking import RunTracker, get_or_create_experiment, mlflow_client

    spec = parse_spec(spec_dict)
    units = trial_units(expand(spec))
    uri = f"sqlite:///{root / 'mlflow.db'}"
    exp_id = get_or_create_experiment(uri, SWEEP)
    client = mlflow_client(uri)
    role = {tags.ROLE: tags.ROLE_SWEEP, tags.SWEEP: SWEEP}
    parent = RunTracker.start(uri, SWEEP, SWEEP, tags=role)
    parent.log_params({"spec": spec.model_dump(mode="json")})
    parent.end("FINISHED")
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for i, unit in enumerate(units):
        rec = trial_record(unit, rng)
        run_id = _create_child(client, exp_id, parent.run_id, unit)
        if i == 0:
            _write_real(uri, client, run_id, unit, rec, root / "trial0")
            real_id = run_id
        else:
            _write_bulk(client, run_id, unit, rec)
        if i == 1:
            _same_shape(client, real_id, run_id)
        if (i + 1) % 1000 == 0:
            rate = (i + 1) / (time.perf_counter() - start)
            console().print(f"  store: {i + 1}/{len(units)} runs ({rate:.0f}/s)")
    return {"uri": uri, "runs": len(units), "build_s": time.perf_counter() - start, "version": STORE_VERSION}


def cached_store(seeds: int, cache_dir: Path, rebuild: bool) -> dict[str, Any]:
    """The store of the `seeds`-seed sweep, built once per STORE_VERSION. It is built in place (MLflow records
    the artifact folder's absolute path) and marked complete by store.json: a half-built one is rebuilt."""
    root = cache_dir / f"v{STORE_VERSION}-seeds{seeds}"
    meta = root / "store.json"
    built = rebuild or not meta.is_file()
    if built:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        console().print(f"building the {seeds}-seed store under {root} (cached for later runs)")
        meta.with_suffix(".tmp").write_text(
            json.dumps(build_store(synthetic_spec(seeds, root / "outputs"), root))
        )
        os.replace(meta.with_suffix(".tmp"), meta)
    return {**json.loads(meta.read_text()), "path": str(root), "built_now": built}


# ---------------------------------------------------------------------------------------------- report


def bench_report(uri: str, out_dir: Path, bootstrap: int, repeat: int, run_cli: bool) -> dict[str, Any]:
    """The stages of `ebtscale report SWEEP` (sweep/report.py, build_report), timed one by one, then the
    CLI."""
    from analysis import write_report
    from analysis.options import AnalysisOptions
    from orchestrator.sweep.report import provenance_of, publish_report
    from orchestrator.sweep.results import load_sweep_trials, load_thinking_curves, sweep_parent_run

    times: dict[str, float] = {}
    # the first client of a store opens it (engine, schema check): a fixed cost, kept out of the load's time
    times["open_store"], _ = best_of(1, lambda: sweep_parent_run(uri, SWEEP))
    times["load_sweep_trials"], trials = best_of(repeat, lambda: load_sweep_trials(uri, SWEEP))
    start = time.perf_counter()
    thinking = load_thinking_curves(uri, SWEEP)
    provenance = provenance_of(uri, SWEEP, SWEEP)
    times["provenance_and_thinking"] = time.perf_counter() - start
    times["write_report"], paths = best_of(
        repeat,
        lambda: write_report(trials, out_dir, provenance, thinking, AnalysisOptions(bootstrap=bootstrap)),
    )
    times["publish"], _ = best_of(1, lambda: publish_report(uri, SWEEP, paths))
    times["total"] = sum(times.values())
    summary = json.loads(Path(paths["summary"]).read_text())
    cli_out = out_dir.parent / f"{out_dir.name}-cli"
    args = ["report", SWEEP, "--tracking-uri", uri, "--out", str(cli_out), "--bootstrap", str(bootstrap)]
    return {
        "table_rows": len(trials),
        "finished_rows": int((trials["status"] == "finished").sum()),
        "seconds": times,
        "cli_wall_s": cli_wall(args) if run_cli else None,
        "recovered": recovered_law(summary),
    }


def recovered_law(summary: dict[str, Any]) -> dict[str, Any]:
    """The report's flops-axis Chinchilla fit next to the synthetic truth, and each axis' R² (log)."""
    out: dict[str, Any] = {}
    for fam, law in LAWS.items():
        fit = (summary["compute_optimal"].get(fam) or {}).get("chinchilla") or {}
        out[fam] = {k: {"true": v, **(fit.get(k) or {"value": None})} for k, v in law.items()}
    out["r2_log"] = {
        axis: {fam: f["r2_log"] for fam, f in entry["fits"].items()}
        for axis, entry in summary["axes"].items()
    }
    return out


# ---------------------------------------------------------------------------------------------- output


def render(result: dict[str, Any]) -> None:
    out = console()
    cols = ("trials", "rows", "validate", "expand", "plan", "render", "plan CLI", "store load",
            "write_report", "other", "report CLI")  # fmt: skip
    t = table(f"plan + report of a synthetic sweep, wall s ({result['args']['bootstrap']} bootstrap)", cols)
    fmt = lambda v: "–" if v is None else f"{v:.3g}"  # noqa: E731
    for s in result["sizes"]:
        p, r = s["plan"], s["report"]
        rs = r["seconds"]
        t.add_row(
            str(p["trials"]), str(p["rows"]), *(fmt(p["seconds"][k]) for k in PLAN_STAGES),
            fmt(p["cli_wall_s"]), fmt(rs["load_sweep_trials"]), fmt(rs["write_report"]),
            fmt(rs["open_store"] + rs["provenance_and_thinking"] + rs["publish"]), fmt(r["cli_wall_s"]),
        )  # fmt: skip
    out.print(t)
    if len(result["sizes"]) > 1:
        a, b = result["sizes"][0], result["sizes"][-1]
        ratio = b["plan"]["trials"] / a["plan"]["trials"]
        parts = [f"{k} {v:.1f}x" for k, v in result["scaling"].items()]
        out.print(
            f"scaling {a['plan']['trials']} -> {b['plan']['trials']} trials ({ratio:.1f}x): "
            + ", ".join(parts)
        )
    rec = result["sizes"][-1]["report"]["recovered"]
    for fam in LAWS:
        cells = [f"{k} {v['true']:g} -> {fmt(v['value'])}" for k, v in rec[fam].items()]
        out.print(f"{fam} Chinchilla law, true -> fitted by the report: " + ", ".join(cells))
    print_targets(out, result)


def main() -> None:
    parser = bench_parser(__doc__, "store.json")
    parser.add_argument(
        "--trials", default="1000,10000", help="comma-separated sweep sizes (distinct trials)"
    )
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each in-process stage (best kept)")
    parser.add_argument("--no-cli", action="store_true", help="skip the CLI wall-clock runs")
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "ebtscale-bench-store"
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached stores")
    args = parse_bench_args(parser, SMOKE)

    sizes = sorted(int(t) for t in args.trials.split(","))
    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="bench-store-"))  # None: --smoke's own
    stores = {n: cached_store(seeds_for(n), cache_dir, args.rebuild) for n in sizes}  # set-up, untimed
    load = LoadMonitor()
    start = time.perf_counter()
    for module in (
        "torch",
        "mlflow.tracking",
        "orchestrator.sweep.plan",
        "orchestrator.sweep.results",
        "analysis.report",
    ):
        importlib.import_module(
            module
        )  # once per process (the CLI runs pay them): out of the first size's stages
    imports_s = time.perf_counter() - start
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        for n in sizes:
            seeds = seeds_for(n)
            spec_file = Path(tmp) / f"spec-{n}.yaml"
            spec_file.write_text(yaml.safe_dump(synthetic_spec(seeds, Path(tmp) / "outputs")))
            console().print(f"{n} trials ({seeds} seeds): plan ...")
            plan_res = bench_plan(spec_file, args.repeat, not args.no_cli)
            console().print(f"{n} trials: report ...")
            report_res = bench_report(
                stores[n]["uri"], Path(tmp) / f"report-{n}", args.bootstrap, args.repeat, not args.no_cli
            )
            results.append({"seeds": seeds, "store": stores[n], "plan": plan_res, "report": report_res})
    result: dict[str, Any] = {
        "benchmark": "store",
        "machine": machine_info(),
        "args": {k: str(v) for k, v in vars(args).items() if k != "json_out"},
        "laws": LAWS,
        "noise": NOISE,
        "imports_s": imports_s,
        "sizes": results,
        "load": load.summary(),
    }
    if len(results) > 1:
        a, b = results[0], results[-1]
        result["scaling"] = {
            f"{what} {k}": b[what]["seconds"][k] / a[what]["seconds"][k]
            for what, keys in (("plan", ("total",)), ("report", ("load_sweep_trials", "write_report")))
            for k in keys
        }
    big = results[-1]
    stages = {f"plan {k}": v for k, v in big["plan"]["seconds"].items() if k != "total"}
    stages |= {f"report {k}": v for k, v in big["report"]["seconds"].items() if k != "total"}
    slowest = max(stages, key=stages.__getitem__)
    result["targets"] = [
        {
            "name": f"every stage under {TARGET_S:.0f} s at {big['plan']['trials']} trials",
            "value": f"slowest: {slowest} {stages[slowest]:.1f} s",
            "met": stages[slowest] < TARGET_S,
        }
    ]
    render(result)
    write_json(args.json_out, result)
    console().print(f"wrote {args.json_out}")
    if args.cache_dir is None:
        shutil.rmtree(cache_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
