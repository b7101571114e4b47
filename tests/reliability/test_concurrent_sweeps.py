"""Guarantee: sweeps running at the same time against one MLflow store (one output_dir, one sqlite file) do
not disturb each other, and the same sweep started twice at once still trains each trial once, into one run.

Each sweep is a real `python -m orchestrator.cli sweep run` driver with its own embedded Ray; the store is
the real sqlite file both write to."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import EBTSCALE, kill_session, record_fault, sweep_runs, write_spec

pytestmark = pytest.mark.slow

STEPS = 6


def start(*args: str, log: Path) -> subprocess.Popen:
    """The CLI in a session of its own (the driver and its Ray can be killed together), output to `log`."""
    env = dict(os.environ)
    with log.open("wb") as out:
        return subprocess.Popen(
            [*EBTSCALE, *args], stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )


def wait_all(procs: list[subprocess.Popen], timeout: float) -> list[int]:
    deadline = time.time() + timeout
    try:
        return [p.wait(timeout=max(1.0, deadline - time.time())) for p in procs]
    finally:
        for p in procs:
            kill_session(p.pid)  # stray Ray processes, or everything if a wait timed out


def lr_spec(tmp_path: Path, name: str, lr: float) -> Path:
    """Two Transformer++ trials (two widths); the learning rate makes the specs' trials differ (ids are
    config hashes, so two otherwise equal specs would share trial ids)."""
    return write_spec(tmp_path, name, tokens=8 * 32 * STEPS, families=("transformer_pp",), optim={"lr": lr})


def check_sweep(uri: str, out: Path, sweep: str) -> tuple[str, list]:
    """One FINISHED parent, one FINISHED child per trial under it, each tied to its own trial folder, with
    every step of train_loss once. Returns (parent id, children)."""
    from mlflow.tracking import MlflowClient

    parents, children = sweep_runs(uri, sweep)
    assert len(parents) == 1, f"{sweep}: {len(parents)} parent runs"
    (parent,) = parents
    assert parent.info.status == "FINISHED"
    assert json.loads((out / sweep / "sweep.json").read_text())["parent_run_id"] == parent.info.run_id
    assert len(children) == 2, f"{sweep}: {len(children)} child runs for 2 trials"
    assert {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    folders = sorted((out / sweep / "trials").iterdir())
    assert len(folders) == 2
    by_folder = {json.loads((d / "run.json").read_text())["run_id"]: d for d in folders}
    assert set(by_folder) == {r.info.run_id for r in children}
    client = MlflowClient(uri)
    for r in children:
        folder = by_folder[r.info.run_id]
        assert folder.name.endswith(r.data.tags["ebtscale.trial_id"])
        assert json.loads((folder / "result.json").read_text())["status"] == "finished"
        steps = Counter(m.step for m in client.get_metric_history(r.info.run_id, "train_loss"))
        assert sorted(steps) == list(range(1, STEPS + 1)) and set(steps.values()) == {1}
    return parent.info.run_id, children


def record_outcome(uri: str, specs: dict[str, Path], fault: str) -> None:
    """For the fault table: trials with exactly one FINISHED child run, and the runs too many or missing."""
    finished = lost = 0
    for sweep in specs:
        try:
            parents, children = sweep_runs(uri, sweep)
        except Exception:  # no store or experiment at all
            parents, children = [], []
        ids = Counter(r.data.tags.get("ebtscale.trial_id") for r in children)
        finished += sum(
            1
            for r in children
            if r.info.status == "FINISHED" and ids[r.data.tags.get("ebtscale.trial_id")] == 1
        )
        lost += abs(len(children) - 2) + abs(len(parents) - 1) + (2 - min(2, len(ids)))
    record_fault("concurrent sweeps on one store", fault, injected=1, survived=finished, lost=lost)


def test_two_sweeps_share_one_store_at_once(tmp_path: Path) -> None:
    specs = {"alpha": lr_spec(tmp_path, "alpha", 1e-3), "beta": lr_spec(tmp_path, "beta", 2e-3)}
    t0 = time.monotonic()
    procs = [start("sweep", "run", str(p), log=tmp_path / f"{n}.log") for n, p in specs.items()]
    codes = wait_all(procs, timeout=600)
    took = time.monotonic() - t0
    logs = {n: (tmp_path / f"{n}.log").read_text()[-3000:] for n in specs}
    out = tmp_path / "out"
    uri = f"sqlite:///{out / 'mlflow.db'}"
    record_outcome(uri, specs, "2 different sweeps started at once on one output_dir (one sqlite store)")
    assert codes == [0, 0], logs

    (alpha_parent, alpha), (beta_parent, beta) = (check_sweep(uri, out, n) for n in specs)
    assert alpha_parent != beta_parent
    ids = [r.info.run_id for r in alpha + beta] + [alpha_parent, beta_parent]
    assert len(set(ids)) == 6
    assert not {r.data.tags["ebtscale.trial_id"] for r in alpha} & {
        r.data.tags["ebtscale.trial_id"] for r in beta
    }
    from mlflow.tracking import MlflowClient

    experiments = {MlflowClient(uri).get_run(r.info.run_id).info.experiment_id for r in alpha + beta}
    assert len(experiments) == 2  # one experiment per sweep
    print(f"\ntwo sweeps at once on one store: {took:.0f} s, 2 parents + 4 children, no collision")


def test_the_same_sweep_started_twice_at_once_trains_once(tmp_path: Path) -> None:
    spec = lr_spec(tmp_path, "twice", 1e-3)
    t0 = time.monotonic()
    procs = [start("sweep", "run", str(spec), log=tmp_path / f"driver-{i}.log") for i in range(2)]
    codes = wait_all(procs, timeout=600)
    took = time.monotonic() - t0
    logs = [(tmp_path / f"driver-{i}.log").read_text() for i in range(2)]
    assert sorted(codes) == [0, 2], logs  # one driver runs the sweep, the other is refused
    out = tmp_path / "out"
    record_outcome(f"sqlite:///{out / 'mlflow.db'}", {"twice": spec}, "the same sweep started twice at once")
    refused = logs[codes.index(2)] if 2 in codes else ""
    assert "error: sweep twice is already running" in refused and "Traceback" not in refused

    check_sweep(f"sqlite:///{out / 'mlflow.db'}", out, "twice")
    # and once it is done, the sweep can be run again (the lock went with the driver): nothing to train
    again = subprocess.run(
        [*EBTSCALE, "sweep", "run", str(spec)],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ),
    )
    assert again.returncode == 0, again.stdout + again.stderr
    check_sweep(f"sqlite:///{out / 'mlflow.db'}", out, "twice")
    print(f"\nsame sweep twice at once: {took:.0f} s; the second driver was refused")


def tuning_spec(tmp_path: Path, name: str) -> Path:
    """One Transformer++ size with a 2-trial lr search (the tuning stage) and one data point."""
    from orchestrator.sweep.spec import load_spec
    from tests.helpers import write_yaml

    path = write_spec(
        tmp_path, name, tokens=8 * 32 * STEPS, families=["transformer_pp"], axes={"data": {"tokens": [1536]}}
    )
    data = load_spec(path).model_dump(mode="json")
    data["tune"] = {
        "num_samples": 2,
        "budget": {"tokens": 8 * 32 * STEPS},
        "reports": 2,
        "space": {"transformer_pp": {"lr": {"loguniform": [3e-3, 3e-2]}}},
    }
    return write_yaml(path, data)


def test_the_same_tuning_stage_started_twice_at_once_runs_once(tmp_path: Path) -> None:
    """The tuning stage starts as the sweep does, under the sweep's driver lock: of two `sweep tune` drivers
    started at once, one searches and the other is refused before it creates a run or trains a trial."""
    from mlflow.tracking import MlflowClient

    from orchestrator.sweep.spec import load_spec
    from orchestrator.sweep.tuning import plan_searches

    spec = tuning_spec(tmp_path, "tunedtwice")
    procs = [start("sweep", "tune", str(spec), log=tmp_path / f"tuner-{i}.log") for i in range(2)]
    codes = wait_all(procs, timeout=600)
    logs = [(tmp_path / f"tuner-{i}.log").read_text() for i in range(2)]
    out = tmp_path / "out"
    uri = f"sqlite:///{out / 'mlflow.db'}"
    parents, children = sweep_runs(uri, "tunedtwice")
    ids = Counter(r.data.tags.get("ebtscale.trial_id") for r in children)
    record_fault(
        "concurrent sweeps on one store",
        "the same tuning stage started twice at once",
        injected=1,
        survived=sum(n == 1 for n in ids.values()),
        lost=sum(n - 1 for n in ids.values()) + abs(len(parents) - 1),
    )
    assert sorted(codes) == [0, 2], logs
    refused = logs[codes.index(2)]
    assert "error: sweep tunedtwice is already running" in refused and "Traceback" not in refused

    (search,) = plan_searches(load_spec(spec))
    planned = {t.id for t in search.trials}
    assert len(parents) == 1 and len(children) == len(planned) == 2
    assert set(ids) == planned and set(ids.values()) == {1}, ids  # one run per tuning trial
    client = MlflowClient(uri)
    for run in children:
        steps = Counter(m.step for m in client.get_metric_history(run.info.run_id, "train_loss"))
        assert set(steps.values()) == {1}, f"{run.info.run_name}: a step logged twice"
    for t in search.trials:
        assert t.config.folder.result.is_file() and not t.config.folder.failed.exists()
    assert json.loads((out / "tunedtwice" / "tuning.json").read_text())["complete"]
