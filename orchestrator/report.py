"""What the orchestrator adds to the analysis report: the sweep's provenance, and publishing the report to
the sweep's MLflow parent run (the analysis package itself knows nothing of MLflow)."""

from __future__ import annotations

import datetime as dt
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from orchestrator.results import sweep_parent_run


def code_version() -> str:
    """The git commit of the code (with '+dirty' for local changes), else the package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain"], capture_output=True, text=True
        )
        return sha + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return metadata.version("ebtscale")


def provenance_of(uri: str, sweep: str, source: str) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    _, parent_id = sweep_parent_run(uri, sweep)
    parent = MlflowClient(uri).get_run(parent_id)
    started = dt.datetime.fromtimestamp(parent.info.start_time / 1000, tz=dt.UTC)
    spec = {k.removeprefix("spec."): v for k, v in parent.data.params.items() if k.startswith("spec.")}
    return {
        "sweep": sweep,
        "spec source": source,
        "tracking store": uri,
        "parent run": parent_id,
        "sweep started": started.isoformat(timespec="seconds"),
        "report written": dt.datetime.now(tz=dt.UTC).isoformat(timespec="seconds"),
        "code version": code_version(),
        "versions": {p: metadata.version(p) for p in ("torch", "deepspeed", "ray", "mlflow", "scipy")},
        "spec": spec,
    }


def publish_report(uri: str, sweep: str, paths: dict[str, Path]) -> None:
    """Log the report files (HTML, Markdown, summary, plots) to the sweep's parent run under `report/`."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    _, parent_id = sweep_parent_run(uri, sweep)
    for key in ("html", "markdown", "summary"):
        if key in paths and Path(paths[key]).is_file():
            client.log_artifact(parent_id, str(paths[key]), "report")
    if "plots_dir" in paths and Path(paths["plots_dir"]).is_dir():
        client.log_artifacts(parent_id, str(paths["plots_dir"]), "report/plots")
