"""Every benchmark's --smoke mode, run as a user runs it (`python benchmarks/bench_X.py --smoke` from the
repository root, a real subprocess, the real trainer, Ray, DeepSpeed and MLflow), so that no benchmark rots
unseen: bench_orchestration.py was broken from 2026-11-28 (c9d0608 changed `_train`'s signature, which its
timeline hook wraps) until #31, and no test noticed. Each test checks the exit code and what the JSON says,
not the numbers' size: at these sizes, on a shared machine, they mean nothing. Results go to tmp_path, never
to benchmarks/results/. The plain-PyTorch side of bench_throughput.py (--plain) runs in test_gpu.py, through
gpu.sh --dry-run."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO

# The smoke runs take about 3 min together on the loaded 2-core test machine: start them early
pytestmark = pytest.mark.slow


def run_smoke(script: str, json_out: Path | None, env: dict[str, str] | None = None) -> str:
    """Run benchmarks/<script>.py --smoke [--json-out json_out] as a user does; returns its stdout."""
    cmd = [sys.executable, f"benchmarks/{script}.py", "--smoke"]
    cmd += ["--json-out", str(json_out)] if json_out is not None else []
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (
        f"{script} --smoke exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc.stdout


def smoke_json(script: str, tmp_path: Path) -> tuple[dict[str, Any], str]:
    """(the JSON a smoke run wrote to tmp_path, its stdout)."""
    out = tmp_path / f"{script}.json"
    stdout = run_smoke(script, out)
    return json.loads(out.read_text()), stdout


def finite(*values: float) -> bool:
    """Every value a finite number above zero (a time, a rate, a ratio)."""
    return all(isinstance(v, int | float) and math.isfinite(v) and v > 0 for v in values)


def test_analysis_smoke_writes_its_json_to_a_temp_folder_not_the_results(tmp_path: Path) -> None:
    """Without --json-out a smoke run writes under TMPDIR: it must never overwrite a measured result."""
    recorded = REPO / "benchmarks" / "results" / "analysis.json"
    before = recorded.stat().st_mtime_ns if recorded.exists() else None
    stdout = run_smoke("bench_analysis", None, env=dict(os.environ, TMPDIR=str(tmp_path)))
    (written,) = tmp_path.glob("bench-smoke-*/analysis.json")
    result = json.loads(written.read_text())
    assert (recorded.stat().st_mtime_ns if recorded.exists() else None) == before
    assert result["smoke"] is True
    assert [c["case"] for c in result["cases"]] == ["chinchilla", "single-axis"]
    for case in result["cases"]:
        assert case["measured_resamples"] == {"batched": 20, "scipy_warm_loop": 2, "naive_multistart_loop": 1}
        for clock in ("wall_s", "cpu_s"):
            t = case[clock]
            assert finite(t["fit"], t["fit_plus_bootstrap"], *t["per_resample_ms"].values())
            assert finite(t["speedup_vs_scipy_warm_loop"], t["speedup_vs_naive_multistart_loop"])
    assert "analysis fits, 20 bootstrap resamples" in stdout


def test_throughput_smoke(tmp_path: Path) -> None:
    result, stdout = smoke_json("bench_throughput", tmp_path)
    (size,) = result["sizes"]
    assert set(size["variants"]) == {"transformer_pp", "ebt", "ebt_reuse"}
    for r in size["variants"].values():
        for clock in ("wall", "cpu"):
            assert finite(r[clock]["tokens_per_s"], r[clock]["mfu"], r[clock]["breakdown_s"]["step"])
    for key in ("ebt_cost", "ebt_reuse_cost"):
        assert finite(size[key]["analytic_flop_ratio"], size[key]["wall"]["measured_ratio"])
    # the reuse path is an exact rewrite of the full recompute: the same loss in the engine and in float64
    assert size["reuse_observed_kv"]["loss_match"]
    f64 = result["reuse_float64_check"]
    assert f64["loss_abs_diff"] < 1e-9 and f64["grad_max_abs_diff"] <= 1e-9 * f64["grad_max_abs"]
    counted = result["flop_count_check"]["variants"]
    for v in ("ebt", "ebt_reuse"):  # the EBT's FLOP formulas agree with FlopCounterMode
        assert counted[v]["counted"] == pytest.approx(counted[v]["formula"], rel=0.02)
    assert finite(result["optimizer_what_if"]["speedup"], result["gemm_peak_flops"]["wall"])
    assert result["targets"] and "step-time breakdown" in stdout


def test_memory_smoke(tmp_path: Path) -> None:
    result, stdout = smoke_json("bench_memory", tmp_path)
    rows = result["memory"]
    assert [(m["config"]["family"], m["config"]["variant"]) for m in rows] == [
        ("transformer_pp", ""),
        ("ebt", "reuse-k3-trunc"),
    ]
    for m in rows:
        assert m["peak_rss_bytes"] > m["rss_after_imports_bytes"] > 0
        assert finite(m["total_ratio"], m["model_part_ratio"], m["plan"]["total_bytes"])
    assert [s["variant"] for s in result["saved_tensors"]] == ["", "reuse-k3-trunc"]
    assert finite(*(s["ratio"] for s in result["saved_tensors"]))
    assert len(result["targets"]) == 2 and "peak RSS per worker" in stdout


def test_planner_smoke(tmp_path: Path) -> None:
    result, stdout = smoke_json("bench_planner", tmp_path)
    rows = result["rows"]
    assert sorted(r["family"] for r in rows) == ["ebt", "transformer_pp"]
    for r in rows:
        assert r["steps_run"] == 3
        assert finite(r["measured_step_s"], r["planned_step_s"], r["ratio"])
    assert finite(result["summary"]["all smoke"]["total_ratio"], result["gemm_flops_per_s"])
    assert len(result["targets"]) == 2 and "planner time per optimizer step" in stdout


def test_store_smoke(tmp_path: Path) -> None:
    result, stdout = smoke_json("bench_store", tmp_path)
    (size,) = result["sizes"]
    assert size["store"]["built_now"] and size["store"]["runs"] == size["plan"]["trials"] == 90
    assert finite(*size["plan"]["seconds"].values())
    report = size["report"]
    assert report["finished_rows"] == report["table_rows"] >= 90  # a trial on several axes: a row per axis
    assert finite(*report["seconds"].values())
    for family in ("transformer_pp", "ebt"):  # the report fitted the synthetic law (its values, whatever)
        assert finite(*(p["value"] for p in report["recovered"][family].values()))
    assert not Path(size["store"]["path"]).exists()  # the smoke's own store is removed
    assert "plan + report of a synthetic sweep" in stdout


def test_orchestration_smoke(tmp_path: Path) -> None:
    """A real sweep of two trials on Ray, timed by the benchmark's hooks: every trial finished, every hook
    applied, and each trial's timeline complete enough to split its time into phases."""
    result, stdout = smoke_json("bench_orchestration", tmp_path)
    s = result["summary"]
    assert s["finished"] == result["trials"] == 2 and result["hook_failures"] == []
    assert 0 < s["efficiency"] < 1 and finite(s["sum_train_time_s"], s["sweep_wall_s"])
    for trial in result["per_trial"].values():
        assert trial["status"] == "finished" and trial["steps"] == 4
        assert trial["phases"] is not None, "a trial's timeline is incomplete: a hook no longer fires"
        assert finite(trial["phases"]["train_steps"], trial["phases"]["fixed"])
    assert {"ensure_runs", "init_ray", "tune_fit"} <= set(result["driver"])
    assert finite(result["occupancy"]["mean_concurrency"])
    assert "orchestration efficiency" in stdout


