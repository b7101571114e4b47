"""What the tests share, imported as `tests.helpers`: tiny trial configs, models and batches; tiny sweep
specs; the real CLI (`python -m orchestrator.cli ...`) and the MLflow store it writes; polling; the
processes of a session (a driver and every Ray process it started); the fault log of `make chaos`."""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    import torch

    from model.config import ModelConfig
    from orchestrator.config import TrialConfig

REPO = Path(__file__).resolve().parents[1]
EBTSCALE = [sys.executable, "-m", "orchestrator.cli"]
# Environment of the `mlflow server` processes tests start: without MLflow's job runner (huey consumers for
# GenAI jobs, which tracking never uses) a server is 2 processes instead of 10 and up in 15-19 s instead of
# 25-42 s on a loaded 2-core machine (measured 2026-11-28).
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@contextlib.contextmanager
def benchmark_module(name: str) -> Iterator[Any]:
    """A script of benchmarks/ as a module (they import each other by path, not as a package)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


# ------------------------------------------------------------------------------------------- trials, models


def tiny_trial(output_dir: Path, family: str = "transformer_pp", **sections: Any) -> TrialConfig:
    """A resolved TrialConfig small enough for a few seconds per trial: sections deep-merge over it."""
    from orchestrator.config import deep_merge, parse_trial_config

    base = {
        "name": f"tiny-{family}",
        "model": {
            "family": family,
            "d_model": 32,
            "n_layers": 2,
            "n_heads": 2,
            "vocab_size": 320,
            "context_length": 32,
        },
        "data": {"source": "stdlib", "tokenizer": "bpe", "vocab_size": 320, "max_documents": 150},
        "optim": {"lr": 3e-3, "warmup_fraction": 0.2},
        "train": {
            "tokens": 8 * 32 * 12,
            "global_batch_size": 8,
            "micro_batch_size": 4,
            "eval_every": 6,
            "eval_batches": 2,
            "checkpoint_every": 6,
        },
        "deepspeed": {"zero_stage": 1, "precision": "fp32"},
        "output_dir": str(output_dir),
    }
    return parse_trial_config(deep_merge(base, sections))


def in_folder(cfg: TrialConfig, folder: Path) -> TrialConfig:
    """The same trial, living in `folder` (its planned trial_dir)."""
    return cfg.model_copy(update={"trial_dir": str(folder.resolve())})


def seeded_model(cfg: ModelConfig, seed: int = 0, dtype: torch.dtype | None = None) -> Any:
    """The family's model with the initial weights of `seed` (in `dtype` if given)."""
    import torch

    from model import build_model

    torch.manual_seed(seed)
    model = build_model(cfg)
    return model.to(dtype) if dtype is not None else model


def token_batch(B: int = 4, seed: int = 1, vocab: int = 64, length: int = 16) -> tuple[Any, Any]:
    """(tokens, targets) of B random sequences: targets are the tokens shifted by one."""
    import torch

    data = torch.randint(0, vocab, (B, length + 1), generator=torch.Generator().manual_seed(seed))
    return data[:, :-1], data[:, 1:]


# ---------------------------------------------------------------------------------------------- sweeps, CLI


def write_yaml(path: Path, data: Any) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def write_spec(
    tmp_path: Path,
    name: str,
    tokens: int,
    checkpoint_every: int = 6,
    families: tuple[str, ...] | list[str] = ("transformer_pp", "ebt"),
    widths: tuple[int, ...] = (32, 48),
    axes: dict[str, Any] | None = None,
    output_dir: Path | None = None,
    **base: Any,
) -> Path:
    """A sweep of tiny models, `<tmp_path>/<name>.yaml`: by default a params axis (families x widths
    trials) writing to `<tmp_path>/out`; `base` sections deep-merge over its base."""
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
        "axes": axes or {"params": {"d_model": list(widths), "head_dim": 16}},
        "output_dir": str(output_dir if output_dir is not None else tmp_path / "out"),
    }
    spec["base"] = deep_merge(spec["base"], base)
    return write_yaml(tmp_path / f"{name}.yaml", spec)


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*EBTSCALE, *args], capture_output=True, text=True, timeout=timeout, env=os.environ)


def start_cli(*args: str) -> subprocess.Popen:
    """The CLI in a session of its own: the driver and the Ray it starts can be killed together."""
    return subprocess.Popen(
        [*EBTSCALE, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def sweep_runs(uri: str, sweep: str) -> tuple[list, list]:
    """(parent runs, child runs) of a sweep's experiment."""
    from orchestrator import tags
    from orchestrator.tracking import mlflow_client

    client = mlflow_client(uri)
    exp = client.get_experiment_by_name(sweep)
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get(tags.ROLE) == tags.ROLE_SWEEP]
    return parents, [r for r in runs if tags.PARENT in r.data.tags]


def child_runs(uri: str, sweep: str) -> list:
    return sweep_runs(uri, sweep)[1]


def result_mtimes(root: Path) -> dict[str, float]:
    """Our trials' result files (not Ray Tune's own result.json files, which a restore appends to)."""
    return {str(p): p.stat().st_mtime for p in root.glob("*/trials/*/result.json")}


# ------------------------------------------------------------------------------------------------ processes


def session_pids(sid: int, title: str | None = None) -> list[int]:
    """Live (not zombie) pids of session `sid` (a driver and all Ray processes it started, which put
    themselves in process groups of their own, so killpg alone would miss them); with `title`, only those
    whose command line contains it (Ray names its workers' processes `ray::<ActorClass>...`)."""
    pids = []
    for pid_dir in Path("/proc").glob("[0-9]*"):
        try:
            state, _ppid, _pgrp, session = pid_dir.joinpath("stat").read_text().rsplit(")", 1)[1].split()[:4]
            if int(session) != sid or state == "Z":
                continue
            if title is not None:
                cmdline = pid_dir.joinpath("cmdline").read_bytes().replace(b"\0", b" ")
                if title not in cmdline.decode(errors="replace"):
                    continue
        except (OSError, ValueError):
            continue
        pids.append(int(pid_dir.name))
    return pids


def kill_session(sid: int) -> None:
    """SIGKILL every process of a session."""
    for pid in session_pids(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def wait_for(
    condition: Callable[[], Any],
    timeout: float,
    what: str,
    poll_s: float = 0.1,
    not_yet: tuple[type[BaseException], ...] = (),
    logs: Sequence[Path] = (),
) -> Any:
    """Poll until `condition()` is truthy; returns its value, or fails the test naming `what` (with the last
    `not_yet` error `condition` raised, e.g. a server not up yet, and the tails of `logs`)."""
    import pytest

    deadline = time.time() + timeout
    last: BaseException | None = None
    while time.time() < deadline:
        try:
            if value := condition():
                return value
        except not_yet as err:
            last = err
        time.sleep(poll_s)
    tails = "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in logs if p.is_file())
    error = f" (last error: {last})" if last else ""
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}{error}{tails}")


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
