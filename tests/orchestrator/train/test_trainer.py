"""The DeepSpeed trainer on real engines (CPU, gloo): ZeRO parity with plain PyTorch, multi-process
equivalence, exact resume, divergence handling and what lands in MLflow."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from orchestrator.config import TrialConfig
from orchestrator.tracking import resolve_tracking_uri
from orchestrator.train.trainer import TrackingContext, TrialResult, launch_trial, train_trial
from orchestrator.trial_dir import TrialStatus
from tests.helpers import tiny_trial
from tests.orchestrator.train.reference import reference_losses

STEPS = 12  # tiny_trial's token budget: 12 optimizer steps of 8 x 32 tokens


def run(cfg: TrialConfig, **kwargs) -> TrialResult:
    return train_trial(cfg, progress=False, **kwargs)


@pytest.fixture(scope="module")
def reference() -> list[float]:
    """Plain PyTorch's losses for tiny_trial (the ZeRO stage plays no part in them)."""
    return reference_losses(tiny_trial(Path("unused")), STEPS)


@pytest.fixture(scope="module")
def stage_one(tmp_path_factory: pytest.TempPathFactory) -> TrialResult:
    """tiny_trial as it is (ZeRO-1), trained uninterrupted: the parity test's stage 1 and the resume test's
    reference run."""
    return run(tiny_trial(tmp_path_factory.mktemp("stage-one")))


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_zero_stage_matches_plain_pytorch(
    tmp_path: Path, stage: int, reference: list[float], stage_one: TrialResult
) -> None:
    cfg = tiny_trial(tmp_path, deepspeed={"zero_stage": stage})
    result = stage_one if stage == 1 else run(cfg)
    assert cfg.deepspeed.zero_stage == stage
    assert result.status == "finished" and result.steps == STEPS
    expected = reference
    assert result.losses == pytest.approx(expected, abs=1e-5)
    assert result.losses[-1] < result.losses[0] - 0.3  # it learns
    assert result.final_val_loss is not None and math.isfinite(result.final_val_loss)


def test_two_processes_match_one(tmp_path: Path) -> None:
    one = run(tiny_trial(tmp_path / "one", train={"micro_batch_size": 8}))
    cfg2 = tiny_trial(tmp_path / "two", resources={"num_workers": 2}, deepspeed={"zero_stage": 2})
    two = launch_trial(cfg2, progress=False)
    assert two.status == "finished"
    assert two.losses == pytest.approx(one.losses, abs=1e-5)
    assert two.final_val_loss == pytest.approx(one.final_val_loss, abs=1e-5)


def test_resume_equals_uninterrupted(tmp_path: Path, stage_one: TrialResult) -> None:
    full = stage_one  # tiny_trial uninterrupted
    cfg = tiny_trial(tmp_path / "resumed")
    first = run(cfg, stop_after_steps=6)  # checkpoint_every=6: interrupted right after a checkpoint
    assert first.status == "interrupted" and first.steps == 6
    ckpt = cfg.folder.checkpoints
    assert (ckpt / "step-6" / "manifest.json").is_file()
    second = run(cfg)
    assert second.status == "finished" and second.steps == STEPS
    assert first.losses + second.losses == pytest.approx(full.losses, abs=1e-6)
    assert second.final_val_loss == pytest.approx(full.final_val_loss, abs=1e-6)
    # a finished trial is never trained again
    again = run(cfg)
    assert again.losses == second.losses and again.final_val_loss == second.final_val_loss


def test_corrupt_checkpoint_falls_back_to_previous(tmp_path: Path) -> None:
    cfg = tiny_trial(tmp_path, train={"checkpoint_every": 3})
    run(cfg, stop_after_steps=9)
    ckpt = cfg.folder.checkpoints
    newest = ckpt / "step-9"
    shard = next(p for p in newest.rglob("*.pt"))
    shard.write_bytes(shard.read_bytes()[:100])  # truncated write
    resumed = run(cfg)
    assert resumed.status == "finished"
    assert len(resumed.losses) == STEPS - 6  # restarted from step 6, the previous good checkpoint


def test_exploding_lr_is_recorded_as_diverged(tmp_path: Path) -> None:
    cfg = tiny_trial(tmp_path, optim={"lr": 1e6, "grad_clip": 0.0, "warmup_fraction": 0.0})
    uri = resolve_tracking_uri(tmp_path)
    result = run(cfg, tracking=TrackingContext(uri=uri, experiment="diverge"))
    assert result.status == "diverged" and result.steps < STEPS
    assert "non-finite" in result.reason or "loss" in result.reason
    saved = json.loads(cfg.folder.result.read_text())
    assert saved["status"] == "diverged"
    from mlflow.tracking import MlflowClient

    mlflow_run = MlflowClient(uri).get_run(result.run_id)
    assert mlflow_run.data.tags["ebtscale.status"] == "diverged"


