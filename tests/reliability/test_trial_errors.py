"""Guarantee: any exception in a trial is an outcome. A trial whose every attempt raised outside the trainer
(here the trainable's call into training, as when a package is missing on a cluster's workers) ends FAILED
with the error's type and message: in its folder, in `sweep status`, and on its MLflow run (status reason,
traceback artifact); the sweep goes on with the other trials, and its parent run ends FAILED, never RUNNING.
Once the fault is gone, a rerun trains the trials into the same runs.

The fault is injected the way the orchestration benchmark's hooks are loaded: a sitecustomize on the
PYTHONPATH of the driver and every Ray process, which replaces `_train` once the runner is imported."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import EBTSCALE, sweep_runs, write_spec

pytestmark = pytest.mark.slow

BROKEN_TRAIN = """
import importlib.abc, importlib.util, sys

class _BreakTrain(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "orchestrator.sweep.runner":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)

            def _train(payload, in_actor):
                raise TypeError("injected: _train() cannot start this trial")

            module._train = _train

        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, _BreakTrain())
"""


def run(spec: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*EBTSCALE, "sweep", "run", str(spec), *args], capture_output=True, text=True, timeout=600, env=env
    )


def test_a_trial_that_raises_is_failed_everywhere_and_a_rerun_trains_it(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from orchestrator import tags

    spec = write_spec(tmp_path, "raising", tokens=8 * 32 * 6, families=("transformer_pp",))
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(BROKEN_TRAIN)
    broken = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")]))
    )

    done = run(spec, "--max-failures", "0", env=broken)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "out"
    uri = f"sqlite:///{out / 'mlflow.db'}"
    folders = sorted((out / "raising" / "trials").iterdir())
    assert len(folders) == 2
    for folder in folders:
        failed = json.loads((folder / "failed.json").read_text())
        assert failed["error"].startswith("TypeError: injected"), failed
    (parent,), children = sweep_runs(uri, "raising")
    assert parent.info.status == "FAILED"
    assert len(children) == 2
    client = MlflowClient(uri)
    for run_ in children:
        assert run_.info.status == "FAILED"
        assert run_.data.tags["ebtscale.status"] == "failed"
        assert run_.data.tags["ebtscale.status_reason"].startswith("TypeError: injected")
        traceback = Path(client.download_artifacts(run_.info.run_id, tags.ERROR_ARTIFACT, str(tmp_path)))
        assert "injected: _train() cannot start this trial" in traceback.read_text()
    status = subprocess.run(
        [*EBTSCALE, "sweep", "status", str(spec)], capture_output=True, text=True, timeout=300, env=os.environ
    )
    assert status.stdout.count("failed") >= 2 and "TypeError" in status.stdout, status.stdout

    again = run(spec, env=dict(os.environ))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    (parent,), children = sweep_runs(uri, "raising")
    assert parent.info.status == "FINISHED"
    assert sorted(r.info.status for r in children) == ["FINISHED", "FINISHED"]  # the same two runs
    assert all(not (f / "failed.json").exists() and (f / "result.json").is_file() for f in folders)
