"""Guarantee: the tracking server going away does not stop or slow training, and loses nothing.

A real `mlflow server` process (sqlite store, proxied artifact store) is SIGKILLed while a trial trains
against it and restarted on the same port and store 12 s later (also 30 s later in `make chaos`). Training
must keep stepping during the outage (MLflow's HTTP client would otherwise retry each flush with backoff for
minutes), and once the store is back the run must hold every step of train_loss exactly once, its final
metrics, tags and artifacts. Calls the trainer makes only now and then (params, tags, artifacts) must not
fail or block during an outage either: they are kept and sent with the next flush."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from orchestrator.ports import free_port
from tests.helpers import EBTSCALE, MLFLOW_SERVER_ENV, record_fault, tiny_trial

MLFLOW = Path(sys.executable).parent / "mlflow"
# outage seconds -> training steps (~133 steps/s on one thread): the outage lies well inside the training
OUTAGES = {12.0: 3000, 30.0: 8000}


class MlflowServer:
    """`mlflow server` in a process group of its own, restartable on the same port and store."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120.0) -> float:
        """Start and wait for /health; returns the seconds it took."""
        t0 = time.monotonic()
        log = (self.root / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [
                str(MLFLOW),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--backend-store-uri",
                f"sqlite:///{self.root / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.root / "artifacts"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **MLFLOW_SERVER_ENV},
        )
        while time.monotonic() - t0 < timeout:
            if self.proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - t0
            time.sleep(0.2)
        pytest.fail(f"mlflow server not healthy after {timeout:.0f} s")

    def kill(self) -> None:
        """SIGKILL the server's whole process group (uvicorn and its worker) and wait for it."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One server process for the module (each test kills and restarts it; runs are told apart by id)."""
    srv = MlflowServer(tmp_path_factory.mktemp("server"))
    srv.start()
    yield srv
    srv.kill()


@pytest.fixture
def server(shared_server: MlflowServer) -> MlflowServer:
    """The module's server, up: started again if a test before this one left it down."""
    if shared_server.proc is None:
        shared_server.start()
    return shared_server


def test_tracker_calls_during_an_outage_return_at_once_and_land_after_restart(
    server: MlflowServer, tmp_path: Path
) -> None:
    """Every RunTracker call the trainer makes, while the server is down: none raises, none waits out
    MLflow's retry backoff; `end()` waits for the server to come back, then everything is in the run."""
    from mlflow.tracking import MlflowClient

    from orchestrator.tracking import RunTracker

    tracker = RunTracker.start(server.uri, "outage-unit", "unit", tags={"ebtscale.family": "x"})
    tracker.log_metrics({"train_loss": 5.0}, step=1)
    assert tracker.flush()
    artifact = tmp_path / "result.json"
    artifact.write_text('{"status": "finished"}')

    server.kill()
    t0 = time.monotonic()
    tracker.log_params({"model": {"d_model": 32}, "tokens": 1000})
    tracker.set_tags({"ebtscale.status": "running"})
    tracker.log_artifact(artifact)
    for step in range(2, 6):
        tracker.log_metrics({"train_loss": 5.0 - step / 10, "lr": 1e-3}, step=step)
    assert not tracker.flush()  # nothing could be sent, and it says so
    tracker.set_tags({"ebtscale.status": "finished"})  # the later value wins
    blocked = time.monotonic() - t0
    assert blocked < 5.0, f"tracker calls blocked {blocked:.1f} s with the server down"
    assert tracker.pending == 8 + 2 + 1 + 1  # 8 metrics, 2 params, 1 tag (latest value), 1 artifact

    restart = threading.Thread(target=server.start)  # the server comes back while end() waits for it
    t1 = time.monotonic()
    restart.start()
    try:
        tracker.end()
    finally:
        restart.join()
    waited = time.monotonic() - t1
    assert tracker.pending == 0
    assert tracker.failed_flushes <= waited / 2 + 3  # it retried every ~2 s, not in a tight loop

    run = MlflowClient(server.uri).get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"model.d_model": "32", "tokens": "1000"}
    assert run.data.tags["ebtscale.status"] == "finished"
    history = MlflowClient(server.uri).get_metric_history(tracker.run_id, "train_loss")
    assert sorted(m.step for m in history) == [1, 2, 3, 4, 5]
    assert [a.path for a in MlflowClient(server.uri).list_artifacts(tracker.run_id)] == ["result.json"]
    print(f"\ntracker calls with the server down took {blocked:.2f} s; end() waited {waited:.1f} s for it")