def test_mlflow_store_holds_run_params_metrics_and_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")  # samples within a tiny trial
    cfg = tiny_trial(tmp_path)
    uri = resolve_tracking_uri(tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    result = run(cfg, tracking=TrackingContext(uri=uri, experiment="unit", tags={"ebtscale.family": "x"}))
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    r = client.get_run(result.run_id)
    assert r.info.status == "FINISHED" and r.info.run_name == cfg.name
    assert r.data.params["model.d_model"] == "32"
    assert int(r.data.params["n_params"]) > 0 and float(r.data.params["flops"]) > 0
    assert int(r.data.params["tokens"]) == STEPS * 8 * 32
    history = client.get_metric_history(result.run_id, "train_loss")
    assert sorted(m.step for m in history) == list(range(1, STEPS + 1))
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(result.losses)
    assert r.data.metrics["final_val_loss"] == pytest.approx(result.final_val_loss)
    assert {m.step for m in client.get_metric_history(result.run_id, "val_loss")} == {6, 12}
    assert r.data.tags["ebtscale.status"] == "finished"
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"config.yaml", "result.json"} <= artifacts
    assert not (Path.cwd() / "mlruns").exists()
    # the MLflow UI opens the experiment in its model-training view; the run has this machine's metrics
    assert (
        client.get_experiment(r.info.experiment_id).tags["mlflow.experimentKind"]
        == "custom_model_development"
    )
    system = {k for k in r.data.metrics if k.startswith("system/")}
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system, system


def test_an_eval_hook_finds_its_step_in_the_store_and_can_stop_the_trial(tmp_path: Path) -> None:
    """A search's hook may be the trial's last act (Tune ends a stopped trial's actor without waiting), so
    every metric up to its step is in the store when it is called. Returning False stops the trial there."""
    from mlflow.tracking import MlflowClient

    uri = resolve_tracking_uri(tmp_path)
    client = MlflowClient(uri)
    seen: list[tuple[int, list[int], list[int]]] = []
    times: list[float] = []

    def hook(step: int, val_loss: float, train_time_s: float) -> bool:
        times.append(train_time_s)
        (mlflow_run,) = client.search_runs(client.get_experiment_by_name("hook").experiment_id)
        steps = {
            key: sorted(m.step for m in client.get_metric_history(mlflow_run.info.run_id, key))
            for key in ("train_loss", "val_loss")
        }
        seen.append((step, steps["train_loss"], steps["val_loss"]))
        return False

    result = run(tiny_trial(tmp_path), tracking=TrackingContext(uri=uri, experiment="hook"), on_eval=hook)
    assert result.status == "stopped" and result.steps == 6 and result.final_val_loss is not None
    assert seen == [(6, list(range(1, 7)), [6])]
    assert times == [result.train_time_s] and result.train_time_s > 0


def test_a_finished_trial_of_another_config_is_refused_not_reported(tmp_path: Path) -> None:
    """`ebtscale train --set model.d_model=48` on a folder holding the d_model-32 trial of the same name used
    to print the old result and exit 0: it is refused, naming the field; with --force the old folder is
    kept aside and the new config trains from scratch."""
    import yaml
    from typer.testing import CliRunner

    from orchestrator.cli import app
    from orchestrator.config import PLACEMENT_FIELDS

    cfg = tiny_trial(tmp_path / "out")
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json", exclude=PLACEMENT_FIELDS - {"name"})))
    runner = CliRunner()
    out = ["-o", str(tmp_path / "out"), "--no-track"]
    first = runner.invoke(app, ["train", str(config), *out])
    assert first.exit_code == 0, first.output
    folder = tmp_path / "out" / "trials" / cfg.name
    old_result = (folder / "result.json").read_text()

    same = runner.invoke(app, ["train", str(config), *out])  # the same config: done, reported as it was
    assert same.exit_code == 0 and (folder / "result.json").read_text() == old_result

    changed = runner.invoke(app, ["train", str(config), "--set", "model.d_model=48", *out])
    assert changed.exit_code == 2, changed.output
    assert "model.d_model: 32 -> 48" in changed.output and "--force" in changed.output
    assert (folder / "result.json").read_text() == old_result

    forced = runner.invoke(app, ["train", str(config), "--set", "model.d_model=48", "--force", *out])
    assert forced.exit_code == 0, forced.output
    (kept,) = (tmp_path / "out" / "trials").glob(f"{cfg.name}.replaced-*")
    assert (kept / "result.json").read_text() == old_result
    new = TrialResult.load(folder / "result.json")
    assert new.status == TrialStatus.FINISHED and (folder / "result.json").read_text() != old_result
    assert yaml.safe_load((folder / "config.yaml").read_text())["model"]["d_model"] == 48
