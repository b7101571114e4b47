"""Guarantee 1: a worker SIGKILLed mid-trial. Tune retries the trial, which resumes from its last verified
checkpoint and ends with the same validation loss as an uninterrupted run; its MLflow run is continued (one
run, FINISHED) and its metric history has every step exactly once.

Both launchers are covered: a single-worker trial trains in its Tune actor (`ray::ImplicitFunc`), a
two-worker trial in Ray Train workers (`ray::RayTrainWorker`)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from orchestrator.sweep.expand import expand
from orchestrator.sweep.spec import load_spec
from orchestrator.train.trainer import launch_trial
from tests.helpers import (
    child_runs,
    in_folder,
    kill_session,
    record_fault,
    session_pids,
    start_cli,
    wait_for,
    write_spec,
)

STEPS = 400

CASES = {
    "tune-actor": {"workers": 1, "process": "ray::ImplicitFunc", "launcher": "auto"},
    "ray-train-worker": {"workers": 2, "process": "ray::RayTrainWorker", "launcher": "ray_train"},
}


@pytest.mark.slow
@pytest.mark.parametrize(
    "case",
    ["tune-actor", pytest.param("ray-train-worker", marks=pytest.mark.chaos)],  # chaos: 90 s
)
def test_killed_worker_resumes_to_the_uninterrupted_result(tmp_path: Path, case: str) -> None:
    workers, title, launcher = (CASES[case][k] for k in ("workers", "process", "launcher"))
    spec_path = write_spec(
        tmp_path,
        f"kill-{case}",
        tokens=8 * 32 * STEPS,
        families=("transformer_pp",),
        widths=(32,),
        train={"micro_batch_size": 8 // workers, "checkpoint_every": 25, "eval_every": 50},
        resources={"num_workers": workers, "cpus_per_worker": 1},
    )
    trials = tmp_path / "out" / f"kill-{case}" / "trials"
    proc = start_cli("sweep", "run", str(spec_path), "--launcher", launcher)
    try:
        wait_for(lambda: list(trials.glob("*/checkpoints/step-*/manifest.json")), 300, "a first checkpoint")
        victims = session_pids(proc.pid, title)
        assert victims, f"no {title} process found"
        assert not list(trials.glob("*/result.json")), "the trial finished before the kill"
        os.kill(victims[0], signal.SIGKILL)
        assert proc.wait(timeout=600) == 0, "the sweep did not finish after the worker was killed"
    finally:
        kill_session(proc.pid)

    (trial_dir,) = trials.iterdir()
    result = json.loads((trial_dir / "result.json").read_text())
    assert result["status"] == "finished" and result["steps"] == STEPS
    assert len(result["losses"]) < STEPS, "the retried trial trained from scratch instead of resuming"

    # The same trial uninterrupted, outside Ray (same config, its own folder): same validation loss.
    (planned,) = expand(load_spec(spec_path))
    reference_cfg = in_folder(planned.config, tmp_path / "reference")
    assert reference_cfg.folder.path != trial_dir
    reference = launch_trial(reference_cfg, progress=False)
    assert abs(result["final_val_loss"] - reference.final_val_loss) <= 1e-6

    uri = f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    runs = child_runs(uri, f"kill-{case}")
    from mlflow.tracking import MlflowClient

    history = MlflowClient(uri).get_metric_history(runs[0].info.run_id, "train_loss")
    steps = sorted(m.step for m in history)
    record_fault(
        "1 worker killed",
        f"SIGKILL {title} mid-trial",
        injected=1,
        survived=int(result["status"] == "finished"),
        lost=abs(len(runs) - 1) + len(set(range(1, STEPS + 1)) ^ set(steps)) + len(steps) - len(set(steps)),
        val_loss_diff=abs(result["final_val_loss"] - reference.final_val_loss),
    )
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert steps == list(range(1, STEPS + 1)), "gap or repeat in train_loss"
    by_step = {m.step: m.value for m in history}
    assert all(abs(by_step[i + 1] - loss) < 1e-6 for i, loss in enumerate(reference.losses))
