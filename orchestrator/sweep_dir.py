"""A sweep on disk: its folder, every file in it, the lock its one driver holds, and what a command's SWEEP
argument names. Torch-free. Beside trial_dir.py (a trial's own folder), this module is the one place that
names them:

    <output_dir>/mlflow.db                  the default MLflow store (`tracking.resolve_tracking_uri`)
    <output_dir>/<sweep>/sweep.json         {"parent_run_id", "tracking_uri", "name"}: the sweep's MLflow run
                         driver.lock        held by the sweep's one driver, in every stage that trains
                         ray/               Ray Tune's and Ray Train's state
                         trials/<name>-<id>/  a sweep trial's folder (trial_dir.py)
                         tuning.json        the tuning stage's outcome (sweep/tune_space.py)
                         tuning/<name>-<id>/  a tuning trial's folder
                         report/            `ebtscale report`'s default output

Like marin's executor status files, the folder answers "who is working on this sweep" by a lock that the
kernel drops when its holder exits or is killed, so a rerun after a crash is never refused.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from orchestrator.config import ConfigError
from orchestrator.trial_dir import DEFAULT_OUTPUT_DIR, TrialDir, atomic_write_json, folder_inside

__all__ = ["DEFAULT_OUTPUT_DIR", "SPEC_SUFFIXES", "SweepBusy", "SweepDir", "names_a_spec"]

SPEC_SUFFIXES = (".yaml", ".yml")


class SweepBusy(ConfigError):
    """Another driver holds the sweep's lock: a second one would train the same trials into the same folders
    and create MLflow runs of its own for them."""


@dataclass(frozen=True)
class SweepDir:
    """One sweep's folder. Paths are properties; its small files and its lock are methods."""

    root: Path

    @classmethod
    def of(cls, output_dir: str | Path, sweep: str) -> SweepDir:
        return cls(folder_inside(Path(output_dir).expanduser().resolve(), sweep))

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def sweep_file(self) -> Path:
        return self.root / "sweep.json"

    @property
    def lock(self) -> Path:
        return self.root / "driver.lock"

    @property
    def ray(self) -> Path:
        """Ray Tune's and Ray Train's state."""
        return self.root / "ray"

    @property
    def trials(self) -> Path:
        return self.root / "trials"

    @property
    def tuning_file(self) -> Path:
        return self.root / "tuning.json"

    @property
    def extend_file(self) -> Path:
        """`sweep extend`'s rounds (orchestrator/sweep/extend.py)."""
        return self.root / "extend.json"

    @property
    def tuning_trials(self) -> Path:
        return self.root / "tuning"

    @property
    def report(self) -> Path:
        return self.root / "report"

    def trial(self, name: str, trial_id: str) -> TrialDir:
        """A sweep trial's folder, `trials/<name>-<id>` (planned once: sweep/expand.py)."""
        return TrialDir(folder_inside(self.trials, f"{name}-{trial_id}"))

    def tuning_trial(self, name: str, trial_id: str) -> TrialDir:
        """A tuning-stage trial's folder: beside the sweep's trials, not among them."""
        return TrialDir(folder_inside(self.tuning_trials, f"{name}-{trial_id}"))

    # -- sweep.json -------------------------------------------------------------------------------------
    def parent_run_id(self) -> str:
        return json.loads(self.sweep_file.read_text())["parent_run_id"]

    def write_sweep_file(self, parent_run_id: str, tracking_uri: str) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        payload = {"parent_run_id": parent_run_id, "tracking_uri": tracking_uri, "name": self.name}
        atomic_write_json(self.sweep_file, payload)

    # -- the driver's lock ------------------------------------------------------------------------------
    @contextmanager
    def driver_lock(self) -> Iterator[None]:
        """Held for the whole of a stage that trains (the sweep, its tuning stage): one driver per sweep at a
        time. Refuses at once (SweepBusy) when another process holds it. On a filesystem without locks (some
        NFS mounts) the stage runs unguarded, as it always could there."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.lock, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SweepBusy(
                    f"sweep {self.name} is already running: another driver holds {self.lock}; wait for it "
                    "(`ebtscale sweep status`) or stop it, then run again"
                ) from None
            except OSError:
                pass
            yield


def names_a_spec(arg: str) -> bool:
    """Whether a command's SWEEP argument is a spec file (else a sweep name in the MLflow store): a YAML name,
    or any existing file."""
    return arg.endswith(SPEC_SUFFIXES) or Path(arg).is_file()