def test_adaptive_smoke_simulates_every_design_and_truth_and_judges_the_targets(tmp_path: Path) -> None:
    result, stdout = smoke_json("bench_adaptive", tmp_path)
    designs = {r["design"] for r in result["rows"]}
    assert designs == {"uniform", "random", "adaptive", "adaptive to the grid's width"}
    assert {r["effect"] for r in result["rows"]} == {0.0, 0.3598, -0.2}
    for row in result["rows"]:
        assert row["studies"] == result["replicates"] and 0 <= row["coverage"] <= 1
        assert row["flops_share"] <= 1.0 + 1e-9  # no design spends more than the uniform grid's FLOPs
    assert [r["width_ratio"] for r in result["rows"] if r["design"] == "uniform"] == [1.0, 1.0, 1.0]
    printed = " ".join(stdout.split())  # rich wraps long lines
    assert len(result["targets"]) == 3 and all(" ".join(t.split()) in printed for t in result["targets"])
    assert result["smoke"] is True


def test_calibration_smoke_fits_every_design_at_every_delta(tmp_path: Path) -> None:
    result, stdout = smoke_json("bench_calibration", tmp_path)
    assert {r["design"] for r in result["rows"]} == {
        "4 x, 1 seed (the demo)",
        "6 x, 1 seed",
        "6 x, 2 seeds (the study)",
        "6 x, 3 seeds",
    }
    deltas = {r["delta"] for r in result["rows"]}
    assert deltas == {1e-3, 0.05}  # by default the report's delta (Hoffmann's) beside least squares'
    for row in result["rows"]:
        assert row["studies"] == result["replicates"] and row["failed"] == 0
        assert 0 <= row["coverage"] <= 1 and 0 <= row["coverage_alpha_tpp"] <= 1 and row["median_width"] > 0
    printed = " ".join(stdout.split())
    assert all(f"delta {d:g}: relative difference's coverage" in printed for d in deltas)
    assert result["smoke"] is True
