"""`ebtscale think` on a trial trained alone (`ebtscale train -o DIR`): the curves land in the MLflow run and
store the trial trained with, which its folder records (run.json), wherever that folder sits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.trial_dir import TrialDir
from tests.helpers import cli, tiny_trial, write_yaml


def test_think_logs_to_the_store_of_a_trial_trained_with_output_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the default store: <output_dir>/mlflow.db
    cfg = tiny_trial(tmp_path, family="ebt", train={"tokens": 8 * 32 * 4, "eval_every": 4})
    config = write_yaml(
        tmp_path / "ebt.yaml", cfg.model_dump(mode="json", exclude={"output_dir", "trial_dir"})
    )
    out = tmp_path / "X" / "out"
    trained = cli("train", str(config), "-o", str(out))
    assert trained.returncode == 0, trained.stderr[-3000:]
    folder = TrialDir(out / "trials" / cfg.name)
    run_id = json.loads(folder.run.read_text())["run_id"]

    thought = cli("think", str(folder.path), "--steps", "2", "--candidates", "1,2", "--batches", "1")
    assert thought.returncode == 0, thought.stderr[-3000:]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    assert "thinking.json" in {a.path for a in client.list_artifacts(run_id)}
    assert "think_steps_val_loss" in client.get_run(run_id).data.metrics
    assert not (tmp_path / "X" / "mlflow.db").exists()  # no store guessed above the output folder
