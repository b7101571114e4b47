"""The tuning stage killed mid-search (the driver's whole session, Ray included): rerunning `sweep tune`
resumes the interrupted trial from its last checkpoint, trains no finished trial again and adds no MLflow
run; the search completes with a choice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.sweep.expand import tuning_state
from orchestrator.sweep.spec import load_spec
from orchestrator.sweep.tuning import plan_searches
from tests.helpers import (
    child_runs,
    cli,
    kill_session,
    record_fault,
    start_cli,
    wait_for,
    write_spec,
    write_yaml,
)

pytestmark = pytest.mark.chaos


def test_a_killed_search_resumes_and_completes_without_training_anything_twice(tmp_path: Path) -> None:
    path = write_spec(
        tmp_path, "resumed", tokens=2048, families=["transformer_pp"], axes={"data": {"tokens": [2048]}}
    )
    data = load_spec(path).model_dump(mode="json")
    data["tune"] = {
        "num_samples": 3,
        "budget": {"tokens": 256 * 240},  # 240 steps: seconds of training after the first checkpoint
        "reports": 4,
        "reduction_factor": 2,
        "space": {"transformer_pp": {"lr": {"loguniform": [3e-3, 3e-2]}}},
    }
    write_yaml(path, data)
    spec = load_spec(path)
    (search,) = plan_searches(spec)
    folders = [t.config.folder for t in search.trials]

    proc = start_cli("sweep", "tune", str(path), "--max-concurrent", "1")
    try:
        wait_for(
            lambda: any(
                list(f.checkpoints.glob("step-*/manifest.json")) and not f.result.exists() for f in folders
            ),
            400,
            "a tuning trial's first checkpoint",
            poll_s=0.05,
        )
    finally:
        kill_session(proc.pid)
        proc.wait()
    interrupted = [f for f in folders if not f.result.exists() and any(f.checkpoints.glob("step-*"))]
    assert interrupted, "the kill came too late to interrupt anything"
    done_before = {f.path.name: f.result.stat().st_mtime for f in folders if f.result.exists()}

    rerun = cli("sweep", "tune", str(path))
    uri = f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    survived = sum(f.result.exists() for f in folders)
    record_fault(
        "tuning resumes", "driver SIGKILL mid-search", injected=1, survived=survived, lost=3 - survived
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for f in folders:
        assert f.result.exists(), f"{f.path.name} has no outcome"
        if f.path.name in done_before:
            assert f.result.stat().st_mtime == done_before[f.path.name], "a finished trial was trained again"
    resumed = json.loads(interrupted[0].result.read_text())
    assert len(resumed["losses"]) < resumed["steps"], "the interrupted trial started over instead of resuming"
    assert len(child_runs(uri, "resumed")) == 3
    assert json.loads(tuning_state(spec).path.read_text())["complete"]
