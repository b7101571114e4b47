"""What the orchestrator adds to the analysis report: the sweep's provenance, and publishing the report to
the sweep's MLflow parent run (the analysis package itself knows nothing of MLflow)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from analysis.options import DEFAULT_OPTIONS, AnalysisOptions
from orchestrator import SOURCE_ROOT
from orchestrator.sweep.results import (
    load_sweep_trials,
    load_thinking_curves,
    resolve_sweep,
    sweep_parent_run,
)
from orchestrator.sweep.spec import SweepSpec
from orchestrator.tracking import mlflow_client


def code_version() -> str:
    """The git commit of the code (with '+dirty' for local changes), else the package version."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(SOURCE_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(SOURCE_ROOT), "status", "--porcelain"], capture_output=True, text=True
        )
        return sha + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return metadata.version("ebtscale")


def provenance_of(uri: str, sweep: str, source: str) -> dict[str, Any]:
    _, parent_id = sweep_parent_run(uri, sweep)
    parent = mlflow_client(uri).get_run(parent_id)
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


CLAIMS_TABLE = "report/claims.json"  # the claims table, as MLflow's table artifact (the UI shows it as one)


def publish_report(uri: str, sweep: str, paths: dict[str, Path]) -> None:
    """Log the report files (HTML, Markdown, summary, plots) to the sweep's parent run under `report/`, and
    its claims table (summary.json's `claims`, analysis/claims.py) as a table artifact and as metrics, so
    that the MLflow UI compares studies by their claims."""
    client = mlflow_client(uri)
    _, parent_id = sweep_parent_run(uri, sweep)
    for key in ("html", "markdown", "summary"):
        if key in paths and Path(paths[key]).is_file():
            client.log_artifact(parent_id, str(paths[key]), "report")
    if "plots_dir" in paths and Path(paths["plots_dir"]).is_dir():
        client.log_artifacts(parent_id, str(paths["plots_dir"]), "report/plots")
    claims = read_summary(paths).get("claims")
    if claims:
        import pandas as pd
        from mlflow.entities import Metric

        client.log_table(parent_id, pd.DataFrame(claims["records"]), CLAIMS_TABLE)
        now = int(dt.datetime.now(tz=dt.UTC).timestamp() * 1000)
        metrics = [Metric(k, float(v), now, 0) for k, v in sorted(claims["metrics"].items())]
        for i in range(0, len(metrics), 1000):  # MLflow's batch limit
            client.log_batch(parent_id, metrics=metrics[i : i + 1000])


def read_summary(paths: dict[str, Path]) -> dict[str, Any]:
    """The report's summary.json ({} when there is none)."""
    path = paths.get("summary")
    return json.loads(Path(path).read_text()) if path and Path(path).is_file() else {}


def build_report(
    sweep: str,
    out: Path | None = None,
    tracking_uri: str | None = None,
    options: AnalysisOptions = DEFAULT_OPTIONS,
) -> dict[str, Path]:
    """`ebtscale report`: the sweep's trials and thinking curves out of MLflow, the analysis report written
    (default folder: `<output_dir>/<sweep>/report` for a spec, `outputs/<sweep>/report` for a name) and
    published to the sweep's parent run, analysed with `options`. Returns the report's paths."""
    from analysis import write_report

    ref = resolve_sweep(sweep, tracking_uri)
    trials = load_sweep_trials(ref.tracking_uri, ref.name)
    thinking = load_thinking_curves(ref.tracking_uri, ref.name)
    provenance = provenance_of(ref.tracking_uri, ref.name, sweep)
    tuning = _tuning_table(ref.spec) if ref.spec is not None else None
    rounds = _rounds_table(ref.spec) if ref.spec is not None else None
    paths = write_report(
        trials, out or ref.folder.report, provenance, thinking, options, tuning=tuning, rounds=rounds
    )
    publish_report(ref.tracking_uri, ref.name, paths)
    return paths


def _tuning_table(spec: SweepSpec) -> Any:
    """The tuning stage's table (tuning.json), or None."""
    from orchestrator.sweep.tuning import read_tuning_file, tuning_frame

    payload = read_tuning_file(spec) if spec.tune is not None else None
    return tuning_frame(payload) if payload and payload["sizes"] else None


def _rounds_table(spec: SweepSpec) -> Any:
    """`sweep extend`'s rounds (extend.json), or None."""
    from orchestrator.sweep.extend import rounds_frame

    return rounds_frame(spec)
