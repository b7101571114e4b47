"""Guarantee: `ebtscale sweep repair` makes a sweep's MLflow store agree with its trial folders again after
a crash or an older concurrent run, losing no finished result. The store is corrupted the way two drivers of
one sweep left it before every stage took the driver lock (issue #31): a second parent run left RUNNING with
a duplicate child SCHEDULED under it, a trial's run left RUNNING with train_loss steps logged twice, and the
sweep's parent left RUNNING. Afterwards: one FINISHED parent, one FINISHED run per trial with every step once
and the final loss of its result.json, the results untouched; a second repair changes nothing, and a rerun
of the sweep trains nothing."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import cli, record_fault, result_mtimes, sweep_runs, write_spec

pytestmark = pytest.mark.slow

STEPS = 6


def test_repair_leaves_one_finished_run_per_trial_and_loses_no_result(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from orchestrator import tags

    spec = write_spec(tmp_path, "mended", tokens=8 * 32 * STEPS, families=("transformer_pp",))
    done = cli("sweep", "run", str(spec))
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "out"
    uri = f"sqlite:///{out / 'mlflow.db'}"
    client = MlflowClient(uri)
    (parent,), children = sweep_runs(uri, "mended")
    folders = sorted((out / "mended" / "trials").iterdir())
    results = {f.name: (f / "result.json").read_text() for f in folders}
    mtimes = result_mtimes(out)
    first, second = sorted(children, key=lambda r: r.data.tags[tags.TRIAL_ID])

    # the corruption: a second parent with a duplicate child, a run RUNNING with steps twice, parent RUNNING
    exp = parent.info.experiment_id
    stray = client.create_run(exp, run_name="mended", tags={tags.ROLE: tags.ROLE_SWEEP, tags.SWEEP: "mended"})
    dup_tags = {k: v for k, v in first.data.tags.items() if not k.startswith("mlflow.")}
    duplicate = client.create_run(
        exp, run_name=first.info.run_name, tags=dup_tags | {tags.PARENT: stray.info.run_id}
    )
    client.set_terminated(duplicate.info.run_id, status="SCHEDULED")
    for step in (1, 2, 3):
        client.log_metric(second.info.run_id, "train_loss", 9.0 + step, step=step)
    client.update_run(second.info.run_id, status="RUNNING")
    client.update_run(parent.info.run_id, status="RUNNING")

    repaired = cli("sweep", "repair", str(spec))
    assert repaired.returncode == 0, repaired.stderr[-3000:]
    report = repaired.stdout
    assert "a second parent, deleted" in report and "a duplicate, deleted" in report, report
    assert "logged twice" in report and "change(s)" in report, report

    parents, children = sweep_runs(uri, "mended")
    record_fault(
        "repair", "two parents, a duplicate child, steps twice, runs left RUNNING", injected=4,
        survived=sum(r.info.status == "FINISHED" for r in children), lost=abs(len(children) - 2),
    )  # fmt: skip
    assert [p.info.status for p in parents] == ["FINISHED"] and parents[0].info.run_id == parent.info.run_id
    assert sorted(r.data.tags[tags.TRIAL_ID] for r in children) == sorted(f.name[-12:] for f in folders)
    for run in children:
        assert run.info.status == "FINISHED" and run.data.tags[tags.PARENT] == parent.info.run_id
        (folder,) = [f for f in folders if f.name.endswith(run.data.tags[tags.TRIAL_ID])]
        assert json.loads((folder / "run.json").read_text())["run_id"] == run.info.run_id
        steps = Counter(m.step for m in client.get_metric_history(run.info.run_id, "train_loss"))
        assert sorted(steps) == list(range(1, STEPS + 1)) and set(steps.values()) == {1}, steps
        assert run.data.metrics["final_val_loss"] == json.loads(results[folder.name])["final_val_loss"]
    assert {f.name: (f / "result.json").read_text() for f in folders} == results  # no result touched

    again = cli("sweep", "repair", str(spec))
    assert again.returncode == 0 and "nothing to repair" in again.stdout, again.stdout + again.stderr
    rerun = cli("sweep", "run", str(spec))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert result_mtimes(out) == mtimes  # nothing trained again
    assert len(sweep_runs(uri, "mended")[1]) == 2
