"""Cluster mode for real, on loopback: a 2-node Ray cluster (two `ray start` raylets), an MLflow tracking
server, a sweep submitted as a Ray Job through the CLI, an interactive driver attached with `--address`,
and the MLflow UI rendered by headless Chromium. Plus the submit command's checks, which need no cluster.

Every process is started in its own session (`start_new_session`) and torn down by session id, so only
what this module started is killed: never `ray stop`, which kills every Ray instance on the machine. The
cluster keeps its own temp dir (so `ray.init()` elsewhere never finds it) and its own auth token.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.cluster.jobs import STAGED_SPEC_DIR, plan_job, staged_working_dir
from tests.helpers import EBTSCALE, MLFLOW_SERVER_ENV, REPO, session_pids, wait_for, write_spec

BIN = Path(sys.executable).parent
ARTIFACTS = REPO / "outputs" / "test-artifacts"
SWEEP = "cluster-tiny"


def tiny_spec(folder: Path, name: str, families: list[str], budgets: list[int], output_dir: Path) -> Path:
    """Two-second trials (the shape of tests/helpers.py's write_spec) on a data axis of token budgets."""
    return write_spec(
        folder,
        name,
        tokens=budgets[0],
        families=families,
        axes={"data": {"tokens": budgets}},
        output_dir=output_dir,
        train={"eval_every": 3},
        deepspeed={"zero_stage": 1},
    )


# ---------------------------------------------------------------------------------------------- no cluster


def test_submit_refuses_what_would_break_or_leak_on_a_cluster(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path, "local", ["transformer_pp"], [1536], Path("outputs"))
    runner = CliRunner()
    cases = {
        "is not an absolute path": ["submit", str(spec)],
        "object-store URIs are not supported": ["submit", str(spec), "--output-dir", "s3://bucket/runs"],
        "--env HF_TOKEN: looks like a secret": [
            "submit",
            str(spec),
            "--output-dir",
            "/x",
            "--env",
            "HF_TOKEN=1",
        ],
    }
    for message, args in cases.items():
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.output
    leaky = runner.invoke(
        app, ["submit", str(spec), "--output-dir", "/x"], env={"MLFLOW_TRACKING_URI": "http://u:pw@h:5000"}
    )
    assert leaky.exit_code == 2 and "contains credentials" in leaky.stderr and "pw" not in leaky.stderr
    down = runner.invoke(app, ["jobs", "status", "nope", "--address", "http://127.0.0.1:9"])
    assert down.exit_code == 2 and down.stderr.startswith("error: ") and "Traceback" not in down.output


def test_job_ships_the_project_an_allowlisted_env_and_a_staged_spec(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path, "staged", ["transformer_pp"], [1536], Path("outputs"))
    environ = {
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "DS_ACCELERATOR": "cuda",
        "HF_TOKEN": "hf_secret",
        "AWS_SECRET_ACCESS_KEY": "aws_secret",
        "MLFLOW_TRACKING_PASSWORD": "pw",
    }
    job = plan_job(spec, environ, output_dir="/shared/runs")
    assert job.working_dir == REPO and {".venv", ".git", "outputs"} <= set(job.excludes)
    assert (
        job.entrypoint
        == f"python -m orchestrator.cli sweep run {STAGED_SPEC_DIR}/staged.yaml --max-failures 2"
    )
    assert {"MLFLOW_TRACKING_URI", "DS_ACCELERATOR"} <= set(job.env_vars)
    assert not any("secret" in v or v == "pw" for v in job.env_vars.values())
    with staged_working_dir(job) as folder:
        staged = yaml.safe_load((folder / job.spec_in_job).read_text())
        assert staged["output_dir"] == "/shared/runs" and staged["name"] == "staged"
        assert (folder / "orchestrator").resolve() == REPO / "orchestrator"
    assert not folder.exists()

    inside = tiny_spec(tmp_path, "inside", ["ebt"], [1536], tmp_path / "out")  # already absolute
    job = plan_job(inside, {}, working_dir=tmp_path)
    assert job.staged_spec is None and job.entrypoint.endswith("sweep run inside.yaml --max-failures 2")
    with staged_working_dir(job) as folder:
        assert folder == tmp_path  # uploaded as it is

    # a spec with a tune: block: the job tunes first, then trains the sweep on what the search chose
    tuned = yaml.safe_load(inside.read_text())
    tuned["tune"] = {"budget": {"tokens": 3072}, "reports": 2, "space": {"ebt": {"lr": [1e-3, 1e-2]}}}
    inside.write_text(yaml.safe_dump(tuned))
    job = plan_job(inside, {}, working_dir=tmp_path, max_concurrent=2)
    tune_cmd, run_cmd = job.entrypoint.split(" && ")
    assert tune_cmd == "python -m orchestrator.cli sweep tune inside.yaml --max-failures 2 --max-concurrent 2"
    assert run_cmd == "python -m orchestrator.cli sweep run inside.yaml --max-failures 2 --max-concurrent 2"


# ---------------------------------------------------------------------------------------------- processes


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports (held open together, so none repeats)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start `cmd` as the leader of a new session: all it spawns (raylet, workers, agents) shares its sid."""
    with log.open("ab") as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the session leader (`ray start --block` then shuts its node down), then SIGKILL whatever is
    left in its session. Touches nothing this module did not start."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace_s)
    deadline = time.time() + grace_s
    while (left := session_pids(proc.pid)) and time.time() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)


def http_json(url: str, token: str | None = None, timeout: float = 10) -> Any:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


@dataclass
class Stack:
    """A 2-node Ray cluster and an MLflow tracking server, all on this machine."""

    temp: Path
    gcs: str  # host:port: what `sweep run --address` and RAY_ADDRESS take
    dashboard: str  # http://127.0.0.1:port: the Jobs API
    tracking_uri: str
    token: str
    env: dict[str, str]  # what a client needs: the token, this interpreter on PATH, the tracking URI
    logs: list[Path]
    head_node: str = ""
    worker_node: str = ""
    procs: list[subprocess.Popen] = field(default_factory=list)

    def nodes(self) -> list[dict[str, Any]]:
        return http_json(f"{self.dashboard}/api/v0/nodes?limit=100", self.token)["data"]["result"]["result"]

    def train_worker_nodes(self, ray_job_id: str) -> set[str]:
        """Nodes where the DeepSpeed ranks of one Ray job ran, dead ones included: Ray Train workers, and the
        Tune trial actors that train single-worker trials themselves (`--launcher auto`)."""
        nodes = set()
        for actor_class in ("RayTrainWorker", "ImplicitFunc"):
            url = (
                f"{self.dashboard}/api/v0/actors?limit=10000&detail=1"
                f"&filter_keys=class_name&filter_predicates=%3D&filter_values={actor_class}"
            )
            actors = http_json(url, self.token)["data"]["result"]["result"]
            nodes |= {a["node_id"] for a in actors if a["job_id"] == ray_job_id}
        return nodes

    def cli(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(
                [*EBTSCALE, *args], capture_output=True, text=True, timeout=timeout, env=self.env, cwd=REPO
            )
        except subprocess.TimeoutExpired as err:
            pytest.fail(f"`ebtscale {' '.join(args)}` timed out after {timeout}s\n{self.log_tails()}\n{err}")

    def log_tails(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in self.logs if p.is_file())


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """Head (1 CPU) and worker node (1 CPU, resource `node2`) plus `mlflow server`, started in parallel."""
    # Short path: Ray's unix sockets live under it (108-byte limit), which pytest's tmp_path can exceed.
    temp = Path(tempfile.mkdtemp(prefix="ebtr-", dir="/tmp"))
    token = secrets.token_hex(32)
    (temp / "auth_token").write_text(token)
    gcs_port, dash_port, mlflow_port, *ports = free_ports(12)
    gcs = f"127.0.0.1:{gcs_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # the Job's `python` must be this interpreter
        RAY_AUTH_MODE="token",  # Ray's token auth, as docs/cluster.md recommends
        RAY_AUTH_TOKEN_PATH=str(temp / "auth_token"),
        # Ray processes that look their cluster up (Train's placement-group cleaner asks the State API)
        # would otherwise find two clusters when other tests run Ray on this machine at the same time.
        RAY_ADDRESS=gcs,
        RAY_USAGE_STATS_ENABLED="0",
        TOKENIZERS_PARALLELISM="false",
        **MLFLOW_SERVER_ENV,
    )
    s = Stack(temp, gcs, f"http://127.0.0.1:{dash_port}", f"http://127.0.0.1:{mlflow_port}", token, env, [])
    s.env["MLFLOW_TRACKING_URI"] = s.tracking_uri
    # Each node its own temp dir, as on separate machines: nodes sharing one would also share the unpacked
    # working dir of a job, and the worker node would delete it under the driver when its own trials end.
    node = ["--num-cpus=1", "--object-store-memory=100000000", "--disable-usage-stats", "--block"]
    head = [
        str(BIN / "ray"), "start", "--head", f"--port={gcs_port}", "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash_port}", f"--ray-client-server-port={ports[0]}", f"--temp-dir={temp}", *node,
        f"--dashboard-agent-listen-port={ports[1]}", f"--dashboard-agent-grpc-port={ports[2]}",
        f"--metrics-export-port={ports[3]}", f"--runtime-env-agent-port={ports[4]}",
    ]  # fmt: skip
    worker = [
        str(BIN / "ray"), "start", f"--address={gcs}", "--resources", '{"node2": 1}', *node,
        f"--temp-dir={temp / 'w'}",
        f"--dashboard-agent-listen-port={ports[5]}", f"--dashboard-agent-grpc-port={ports[6]}",
        f"--metrics-export-port={ports[7]}", f"--runtime-env-agent-port={ports[8]}",
    ]  # fmt: skip
    mlflow = [
        str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{temp}/mlflow.db",
        "--artifacts-destination", str(temp / "artifacts"),
    ]  # fmt: skip
    s.logs = [temp / "mlflow.log", temp / "head.log", temp / "worker.log"]
    try:
        s.procs.append(start(mlflow, env, s.logs[0]))
        s.procs.append(start(head, env, s.logs[1]))
        up = {"not_yet": (Exception,), "poll_s": 0.5, "logs": s.logs}
        wait_for(lambda: http_json(f"{s.dashboard}/api/version", token), 120, "the Ray head node", **up)
        s.procs.append(start(worker, env, s.logs[2]))

        def two_nodes() -> list[dict[str, Any]]:
            alive = [n for n in s.nodes() if n["state"] == "ALIVE"]
            return alive if len(alive) == 2 else []

        alive = wait_for(two_nodes, 120, "2 alive Ray nodes", **up)
        s.head_node = next(n["node_id"] for n in alive if n["is_head_node"])
        s.worker_node = next(n["node_id"] for n in alive if not n["is_head_node"])
        wait_for(lambda: urllib.request.urlopen(f"{s.tracking_uri}/health"), 120, "the MLflow server", **up)
        yield s
    finally:
        for proc in reversed(s.procs):
            stop(proc)
        shutil.rmtree(temp, ignore_errors=True)


@dataclass
class Submitted:
    job_id: str
    ray_job_id: str
    spec: Path
    output_dir: Path


@pytest.fixture(scope="module")
def submitted(stack: Stack) -> Submitted:
    """The tiny sweep (both families x 2 budgets: 4 trials) submitted as a Ray Job, followed to its end."""
    spec = tiny_spec(
        stack.temp, SWEEP, ["transformer_pp", "ebt"], [8 * 32 * 6, 8 * 32 * 12], stack.temp / "out"
    )
    sub = stack.cli("submit", str(spec), "--address", stack.dashboard, timeout=120)
    assert sub.returncode == 0, sub.stdout + sub.stderr
    job_id = sub.stdout.strip().splitlines()[-1]
    assert job_id.startswith(f"ebtscale-{SWEEP}-") and "entrypoint: python -m orchestrator.cli" in sub.stderr
    logs = stack.cli("jobs", "logs", job_id, "--follow", "--address", stack.dashboard, timeout=300)
    assert logs.returncode == 0, f"job did not succeed:\n{logs.stdout[-5000:]}\n{logs.stderr[-3000:]}"
    ray_job_id = http_json(f"{stack.dashboard}/api/jobs/{job_id}", stack.token)["job_id"]
    return Submitted(job_id, ray_job_id, spec, stack.temp / "out")


# ---------------------------------------------------------------------------------------------- cluster


@pytest.mark.slow
def test_submitted_sweep_runs_on_both_nodes_into_the_tracking_server(
    stack: Stack, submitted: Submitted
) -> None:
    from mlflow.tracking import MlflowClient

    status = stack.cli("jobs", "status", submitted.job_id, "--address", stack.dashboard)
    assert status.returncode == 0 and f"{submitted.job_id}: SUCCEEDED" in status.stdout
    info = http_json(f"{stack.dashboard}/api/jobs/{submitted.job_id}", stack.token)
    assert info["runtime_env"]["working_dir"].startswith("gcs://")  # the project was uploaded, not shared
    assert info["driver_node_id"] == stack.head_node
    listed = stack.cli("jobs", "list", "--address", stack.dashboard)
    assert f"{submitted.job_id}\tSUCCEEDED\t{SWEEP}" in listed.stdout

    # Trials were spread over the cluster: with one CPU per node, two concurrent trials need both nodes.
    assert stack.train_worker_nodes(submitted.ray_job_id) == {stack.head_node, stack.worker_node}
    results = list((submitted.output_dir / SWEEP / "trials").glob("*/result.json"))
    assert len(results) == 4

    client = MlflowClient(stack.tracking_uri)
    exp = client.get_experiment_by_name(SWEEP)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("ebtscale.role") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 4 and len(runs) == 5
    assert {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["ebtscale.family"] for r in children} == {"ebt", "transformer_pp"}
    for run in children:  # what the UI's charts draw
        assert len(client.get_metric_history(run.info.run_id, "train_loss")) >= 6
        assert len(client.get_metric_history(run.info.run_id, "val_loss")) >= 2
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # artifacts go through the server


@pytest.mark.slow
def test_mlflow_ui_shows_the_sweep_and_its_trials(stack: Stack, submitted: Submitted) -> None:
    """The MLflow web UI, rendered by a real browser: the sweep's parent run with its trials nested under it
    (the default view), every trial by name (a flat view, sorted by name), and their metric charts. The
    screenshots stay in outputs/test-artifacts/ for a human to look at."""
    from mlflow.tracking import MlflowClient

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail(
            "chromium is not installed: run `infra/ci/install-chromium.sh` (as root; Debian's chromium)"
        )
    client = MlflowClient(stack.tracking_uri)
    exp = client.get_experiment_by_name(SWEEP)
    names = {r.info.run_name for r in client.search_runs([exp.experiment_id])}
    runs_page = f"{stack.tracking_uri}/#/experiments/{exp.experiment_id}/runs"
    flat = f"{runs_page}?orderByKey=attributes.run_name&orderByAsc=true"  # the UI nests only by date
    browser = [
        chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1600,1000", "--virtual-time-budget=20000",
    ]  # fmt: skip

    def render(*args: str) -> str:
        """One page load in a fresh profile: the UI keeps view settings (sorting) in local storage."""
        profile = tempfile.mkdtemp(prefix="chromium-", dir=stack.temp)
        done = subprocess.run(
            [*browser, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    nested = render("--dump-dom", runs_page)  # by default the trials are folded under the sweep's run
    assert SWEEP in nested and f"<strong>{len(names)}</strong> matching runs" in nested
    assert not any(n in nested for n in names - {SWEEP})
    listed = render("--dump-dom", flat)
    missing = sorted(n for n in names if n not in listed)
    assert not missing, f"run names not on the experiment page: {missing}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for shot, url in (
        ("mlflow-sweep.png", runs_page),
        ("mlflow-sweep-charts.png", f"{flat}&compareRunsMode=CHART"),
    ):
        (ARTIFACTS / shot).unlink(missing_ok=True)
        render(f"--screenshot={ARTIFACTS / shot}", url)
        assert (ARTIFACTS / shot).stat().st_size > 10_000  # a rendered page, not a blank one


@pytest.mark.slow
def test_interactive_driver_attaches_with_address(stack: Stack) -> None:
    """`sweep run --address` drives the cluster from here (the other mode docs/cluster.md describes)."""
    from mlflow.tracking import MlflowClient

    spec = tiny_spec(stack.temp, "cluster-attached", ["transformer_pp"], [8 * 32 * 6], stack.temp / "out")
    run = stack.cli("sweep", "run", str(spec), "--address", stack.gcs, timeout=240)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    client = MlflowClient(stack.tracking_uri)
    exp = client.get_experiment_by_name("cluster-attached")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    jobs = http_json(f"{stack.dashboard}/api/v0/jobs?limit=100", stack.token)["data"]["result"]["result"]
    drivers = [j for j in jobs if j.get("job_id") and not j.get("submission_id")]  # not Ray-Jobs-submitted
    assert any(stack.train_worker_nodes(j["job_id"]) for j in drivers)
