"""The tuning stage end to end through the real CLI: Ray Tune with ASHA on the real trainer (DeepSpeed) into
the sweep's MLflow store; then the sweep's plan on the chosen values, and a re-run that trains nothing."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest

from orchestrator import tags
from orchestrator.sweep.expand import expand, tuning_state
from orchestrator.sweep.spec import load_spec
from orchestrator.sweep.tuning import plan_searches, stopped_result
from orchestrator.trial_dir import TrialStatus
from tests.helpers import child_runs, cli, write_spec, write_yaml


@pytest.mark.slow
def test_asha_stops_some_trials_the_choice_reaches_the_sweep_and_a_rerun_trains_nothing(
    tmp_path: Path,
) -> None:
    path = write_spec(
        tmp_path,
        "tuned",
        tokens=2048,
        families=["transformer_pp"],
        axes={"data": {"tokens": [1024, 2048]}},
        checkpoint_every=100,
    )
    spec_data = load_spec(path).model_dump(mode="json")
    spec_data["tune"] = {
        "num_samples": 6,
        "budget": {"tokens": 3072},  # 12 steps of 256 tokens
        "reports": 3,  # a validation loss every 4 steps
        "grace_reports": 1,
        "reduction_factor": 2,
        "max_concurrent": 1,  # one at a time: ASHA compares each trial with those that reached a rung before
        "space": {"transformer_pp": {"lr": {"loguniform": [1e-4, 1e-1]}}},
    }
    write_yaml(path, spec_data)
    spec = load_spec(path)
    (search,) = plan_searches(spec)
    assert len(search.trials) == 6

    result = cli("sweep", "tune", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tuning" in result.stdout and "lr" in result.stdout

    folders = {t.id: t.config.folder for t in search.trials}
    outcomes = {i: json.loads(f.result.read_text()) for i, f in folders.items()}
    stopped = [o for o in outcomes.values() if o["status"] == TrialStatus.STOPPED]
    finished = [o for o in outcomes.values() if o["status"] == TrialStatus.FINISHED]
    assert len(stopped) >= 1 and len(finished) >= 1 and len(stopped) + len(finished) == 6, outcomes
    assert all(o["steps"] < 12 and o["steps"] % 4 == 0 for o in stopped)  # stopped at a rung, before the end
    assert all(o["train_time_s"] > 0 for o in stopped)  # also where the driver wrote it from the last report
    assert all(o["steps"] == 12 for o in finished)

    payload = json.loads(tuning_state(spec).path.read_text())
    assert payload["complete"]
    (size,) = payload["sizes"].values()
    assert size["counts"] == {"finished": len(finished), "stopped": len(stopped)}
    best = min(finished, key=lambda o: o["final_val_loss"])
    assert size["chosen"]["val_loss"] == best["final_val_loss"]
    chosen_lr = size["chosen"]["values"]["lr"]
    assert 1e-4 <= chosen_lr <= 1e-1 and {t["id"] for t in size["trials"]} == set(folders)

    # every tuning trial has one MLflow run, a child of the sweep's parent run, tagged as tuning
    uri = f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    runs = child_runs(uri, "tuned")
    assert sorted(r.data.tags[tags.TRIAL_ID] for r in runs) == sorted(folders)
    assert all(r.data.tags[tags.STAGE] == tags.STAGE_TUNING for r in runs)
    assert sorted(r.data.tags[tags.STATUS] for r in runs) == sorted(o["status"] for o in outcomes.values())
    assert all(r.info.status == "FINISHED" for r in runs)
    # the spec's max_concurrent held: each trial's validation losses were logged before the next one's began
    from mlflow.tracking import MlflowClient

    history = MlflowClient(uri).get_metric_history
    stamps = {
        r.data.tags[tags.TRIAL_ID]: [m.timestamp for m in history(r.info.run_id, "val_loss")] for r in runs
    }
    assert all(stamps.values()), stamps  # every trial's losses reached the store, a stopped one's too
    spans = sorted((min(t), max(t)) for t in stamps.values())
    assert len(spans) == 6 and all(b[0] > a[1] for a, b in itertools.pairwise(spans)), spans

    # the sweep's trials train the chosen lr, under new ids; the plan says where the values came from
    for t in expand(spec):
        assert t.config.optim.lr == chosen_lr and t.tuned is not None and t.tuned.how == "tuned"
    plan = cli("sweep", "plan", str(path), "--throughput", "1e9", "--json")
    assert plan.returncode == 0, plan.stderr
    rows = json.loads(plan.stdout)["trials"]
    assert all(r["tuned"]["values"]["lr"] == chosen_lr for r in rows)

    # a re-run: nothing is trained again, no run is added
    mtimes = {i: f.result.stat().st_mtime for i, f in folders.items()}
    start = time.monotonic()
    again = cli("sweep", "tune", str(path))
    assert again.returncode == 0, again.stderr[-3000:]
    assert {i: f.result.stat().st_mtime for i, f in folders.items()} == mtimes
    assert len(child_runs(uri, "tuned")) == 6
    assert json.loads(tuning_state(spec).path.read_text())["chosen"] == payload["chosen"]
    assert time.monotonic() - start < 60, "a finished search starts no Ray"


def test_a_stopped_trials_outcome_comes_from_its_last_report(tmp_path: Path) -> None:
    """What the driver writes for a trial ASHA stopped whose own process did not get to (Tune ends it without
    waiting): the report's step, loss and training time; nothing for a report that is no early stop."""
    path = write_spec(tmp_path, "tuned", tokens=2048, families=["transformer_pp"])
    config = expand(load_spec(path))[0].config  # 8 steps of 256 tokens
    report = {"val_loss": 5.5, "report": 1, "step": 4, "train_time_s": 1.25}
    result = stopped_result(report, config)
    assert result is not None and result.status == TrialStatus.STOPPED
    assert (result.steps, result.tokens, result.train_time_s) == (4, 1024, 1.25)
    assert result.final_val_loss == 5.5 and result.final_val_perplexity == pytest.approx(244.69, abs=0.01)
    assert "step 4" in result.reason
    assert stopped_result({**report, "val_loss": float("nan")}, config).final_val_loss is None
    assert stopped_result({**report, "step": 8}, config) is None  # its whole budget: finished
    assert stopped_result({"final": 1}, config) is None  # never reported
