"""orchestrator/tracking.py: new sqlite stores are copies of one migrated empty store, cached per MLflow
version, and work like stores MLflow made itself."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest

from orchestrator.tracking import artifact_location, get_or_create_experiment, mlflow_client


def store(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


def test_a_new_store_is_a_copy_of_the_cached_empty_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EBTSCALE_CACHE_DIR", str(tmp_path / "cache"))
    first, second = store(tmp_path / "a"), store(tmp_path / "b")
    mlflow_client(first)
    template = tmp_path / "cache" / "mlflow" / f"empty-{mlflow.__version__}.db"
    assert template.is_file()
    made = template.stat().st_mtime_ns
    client = mlflow_client(second)
    assert template.stat().st_mtime_ns == made  # reused, not migrated again
    (default,) = client.search_experiments()
    assert default.name == "Default" and default.artifact_location == artifact_location(second, "Default")
    # the copy is a working store of its own: a run logged in it is read back, and not seen in the other
    run = client.create_run(get_or_create_experiment(second, "sweep"))
    client.log_metric(run.info.run_id, "val_loss", 4.2)
    assert client.get_run(run.info.run_id).data.metrics == {"val_loss": 4.2}
    assert mlflow_client(first).get_experiment_by_name("sweep") is None


def test_without_a_usable_cache_mlflow_makes_the_store_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "cache"
    blocked.write_text("a file where the cache folder would be")  # no folder can be made under it
    monkeypatch.setenv("EBTSCALE_CACHE_DIR", str(blocked))
    uri = store(tmp_path / "c")
    client = mlflow_client(uri)
    run = client.create_run(get_or_create_experiment(uri, "sweep"))
    assert client.get_run(run.info.run_id).info.status == "RUNNING"
    assert (tmp_path / "c" / "mlflow.db").is_file() and not list((tmp_path / "c").glob("*.tmp"))


def test_a_broken_template_leaves_no_partial_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EBTSCALE_CACHE_DIR", str(tmp_path / "cache"))
    template = tmp_path / "cache" / "mlflow" / f"empty-{mlflow.__version__}.db"
    template.parent.mkdir(parents=True)
    template.write_bytes(b"not a sqlite database")  # the copy's UPDATE fails: MLflow makes the store itself
    uri = store(tmp_path / "d")
    client = mlflow_client(uri)
    run = client.create_run(get_or_create_experiment(uri, "sweep"))
    assert client.get_run(run.info.run_id).info.status == "RUNNING"
    assert not list((tmp_path / "d").glob("*.tmp"))


def test_system_metrics_sample_on_a_timer_and_a_resumed_run_continues_their_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run started with system metrics gets samples on its timer and one more at its end (a run shorter
    than the timer still has one); resumed, it continues their steps instead of writing step 0 again."""
    import time

    from orchestrator import tracking

    monkeypatch.setattr(tracking, "SYSTEM_METRICS_EVERY_S", 0.1)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = tracking.RunTracker.start(uri, "system", "run", system_metrics=True)
    time.sleep(0.5)
    run.end()
    client = mlflow_client(uri)
    key = "system/cpu_utilization_percentage"
    first = sorted(m.step for m in client.get_metric_history(run.run_id, key))
    assert len(first) >= 3 and first == list(range(len(first)))  # the timer's samples, then the last one
    assert "system/system_memory_usage_megabytes" in client.get_run(run.run_id).data.metrics

    again = tracking.RunTracker.start(uri, "system", "run", resume_run_id=run.run_id, system_metrics=True)
    again.end()
    steps = sorted(m.step for m in client.get_metric_history(run.run_id, key))
    assert steps[: len(first)] == first and steps[len(first) :] and min(steps[len(first) :]) == len(first)
    assert len(steps) == len(set(steps))
    kind = client.get_experiment_by_name("system").tags["mlflow.experimentKind"]
    assert kind == "custom_model_development"


def test_a_run_left_open_after_its_outcome_is_closed_without_a_metric_twice(tmp_path: Path) -> None:
    """A crash between a trial's result.json and its run's close: `close_with_outcome` closes the run with the
    outcome (FINISHED, status tag, result.json), and final metrics that reached the store before the crash
    are not logged a second time; a closed run is left alone."""
    from orchestrator.tracking import RunTracker, close_with_outcome, record_outcome
    from orchestrator.trial_dir import TrialDir, TrialResult, TrialStatus

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    folder = TrialDir(tmp_path / "trial")
    folder.path.mkdir()
    result = TrialResult(TrialStatus.FINISHED, "", 12, 384, 3.5, 33.1, 2.0)
    result.save(folder.result)
    run = RunTracker.start(uri, "closing", "trial")
    run.log_metrics({"train_time_s": 2.0, "final_val_loss": 3.5}, step=12, force=True)
    run.end("RUNNING")  # the final metrics are in, the run was never closed
    client = mlflow_client(uri)

    assert close_with_outcome(uri, "closing", "trial", run.run_id, folder)
    closed = client.get_run(run.run_id)
    assert closed.info.status == "FINISHED" and closed.data.tags["ebtscale.status"] == "finished"
    assert [m.step for m in client.get_metric_history(run.run_id, "train_time_s")] == [12]
    assert "result.json" in {a.path for a in client.list_artifacts(run.run_id)}
    assert not close_with_outcome(uri, "closing", "trial", run.run_id, folder)  # already closed

    fresh = RunTracker.start(uri, "closing", "fresh")  # the trainer's own path logs them once
    record_outcome(fresh, result, folder)
    assert [m.step for m in client.get_metric_history(fresh.run_id, "final_val_loss")] == [12]
