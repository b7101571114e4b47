"""A trial on disk: its folder, the files in it, and the status they add up to. Torch-free.

The trainer writes these files and the sweep driver, `sweep status`, `think` and the tests read them; this
module is the one place that names them:

    <trial folder>/config.yaml        the resolved TrialConfig (written when training starts)
                   run.json           {"run_id", "tracking_uri"}: the trial's MLflow run and where it lives
                   checkpoints/       step-N/ (verified; see train/checkpoint.py)
                   progress.json      the latest step, for live status (no MLflow round-trip)
                   result.json        the outcome (finished or diverged): the trial is done
                   failed.json        the last crash's error (a rerun tries again)
                   model.pt           the final weights (a plain tensor state dict)

Where the folder is is decided once, when a trial is planned (`TrialConfig.trial_dir`): in a sweep
`<output_dir>/<sweep>/trials/<name>-<id>` (`SweepDir.trial`: orchestrator/sweep_dir.py names a sweep's
folder), for `ebtscale train` `<output_dir>/trials/<name>` (`TrialDir.standalone`).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

# a trial or spec without output_dir, and a bare sweep name, keep their files here
DEFAULT_OUTPUT_DIR = "outputs"
# A name that becomes a folder (a sweep's, a trial's): one path component, never "..", "/" or a hidden name.
# The one rule, validated at the edge (TrialConfig.name, SweepSpec.name) and again where a folder is placed.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or a digit"
NAME_MAX_LENGTH = 128
RUNNING_WITHIN_S = 120  # progress.json younger than this: the trial is running, else interrupted


class TrialStatus(StrEnum):
    """Every status a trial can have: in its folder, its MLflow tag and `sweep status`."""

    PENDING = "pending"
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    FINISHED = "finished"
    DIVERGED = "diverged"
    STOPPED = "stopped"  # a tuning trial stopped early by the search's scheduler (ASHA)
    FAILED = "failed"

    @property
    def final(self) -> bool:
        """An outcome that is never trained again."""
        return self in (TrialStatus.FINISHED, TrialStatus.DIVERGED, TrialStatus.STOPPED)


def stopped_by_search(step: int) -> str:
    """The reason of a trial the search's scheduler stopped: the trainer's and, for a trial Tune ended first,
    the sweep driver's."""
    return f"stopped early by the search at step {step}"


def perplexity(loss: float) -> float:
    """exp(loss), the exponent capped at 50: a diverging loss gives a large finite value, not an overflow."""
    return math.exp(min(loss, 50.0))


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """`write(tmp)` then rename over `path`: readers see the old file or the new one, never a torn one."""
    tmp = path.with_name(f"{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def atomic_write_json(path: Path, payload: Any, indent: int | None = None) -> None:
    atomic_write_text(path, json.dumps(payload, indent=indent))


@dataclass
class TrialResult:
    """A trial's outcome: result.json (finished, diverged, stopped) and what `train_trial` returns.
    `final_val_loss` is the last validation loss of a finished trial, or of a stopped one at its stop."""

    status: TrialStatus
    reason: str
    steps: int
    tokens: int
    final_val_loss: float | None
    final_val_perplexity: float | None
    train_time_s: float
    run_id: str | None = None
    losses: list[float] = field(default_factory=list)  # train loss per step run in this process

    def __post_init__(self) -> None:
        self.status = TrialStatus(self.status)

    def save(self, path: Path) -> None:
        atomic_write_json(path, asdict(self), indent=1)

    @classmethod
    def load(cls, path: Path) -> TrialResult:
        return cls(**json.loads(path.read_text()))


@dataclass(frozen=True)
class RunRecord:
    """run.json: the trial's MLflow run and the store that holds it (None in folders written before the
    store was recorded)."""

    run_id: str
    tracking_uri: str | None = None


@dataclass(frozen=True)
class TrialDir:
    """One trial's folder. Paths are properties; reads and writes of its small files are methods."""

    path: Path

    @classmethod
    def standalone(cls, output_dir: str | Path, name: str) -> TrialDir:
        return cls(folder_inside(Path(output_dir).expanduser().resolve() / "trials", name))

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def run(self) -> Path:
        return self.path / "run.json"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def progress(self) -> Path:
        return self.path / "progress.json"

    @property
    def result(self) -> Path:
        return self.path / "result.json"

    @property
    def failed(self) -> Path:
        return self.path / "failed.json"

    @property
    def weights(self) -> Path:
        return self.path / "model.pt"

    # -- run.json ---------------------------------------------------------------------------------------
    def read_run(self) -> RunRecord | None:
        if not self.run.is_file():
            return None
        data = json.loads(self.run.read_text())
        return RunRecord(data["run_id"], data.get("tracking_uri"))

    def write_run(self, run_id: str, tracking_uri: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.run, asdict(RunRecord(run_id, tracking_uri)))

    # -- progress, outcome ------------------------------------------------------------------------------
    def write_progress(self, step: int, total_steps: int, metrics: dict[str, float]) -> None:
        atomic_write_json(
            self.progress, {"step": step, "total_steps": total_steps, "time": time.time(), **metrics}
        )

    def read_result(self) -> TrialResult | None:
        return TrialResult.load(self.result) if self.result.is_file() else None

    def write_failed(self, error: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.failed, {"error": error[:2000], "time": time.time()})

    def status(self) -> dict[str, Any]:
        """What the folder says: finished/diverged (result.json), failed, running/interrupted (progress.json,
        by its age), or pending. Keys: status, and reason/val_loss or step/total where known."""
        if self.result.is_file():
            data = json.loads(self.result.read_text())
            return {
                "status": TrialStatus(data["status"]),
                "reason": data.get("reason", ""),
                "val_loss": data["final_val_loss"],
            }
        if self.failed.is_file():
            return {
                "status": TrialStatus.FAILED,
                "reason": json.loads(self.failed.read_text()).get("error", ""),
            }
        if self.progress.is_file():
            p = json.loads(self.progress.read_text())
            recent = time.time() - p.get("time", 0) < RUNNING_WITHIN_S
            return {
                "status": TrialStatus.RUNNING if recent else TrialStatus.INTERRUPTED,
                "step": p["step"],
                "total": p["total_steps"],
            }
        return {"status": TrialStatus.PENDING}


def folder_inside(root: Path, name: str) -> Path:
    """`root / name`, for a name that must stay one folder inside `root` (NAME_PATTERN): checked where the
    folder is placed as well as at the edge, so that no caller can write outside its root."""
    path = (root / name).resolve()
    if not re.fullmatch(NAME_PATTERN, name) or len(name) > NAME_MAX_LENGTH or path.parent != root.resolve():
        raise ValueError(f"name {name!r} cannot be a folder in {root}: use {NAME_RULE}")
    return path
