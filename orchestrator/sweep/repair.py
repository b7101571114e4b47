"""`ebtscale sweep repair SPEC`: make a sweep's MLflow records agree with its trial folders again.

The folders are the truth of what trained (result.json, failed.json, run.json); the store is the record of
it. A driver killed mid-stage, or two drivers of one sweep from before every stage took the driver lock, can
leave the store with: parent runs of their own (children split between them), two runs for one trial (one
left SCHEDULED), runs left RUNNING or SCHEDULED with no live driver, and metric steps logged twice. Repair
holds the sweep's driver lock (so no driver is live while it works) and:

- keeps one parent run (the one sweep.json records, else the oldest): the children of any other parent are
  moved under it and the other parent is deleted (MLflow's trash: `mlflow gc` would purge it);
- keeps one run per trial (the one the trial's run.json records, else a FINISHED one, else the one with the
  most history): the others are deleted;
- rebuilds a kept run whose history holds a step twice, keeping each step's latest value (MLflow cannot
  delete a metric point): same name, tags, params and artifacts, a new run id recorded in run.json;
- closes what has an outcome: a trial with result.json gets its outcome recorded and its run FINISHED, one
  with failed.json FAILED with the error as its status reason, a RUNNING run of an interrupted trial KILLED;
- ends the parent FINISHED when every trial has an outcome, else FAILED.

Nothing in a trial folder changes but run.json, and only to name the kept run. It reports every change.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from orchestrator import tags
from orchestrator.sweep.expand import expand
from orchestrator.sweep.runner import TrialUnit, trial_units
from orchestrator.sweep.spec import SweepSpec
from orchestrator.tracking import (
    close_with_outcome,
    existing_store,
    gc_paused,
    mlflow_client,
    resolve_tracking_uri,
)
from orchestrator.trial_dir import TrialStatus


def sweep_units(spec: SweepSpec) -> list[TrialUnit]:
    """Every trial the sweep accounts for in its store: the sweep's own and its tuning stage's."""
    units = trial_units(expand(spec))
    if spec.tune is not None:
        from orchestrator.sweep.tuning import plan_searches

        units += trial_units([t for search in plan_searches(spec) for t in search.trials])
    return units


def repair_sweep(spec: SweepSpec) -> list[str]:
    """Repair the sweep's store (see the module doc); returns what changed, one line each (none: it was
    consistent). Raises SweepBusy while a driver of the sweep runs, FileNotFoundError without a store."""
    uri = existing_store(resolve_tracking_uri(spec.output_dir))
    with spec.folder.driver_lock():
        return _Repair(spec, uri).run()


class _Repair:
    def __init__(self, spec: SweepSpec, uri: str) -> None:
        self.spec, self.uri = spec, uri
        self.client = mlflow_client(uri)
        self.changes: list[str] = []

    def run(self) -> list[str]:
        exp = self.client.get_experiment_by_name(self.spec.name)
        if exp is None:
            return []
        with gc_paused():
            runs = self.client.search_runs([exp.experiment_id], max_results=50000)
        parent = self._one_parent([r for r in runs if r.data.tags.get(tags.ROLE) == tags.ROLE_SWEEP], runs)
        if parent is None:
            return self.changes
        by_trial: dict[str, list[Any]] = defaultdict(list)
        for r in runs:
            if tags.TRIAL_ID in r.data.tags:
                by_trial[r.data.tags[tags.TRIAL_ID]].append(r)
        units = sweep_units(self.spec)
        for unit in units:
            if by_trial.get(unit.id):
                self._one_run(unit, by_trial[unit.id], parent)
        final = all(u.folder.status()["status"].final for u in units)
        ended = "FINISHED" if final else "FAILED"
        if self.client.get_run(parent).info.status != ended:
            self.client.set_terminated(parent, status=ended)
            self.changes.append(f"parent run {parent}: ended {ended}")
        return self.changes

    def _one_parent(self, parents: list[Any], runs: list[Any]) -> str | None:
        if not parents:
            return None
        folder = self.spec.folder
        recorded = folder.parent_run_id() if folder.sweep_file.is_file() else None
        ids = {p.info.run_id for p in parents}
        keep = recorded if recorded in ids else min(parents, key=lambda p: p.info.start_time).info.run_id
        if recorded != keep:
            folder.write_sweep_file(keep, self.uri)
            self.changes.append(f"sweep.json: parent run {keep}")
        for other in sorted(ids - {keep}):
            moved = [r for r in runs if r.data.tags.get(tags.PARENT) == other]
            for child in moved:
                self.client.set_tag(child.info.run_id, tags.PARENT, keep)
                child.data.tags[tags.PARENT] = keep
            self.client.delete_run(other)
            self.changes.append(f"parent run {other}: a second parent, deleted ({len(moved)} children moved)")
        return keep

    def _one_run(self, unit: TrialUnit, runs: list[Any], parent: str) -> None:
        folder = unit.folder
        record = folder.read_run()
        ids = {r.info.run_id: r for r in runs}
        if record is not None and record.run_id in ids:
            keep = ids[record.run_id]
        else:
            keep = max(
                runs, key=lambda r: (r.info.status == "FINISHED", len(r.data.metrics), r.info.start_time)
            )
        for other in runs:
            if other.info.run_id != keep.info.run_id:
                self.client.delete_run(other.info.run_id)
                self.changes.append(
                    f"{unit.name}: run {other.info.run_id} ({other.info.status}), a duplicate, deleted"
                )
        if keep.data.tags.get(tags.PARENT) != parent:
            self.client.set_tag(keep.info.run_id, tags.PARENT, parent)
        run_id = self._dedupe_steps(unit, keep)
        if record is None or record.run_id != run_id:
            folder.write_run(run_id, self.uri)
        self._close(unit, run_id)

    def _dedupe_steps(self, unit: TrialUnit, run: Any) -> str:
        """The run's id, or that of its rebuilt copy when a metric holds a step twice."""
        run_id = run.info.run_id
        histories = {key: self.client.get_metric_history(run_id, key) for key in run.data.metrics}
        if all(len({m.step for m in h}) == len(h) for h in histories.values()):
            return run_id
        from mlflow.entities import Metric, Param

        latest: dict[tuple[str, int], Any] = {}
        for key, history in histories.items():
            for m in sorted(history, key=lambda m: m.timestamp):
                latest[(key, m.step)] = m
        copy = self.client.create_run(run.info.experiment_id, run_name=run.info.run_name, tags=run.data.tags)
        new_id = copy.info.run_id
        metrics = [Metric(k, m.value, m.timestamp, s) for (k, s), m in sorted(latest.items())]
        params = [Param(k, v) for k, v in run.data.params.items()]
        for i in range(0, len(params), 100):  # MLflow's limits per batch: 100 params, 1000 metrics
            self.client.log_batch(new_id, params=params[i : i + 100])
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(new_id, metrics=metrics[i : i + 1000])
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(self.client.download_artifacts(run_id, "", tmp))
            if any(local.iterdir()):
                self.client.log_artifacts(new_id, str(local))
        self.client.set_terminated(new_id, status=run.info.status)
        self.client.delete_run(run_id)
        twice = sum(len(h) for h in histories.values()) - len(latest)
        self.changes.append(f"{unit.name}: {twice} metric points logged twice; run rebuilt as {new_id}")
        return new_id

    def _close(self, unit: TrialUnit, run_id: str) -> None:
        folder, status = unit.folder, self.client.get_run(run_id).info.status
        if folder.result.is_file():
            if close_with_outcome(self.uri, self.spec.name, unit.name, run_id, folder):
                self.changes.append(f"{unit.name}: outcome recorded from result.json, run {status} -> ended")
        elif folder.failed.is_file():
            if status != "FAILED":
                reason = json.loads(folder.failed.read_text())["error"][:500]
                self.client.set_tag(run_id, tags.STATUS, str(TrialStatus.FAILED))
                self.client.set_tag(run_id, tags.STATUS_REASON, reason)
                self.client.set_terminated(run_id, status="FAILED")
                self.changes.append(f"{unit.name}: run {status} -> FAILED ({reason})")
        elif status == "RUNNING":  # no driver is live: an interrupted trial, resumed by the next run
            self.client.set_tag(run_id, tags.STATUS, str(TrialStatus.INTERRUPTED))
            self.client.set_terminated(run_id, status="KILLED")
            self.changes.append(f"{unit.name}: run RUNNING with no live driver -> KILLED (interrupted)")
