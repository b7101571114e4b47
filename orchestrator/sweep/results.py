"""Sweep results out of MLflow as a tidy table: one row per (trial, axis), the analysis package's input.

MLflow is the source of truth (a cluster's tracking server holds runs from every node); params come back
as strings and are cast here. A trial that stands for several plan rows (the base point on several axes)
yields one row per axis, with the same measurements.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from orchestrator import tags
from orchestrator.sweep.spec import SweepSpec, load_spec
from orchestrator.sweep_dir import DEFAULT_OUTPUT_DIR, SweepDir, names_a_spec
from orchestrator.tracking import existing_store, gc_paused, mlflow_client, resolve_tracking_uri
from orchestrator.trial_dir import TrialStatus

COLUMNS = [
    "trial_id", "name", "family", "axis", "axis_value", "status", "status_reason", "n_params",
    "n_params_non_embedding", "tokens", "batch_size", "n_layers", "d_model", "flops", "flops_budget",
    "val_loss", "val_perplexity", "seed", "run_id",
    # cost of training, for the analysis' equal-compute and equal-time views (docs/analysis.md)
    "flops_executed", "train_time_s", "num_workers",
    "vocab_size",  # the learning check's uniform guess ln V (analysis/learning.py)
]  # fmt: skip


class SweepNotFound(LookupError):
    pass


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def sweep_parent_run(uri: str, sweep: str) -> tuple[str, str]:
    """(experiment id, parent run id) of a sweep, found by its name."""
    client = mlflow_client(uri)
    exp = client.get_experiment_by_name(sweep)
    if exp is None:
        raise SweepNotFound(f"no sweep named {sweep!r} in {uri}")
    parents = client.search_runs([exp.experiment_id], tags.search(tags.ROLE, tags.ROLE_SWEEP))
    if not parents:
        raise SweepNotFound(f"experiment {sweep!r} in {uri} has no sweep parent run")
    return exp.experiment_id, parents[0].info.run_id


def load_sweep_trials(uri: str, sweep: str) -> pd.DataFrame:
    """The tidy trials table of a sweep (every child run, whatever its status; the tuning stage's runs are
    not the sweep's trials and are left out: the report reads them from tuning.json)."""
    client = mlflow_client(uri)
    exp_id, parent_id = sweep_parent_run(uri, sweep)
    with gc_paused():
        runs = client.search_runs([exp_id], tags.search(tags.PARENT, parent_id), max_results=50000)
    records = []
    for run in runs:
        p, m, t = run.data.params, run.data.metrics, run.data.tags
        if t.get(tags.STAGE) == tags.STAGE_TUNING:
            continue
        status = t.get(tags.STATUS, TrialStatus.PENDING)
        if run.info.status == "FAILED":
            status = TrialStatus.FAILED
        base = {
            "trial_id": t.get(tags.TRIAL_ID, ""),
            "family": t.get(tags.FAMILY, p.get("model.family", "")),
            "status": str(status),
            "status_reason": t.get(tags.STATUS_REASON, ""),
            "n_params": _float(p.get("n_params")),
            "n_params_non_embedding": _float(p.get("n_params_non_embedding")),
            "tokens": _float(p.get("tokens")),
            "batch_size": _float(p.get("train.global_batch_size")),
            "n_layers": _float(p.get("model.n_layers")),
            "d_model": _float(p.get("model.d_model")),
            "flops": _float(p.get("flops")),
            "val_loss": _float(m.get("final_val_loss")),
            "val_perplexity": _float(m.get("final_val_perplexity")),
            "seed": _float(p.get("train.seed")),
            "run_id": run.info.run_id,
            # NaN for runs logged before the trainer logged it (the analysis then uses `flops`)
            "flops_executed": _float(p.get("flops_executed")),
            "train_time_s": _float(m.get("train_time_s")),
            "num_workers": _float(p.get("resources.num_workers")),
            "vocab_size": _float(p.get("model.vocab_size")),
        }
        rows = json.loads(t.get(tags.ROWS, "[]")) or [{"name": run.info.run_name, "axis": "single"}]
        for row in rows:
            records.append(
                {
                    **base,
                    "name": row["name"],
                    "axis": row["axis"],
                    "axis_value": _float(row.get("axis_value")),
                    "flops_budget": _float(row.get("flops_budget")),
                }
            )
    frame = pd.DataFrame.from_records(records, columns=COLUMNS)
    return frame.sort_values(["axis", "family", "name"], ignore_index=True)


def load_thinking_curves(uri: str, sweep: str) -> pd.DataFrame | None:
    """System-2 thinking curves logged as `thinking.json` artifacts on the sweep's parent run, if any."""
    client = mlflow_client(uri)
    _, parent_id = sweep_parent_run(uri, sweep)
    names = {a.path for a in client.list_artifacts(parent_id)}
    if tags.THINKING_ARTIFACT not in names:
        return None
    path = client.download_artifacts(parent_id, tags.THINKING_ARTIFACT)
    with open(path) as f:
        return pd.DataFrame(json.load(f))


@dataclass(frozen=True)
class SweepRef:
    """What a command's SWEEP argument names: a spec file (`spec`: its sweep, folder and store) or a bare
    sweep name (its folder under the default output folder; its store there, or `--tracking-uri`'s)."""

    name: str
    tracking_uri: str
    folder: SweepDir
    spec: SweepSpec | None


def resolve_sweep(sweep: str, tracking_uri: str | None) -> SweepRef:
    """The one reading of a SWEEP argument (`names_a_spec` decides: a YAML name or an existing file), for the
    commands that read a finished sweep: a store that does not exist is SweepNotFound, never created."""
    if names_a_spec(sweep):
        spec = load_spec(sweep)
        ref = SweepRef(spec.name, tracking_uri or resolve_tracking_uri(spec.output_dir), spec.folder, spec)
    else:
        uri = tracking_uri or resolve_tracking_uri(DEFAULT_OUTPUT_DIR)
        ref = SweepRef(sweep, uri, SweepDir.of(DEFAULT_OUTPUT_DIR, sweep), None)
    try:
        existing_store(ref.tracking_uri)
    except FileNotFoundError as err:
        raise SweepNotFound(f"no sweep named {ref.name!r}: {err}") from None
    return ref
