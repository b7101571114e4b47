"""`ebtscale think` on a trial trained alone (`ebtscale train -o DIR`): the curves, on the validation split
and on the shipped out-of-distribution prose, land in the MLflow run and store the trial trained with, which
its folder records (run.json), wherever that folder sits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.trial_dir import TrialDir
from tests.helpers import cli, tiny_trial, write_yaml


@pytest.mark.slow
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
    metrics = client.get_run(run_id).data.metrics
    assert "think_steps_val_loss" in metrics and "think_ood_steps_val_loss" in metrics
    rows = json.loads(Path(client.download_artifacts(run_id, "thinking.json")).read_text())
    assert {(r["split"], r["source"]) for r in rows} == {("val", "stdlib"), ("ood", "prose")}
    ebt = {(r["split"], r["mode"], r["forward_passes"]): r for r in rows if r["family"] == "ebt"}
    assert set(ebt) == {
        (s, m, fp)
        for s in ("val", "ood")
        for m, fp in (("steps", 1), ("steps", 2), ("verify", 2), ("verify", 4))
    }
    for split in ("val", "ood"):  # one batch of 8 windows per split, their losses pooled into the row's
        row = ebt[split, "steps", 2]
        assert len(row["window_nll"]) == 8
        assert sum(row["window_nll"]) / sum(row["window_tokens"]) == pytest.approx(row["val_loss"], rel=1e-6)
    assert ebt["val", "steps", 1]["val_loss"] != ebt["ood", "steps", 1]["val_loss"]  # a different text
    assert not (tmp_path / "X" / "mlflow.db").exists()  # no store guessed above the output folder


def test_thinking_on_a_sweep_takes_its_driver_lock(tmp_path: Path) -> None:
    """`think SPEC` writes to the sweep's runs, so it takes the sweep's driver lock like every stage that
    writes: refused (SweepBusy, naming the lock) while another driver holds it; once free, it gets as far as
    finding no trained EBT in this untrained sweep."""
    from orchestrator.config import ConfigError
    from orchestrator.sweep.spec import load_spec
    from orchestrator.sweep_dir import SweepBusy
    from orchestrator.thinking.evaluate import think
    from tests.helpers import write_spec

    spec = write_spec(tmp_path, "busy", tokens=2048)
    with (
        load_spec(spec).folder.driver_lock(),
        pytest.raises(SweepBusy, match="sweep busy is already running"),
    ):
        think(spec, track=False)
    with pytest.raises(ConfigError, match="no finished EBT trial"):
        think(spec, track=False)
