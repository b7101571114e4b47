"""End-to-end sweeps through the real CLI: Ray Tune (embedded local Ray) launching Ray Train TorchTrainers
running DeepSpeed, into a real MLflow sqlite store. Slow-ish (Ray start-up), so each test does a lot."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

EBTSCALE = [sys.executable, "-m", "orchestrator.cli"]


def write_spec(tmp_path: Path, name: str, tokens: int, checkpoint_every: int = 6) -> Path:
    spec = {
        "name": name,
        "families": ["transformer_pp", "ebt"],
        "base": {
            "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "vocab_size": 320, "context_length": 32},
            "data": {"source": "stdlib", "vocab_size": 320, "max_documents": 150},
            "train": {
                "tokens": tokens,
                "global_batch_size": 8,
                "micro_batch_size": 8,
                "eval_every": 6,
                "checkpoint_every": checkpoint_every,
            },
            "deepspeed": {"zero_stage": 2, "precision": "fp32"},
        },
        "axes": {"params": {"d_model": [32, 48], "head_dim": 16}},
        "output_dir": str(tmp_path / "out"),
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*EBTSCALE, *args], capture_output=True, text=True, timeout=timeout, env=os.environ)


def child_runs(uri: str, sweep: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(sweep)
    return [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags]


def result_mtimes(root: Path) -> dict[str, float]:
    """Our trials' result files (not Ray Tune's own result.json files, which a restore appends to)."""
    return {str(p): p.stat().st_mtime for p in root.glob("*/trials/*/result.json")}


def kill_session(sid: int) -> None:
    """SIGKILL every process of a session: the driver and all Ray processes it started (which put
    themselves in process groups of their own, so killpg alone would miss them)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # after the command name: state, ppid, pgrp, session
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(stat.parent.name), signal.SIGKILL)


def test_sweep_runs_once_reruns_nothing_and_exports(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "four", tokens=8 * 32 * 6)
    first = cli("sweep", "run", str(spec))
    assert first.returncode == 0, first.stdout + first.stderr
    uri = f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    runs = child_runs(uri, "four")
    assert len(runs) == 4
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["ebtscale.family"] for r in runs} == {"ebt", "transformer_pp"}
    assert {r.data.params["model.d_model"] for r in runs} == {"32", "48"}
    assert all(r.data.metrics["final_val_loss"] > 0 for r in runs)

    before = result_mtimes(tmp_path / "out")
    second = cli("sweep", "run", str(spec))
    assert second.returncode == 0, second.stderr
    assert result_mtimes(tmp_path / "out") == before  # nothing trained again
    assert sorted(r.info.run_id for r in child_runs(uri, "four")) == sorted(r.info.run_id for r in runs)

    status = cli("sweep", "status", str(spec))
    assert status.returncode == 0 and status.stdout.count("finished") == 4

    out = tmp_path / "runs.csv"
    exported = cli("sweep", "export", str(spec), "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    frame = pd.read_csv(out)
    assert len(frame) == 4 and set(frame["axis"]) == {"params"}
    assert frame["n_params"].dtype.kind in "if" and (frame["val_loss"] > 0).all()
    by_family = frame.groupby("family")["n_params_non_embedding"].apply(sorted)
    assert all(sizes[0] < sizes[1] for sizes in by_family)

    # System-2 curves of the largest EBT, then the report from this real store
    thought = cli("think", str(spec), "--steps", "3", "--candidates", "1,2", "--batches", "1")
    assert thought.returncode == 0, thought.stderr
    reported = cli("report", str(spec), "--bootstrap", "100")
    assert reported.returncode == 0, reported.stderr
    report_dir = tmp_path / "out" / "four" / "report"
    html = (report_dir / "report.html").read_text()
    summary = json.loads((report_dir / "summary.json").read_text())
    for family in ("ebt", "transformer_pp"):
        alpha = summary["axes"]["params"]["fits"][family]["alpha"]["value"]
        assert f"{alpha:.4g}" in html  # the table holds the fitted exponent
    assert html.count("data:image/png;base64,") >= 3  # scaling plot, residuals, thinking curves
    assert list((report_dir / "plots").glob("*.png"))
    assert "thinking" in html.lower()
    from mlflow.tracking import MlflowClient

    parent = runs[0].data.tags["mlflow.parentRunId"]
    logged = {a.path for a in MlflowClient(uri).list_artifacts(parent, "report")}
    assert {"report/report.html", "report/report.md"} <= logged


def test_driver_killed_mid_sweep_finishes_on_rerun_with_one_run_per_trial(tmp_path: Path) -> None:
    # 300 steps: seconds of training left after the first checkpoint even on a quiet machine, so the kill
    # always lands mid-trial (60 steps could finish within one poll interval)
    spec = write_spec(tmp_path, "killed", tokens=8 * 32 * 300, checkpoint_every=5)
    trials = tmp_path / "out" / "killed" / "trials"
    proc = subprocess.Popen(
        [*EBTSCALE, "sweep", "run", str(spec)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own session: the driver and the Ray it started die together
    )
    deadline = time.time() + 400
    try:
        while time.time() < deadline:  # wait for a checkpoint mid-trial, then kill everything
            if any(trials.glob("*/checkpoints/step-*/manifest.json")):
                break
            time.sleep(0.1)
        else:
            pytest.fail("no checkpoint appeared before the deadline")
    finally:
        kill_session(proc.pid)
        proc.wait()
    unfinished = [d for d in trials.iterdir() if not (d / "result.json").exists()]
    interrupted = [d for d in unfinished if any(d.glob("checkpoints/step-*/manifest.json"))]
    assert interrupted, "the kill came too late to interrupt anything"
    finished_before = result_mtimes(tmp_path / "out")

    rerun = cli("sweep", "run", str(spec))
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    runs = child_runs(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}", "killed")
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    assert len({r.data.tags["ebtscale.trial_id"] for r in runs}) == 4
    after = result_mtimes(tmp_path / "out")
    assert all(after[p] == t for p, t in finished_before.items())  # finished trials were not retrained
    for d in interrupted:  # trials killed after a checkpoint resumed from it rather than restarting
        history = json.loads((d / "result.json").read_text())
        assert history["status"] == "finished" and len(history["losses"]) < history["steps"]