@pytest.mark.slow
@pytest.mark.parametrize("outage_s", [12.0, pytest.param(30.0, marks=pytest.mark.chaos)])
def test_training_rides_out_a_tracking_server_outage(
    server: MlflowServer, tmp_path: Path, outage_s: float
) -> None:
    steps = OUTAGES[outage_s]
    cfg = tiny_trial(
        tmp_path / "out",
        name="outage",
        train={"tokens": 8 * 32 * steps, "log_every": 1, "checkpoint_every": 1000, "eval_every": 2000},
    )
    config = tmp_path / "trial.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    folder = cfg.folder
    env = dict(os.environ)
    env.update(MLFLOW_TRACKING_URI=server.uri, OMP_NUM_THREADS="1")
    log = tmp_path / "train.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*EBTSCALE, "train", str(config), "--experiment", "outage"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        progress = folder.progress
        deadline = time.time() + 300
        while not (progress.is_file() and json.loads(progress.read_text())["step"] >= 200):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, "training did not start"
            time.sleep(0.1)
        step_at_kill = json.loads(progress.read_text())["step"]
        server.kill()
        down_at = time.time()
        time.sleep(outage_s)
        step_at_restart = json.loads(progress.read_text())["step"]
        restart_s = server.start()
        up_at = time.time()
        assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(server.uri)
    result = json.loads(folder.result.read_text())
    run = client.get_run(result["run_id"])
    history = client.get_metric_history(result["run_id"], "train_loss")
    counts = Counter(m.step for m in history)
    record_fault(
        "tracking store unavailable",
        f"mlflow server SIGKILLed mid-trial, restarted after {outage_s:.0f} s",
        injected=1,
        survived=int(result["status"] == "finished" and run.info.status == "FINISHED"),
        lost=(steps - len(counts)) + sum(n - 1 for n in counts.values()),  # missing + repeated steps
        outage_s=round(up_at - down_at, 1),
    )
    assert result["status"] == "finished" and result["steps"] == steps
    assert run.info.status == "FINISHED"

    # every step exactly once, with the values the trainer computed
    assert sorted(counts) == list(range(1, steps + 1)), "steps missing from train_loss"
    assert set(counts.values()) == {1}, f"repeated steps: {[s for s, n in counts.items() if n > 1][:10]}"
    by_step = {m.step: m.value for m in history}
    assert [by_step[s] for s in range(1, steps + 1)] == pytest.approx(result["losses"])

    # training never stalled: metric timestamps are taken when the trainer logs a step, not when it is sent
    stamps = sorted((m.timestamp / 1000, m.step) for m in history)
    during = [s for t, s in stamps if down_at <= t <= up_at]
    assert step_at_restart > step_at_kill + 100, "training did not advance while the server was down"
    assert len(during) > 100, "no steps were logged while the server was down"
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(stamps) if down_at <= a[0] <= up_at]
    assert max(gaps) < 3.0, f"a step waited {max(gaps):.1f} s on the tracking server"

    # the rest of the run arrived too
    assert {"final_val_loss", "val_loss", "lr", "tokens_per_s", "train_time_s"} <= set(run.data.metrics)
    assert run.data.metrics["final_val_loss"] == pytest.approx(result["final_val_loss"])
    assert run.data.tags["ebtscale.status"] == "finished"
    assert run.data.params["model.d_model"] == "32"
    assert {a.path for a in client.list_artifacts(result["run_id"])} >= {"config.yaml", "result.json"}

    text = log.read_text()
    buffered = [int(n) for n in re.findall(r"(\d+) metrics buffered", text)]
    assert buffered, "the trainer never noticed the outage"
    assert len(buffered) <= (up_at - down_at) / 2 + 10, f"{len(buffered)} send attempts: a retry storm"
    n_during = sum(1 for m in history if down_at <= m.timestamp / 1000 <= up_at)
    print(
        f"\noutage: {up_at - down_at:.1f} s (killed at step {step_at_kill}, {outage_s:.0f} s down + "
        f"{restart_s:.1f} s restart); steps trained while down: {len(during)}; "
        f"metrics buffered (peak, from the trainer's log): {max(buffered)}; failed flushes: {len(buffered)}; "
        f"train_loss steps delivered: {len(history)}/{steps}; steps lost: {steps - len(counts)}; "
        f"largest gap between steps during the outage: {max(gaps):.2f} s; train_loss values logged "
        f"while down: {n_during}"
    )
