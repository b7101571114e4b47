"""orchestrator/sweep/extend.py: `sweep extend`'s settings and its real round trip (a tiny sweep on Ray,
DeepSpeed and MLflow): rounds recorded in extend.json and on the sweep's MLflow run, and a driver killed
mid-round that resumes on rerun without training anything twice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator import tags
from orchestrator.config import ConfigError
from orchestrator.sweep.extend import ExtendSettings, candidate_grid
from orchestrator.sweep.spec import SpecError, load_spec
from tests.helpers import child_runs, cli, kill_session, result_mtimes, start_cli, wait_for, write_spec

SWEEP = "extended"
DATA_AXIS = {"data": {"tokens": [1024, 1536, 2048, 3072, 4096]}}


def test_settings_come_from_the_block_and_the_command_line_and_name_what_is_missing(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, SWEEP, 2048, axes=DATA_AXIS))
    with pytest.raises(ConfigError, match="budget-flops"):
        ExtendSettings.of(spec)
    s = ExtendSettings.of(spec, budget_flops=1e9, target_width=0.3)
    assert (s.axis, s.budget_flops, s.target_width, s.batch, s.min_distinct) == ("data", 1e9, 0.3, 4, None)
    assert candidate_grid(spec, s)[0] == 1024 and candidate_grid(spec, s)[-1] == 4096
    with pytest.raises(ConfigError, match="no batch axis"):
        ExtendSettings.of(spec, budget_flops=1e9, axis="batch")

    path = write_spec(tmp_path, SWEEP, 2048, axes=DATA_AXIS)
    block = "adaptive: {axis: data, budget_flops: 5.0e+9, batch: 2, range: [512, 8192], points: 9}\n"
    path.write_text(path.read_text() + block)
    spec = load_spec(path)
    s = ExtendSettings.of(spec, batch=3)
    assert (s.budget_flops, s.batch, s.range) == (5e9, 3, (512.0, 8192.0))
    assert candidate_grid(spec, s) == [512, 724, 1024, 1448, 2048, 2896, 4096, 5793, 8192]


def test_a_wrong_adaptive_block_fails_before_anything_runs_naming_the_field(tmp_path: Path) -> None:
    path = write_spec(tmp_path, SWEEP, 2048, axes=DATA_AXIS)
    text = path.read_text() + "adaptive: {axis: batch, budget_flops: 1.0e+9}\n"
    path.write_text(text)
    with pytest.raises(SpecError, match=r"adaptive\.axis"):
        load_spec(path)
    path.write_text(text.replace("axis: batch", "axis: data, range: [4096, 1024]"))
    with pytest.raises(SpecError, match=r"adaptive\.range"):
        load_spec(path)


@pytest.mark.slow
def test_extend_adds_rounds_records_them_and_resumes_a_killed_round_without_duplicates(
    tmp_path: Path,
) -> None:
    spec = write_spec(tmp_path, SWEEP, 2048, axes=DATA_AXIS)
    out = tmp_path / "out"
    assert cli("sweep", "run", str(spec)).returncode == 0
    uri = f"sqlite:///{out / 'mlflow.db'}"
    state_file = out / SWEEP / "extend.json"
    args = ("sweep", "extend", str(spec), "--budget-flops", "6e9", "--batch", "2", "--target-width", "0.001")

    # the driver killed once the first round is chosen (written) and before it has all trained
    proc = start_cli(*args)
    try:
        wait_for(lambda: state_file.exists() and json.loads(state_file.read_text())["rounds"], 600, "a round")
    finally:
        kill_session(proc.pid)
        proc.wait()
    first = json.loads(state_file.read_text())["rounds"][0]
    assert not first["trained"] and len(first["trials"]) == 2

    done = cli(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming its 2 trials" in done.stdout
    state = json.loads(state_file.read_text())
    assert state["stop"] in ("budget spent", "no candidate narrows the interval", "target width reached")
    rounds = state["rounds"]
    assert rounds[0]["trials"] == first["trials"] and all(r["trained"] for r in rounds)
    assert sum(r["flops"] for r in rounds) <= 6e9
    added = [t["id"] for r in rounds for t in r["trials"]]
    assert len(added) == len(set(added))

    runs = child_runs(uri, SWEEP)
    ids = [r.data.tags[tags.TRIAL_ID] for r in runs]
    assert len(ids) == len(set(ids)) == 10 + len(added)  # one run per trial: the sweep's and the added
    assert {r.info.status for r in runs} == {"FINISHED"}
    rounds_of = {r.data.tags[tags.TRIAL_ID]: r.data.tags.get(tags.EXTEND_ROUND) for r in runs}
    assert {rounds_of[t["id"]] for t in rounds[0]["trials"]} == {"1"}

    from orchestrator.tracking import mlflow_client

    client = mlflow_client(uri)
    parent = json.loads((out / SWEEP / "sweep.json").read_text())["parent_run_id"]
    widths = client.get_metric_history(parent, "extend_width")
    assert sorted({m.step for m in widths})[: len(rounds)] == list(range(1, len(rounds) + 1))
    assert client.get_run(parent).data.tags[tags.EXTEND_STOP] == state["stop"]
    logged = {a.path for a in client.list_artifacts(parent, tags.EXTEND_ARTIFACT_DIR)}
    assert logged == {f"{tags.EXTEND_ARTIFACT_DIR}/round-{r['number']}.json" for r in rounds}

    # the report shows the rounds (its Design section) and why they stopped
    report = cli("report", str(spec), "--bootstrap", "50")
    assert report.returncode == 0, report.stdout + report.stderr
    assert "## Design: adaptive rounds" in (out / SWEEP / "report" / "report.md").read_text()
    summary = json.loads((out / SWEEP / "report" / "summary.json").read_text())
    assert [r["round"] for r in summary["design"]] == list(range(1, len(rounds) + 2))
    assert summary["design"][-1]["stop"] == state["stop"]

    # run again: the same stop, nothing trained twice, no new run
    before = result_mtimes(out)
    again = cli(*args)
    assert again.returncode == 0, again.stdout + again.stderr
    assert result_mtimes(out) == before and len(child_runs(uri, SWEEP)) == len(runs)
    assert json.loads(state_file.read_text())["rounds"] == rounds
