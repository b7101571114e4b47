"""Reading a sweep back from MLflow (orchestrator.sweep.results): the tidy table, the bulk read's GC
pause."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import pytest

from orchestrator import tags
from orchestrator.sweep.results import load_sweep_trials
from orchestrator.tracking import gc_paused


def _sweep_store(tmp_path: Path) -> str:
    """A sweep's store with one finished child run standing for two plan rows (data and params axes)."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("s")
    parent = client.create_run(exp, run_name="s", tags={"ebtscale.role": "sweep", "ebtscale.sweep": "s"})
    rows = [
        {"name": "tpp-d32-L1-D64K-s0", "axis": "data", "axis_value": 64000, "flops_budget": None},
        {"name": "tpp-d32-L1-D64K-s0", "axis": "params", "axis_value": 32, "flops_budget": None},
    ]
    run_tags = {
        tags.PARENT: parent.info.run_id,
        "ebtscale.trial_id": "abc123",
        "ebtscale.family": "transformer_pp",
        "ebtscale.status": "finished",
        tags.ROWS: json.dumps(rows),
    }
    child = client.create_run(exp, run_name=rows[0]["name"], tags=run_tags).info.run_id
    params = {"tokens": "64000", "n_params": "45000", "train.seed": "0", "model.d_model": "32"}
    client.log_batch(
        child,
        params=[Param(k, v) for k, v in params.items()],
        metrics=[Metric("final_val_loss", 3.5, 0, 125)],
    )
    client.set_terminated(child, "FINISHED")
    return uri


def test_sweep_runs_are_read_with_the_collector_paused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child-run search builds ~80 objects per run; with the cyclic GC scanning them as they pile up,
    10,000 runs took 18.5 s to read instead of 6.5 s (benchmarks/bench_store.py's store)."""
    from mlflow.tracking import MlflowClient

    uri = _sweep_store(tmp_path)
    searches: list[tuple[str, bool]] = []
    search = MlflowClient.search_runs

    def spy(self: MlflowClient, experiment_ids: list[str], filter_string: str = "", **kw: object) -> object:
        searches.append((filter_string, gc.isenabled()))
        return search(self, experiment_ids, filter_string, **kw)

    monkeypatch.setattr(MlflowClient, "search_runs", spy)
    assert gc.isenabled()
    frame = load_sweep_trials(uri, "s")
    assert gc.isenabled()  # restored
    assert [enabled for flt, enabled in searches if tags.PARENT in flt] == [False]
    assert frame["axis"].tolist() == ["data", "params"]
    assert (frame["val_loss"] == 3.5).all() and (frame["tokens"] == 64000).all()
    assert frame["axis_value"].tolist() == [64000.0, 32.0]


def test_gc_paused_restores_the_collector_state() -> None:
    with pytest.raises(RuntimeError), gc_paused():
        assert not gc.isenabled()
        raise RuntimeError
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # it was off before: left off
    finally:
        gc.enable()
