"""Helpers for tests that drive the real CLI (`python -m orchestrator.cli sweep ...`) on embedded Ray and
read the resulting MLflow store: a tiny sweep spec, the CLI, the store's child runs, and killing a driver
with every Ray process it started."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

EBTSCALE = [sys.executable, "-m", "orchestrator.cli"]


def write_spec(
    tmp_path: Path,
    name: str,
    tokens: int,
    checkpoint_every: int = 6,
    families: tuple[str, ...] = ("transformer_pp", "ebt"),
    widths: tuple[int, ...] = (32, 48),
    **base: Any,
) -> Path:
    """A params-axis sweep of tiny models (families x widths trials); `base` sections deep-merge over it."""
    from orchestrator.config import deep_merge

    spec = {
        "name": name,
        "families": list(families),
        "base": {
            "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "vocab_size": 320, "context_length": 32},
            "data": {"source": "stdlib", "vocab_size": 320, "max_documents": 150},
            "train": {
                "tokens": tokens,
                "global_batch_size": 8,
                "micro_batch_size": 8,
                "eval_every": 6,
                "checkpoint_every": checkpoint_every,
            },
            "deepspeed": {"zero_stage": 2, "precision": "fp32"},
        },
        "axes": {"params": {"d_model": list(widths), "head_dim": 16}},
        "output_dir": str(tmp_path / "out"),
    }
    spec["base"] = deep_merge(spec["base"], base)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*EBTSCALE, *args], capture_output=True, text=True, timeout=timeout, env=os.environ)


def start_cli(*args: str) -> subprocess.Popen:
    """The CLI in a session of its own: the driver and the Ray it starts can be killed together."""
    return subprocess.Popen(
        [*EBTSCALE, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def child_runs(uri: str, sweep: str) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(sweep)
    return [r for r in client.search_runs([exp.experiment_id]) if "mlflow.parentRunId" in r.data.tags]


def result_mtimes(root: Path) -> dict[str, float]:
    """Our trials' result files (not Ray Tune's own result.json files, which a restore appends to)."""
    return {str(p): p.stat().st_mtime for p in root.glob("*/trials/*/result.json")}


def _proc_stat(pid_dir: Path) -> list[str]:
    return pid_dir.joinpath("stat").read_text().rsplit(")", 1)[1].split()


def kill_session(sid: int) -> None:
    """SIGKILL every process of a session: the driver and all Ray processes it started (which put
    themselves in process groups of their own, so killpg alone would miss them)."""
    for pid_dir in Path("/proc").glob("[0-9]*"):
        try:
            fields = _proc_stat(pid_dir)
        except OSError:
            continue
        if int(fields[3]) == sid:  # after the command name: state, ppid, pgrp, session
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_dir.name), signal.SIGKILL)


def session_processes(sid: int, title: str) -> list[int]:
    """Pids in session `sid` whose command line contains `title` (Ray names its workers' processes
    `ray::<ActorClass>...`)."""
    pids = []
    for pid_dir in Path("/proc").glob("[0-9]*"):
        try:
            if int(_proc_stat(pid_dir)[3]) != sid:
                continue
            cmdline = pid_dir.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title in cmdline:
            pids.append(int(pid_dir.name))
    return pids


def wait_for(condition: Callable[[], Any], timeout: float, what: str, poll_s: float = 0.1) -> Any:
    """Poll until `condition()` is truthy; returns its value, or fails the test naming `what`."""
    import pytest

    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def record_fault(guarantee: str, fault: str, injected: int, survived: int, lost: int, **details: Any) -> None:
    """Append one fault-injection outcome to $EBTSCALE_FAULT_LOG (JSON lines), when set: `make chaos` sets
    it and prints the table that docs/reliability.md quotes. Recorded before the test's assertions, so a
    failing run is counted too. survived: trials that finished despite the fault; lost: planned trials or
    metric steps without exactly one FINISHED record."""
    path = os.environ.get("EBTSCALE_FAULT_LOG")
    if not path:
        return
    import json

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    row = {"guarantee": guarantee, "fault": fault, "injected": injected, "survived": survived, "lost": lost}
    with open(path, "a") as f:
        f.write(json.dumps(row | details) + "\n")
