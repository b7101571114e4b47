"""MLflow tracking: one run per trial (a child of its sweep's parent run), written in buffered batches.

Default store: an absolute `sqlite:///<output_dir>/mlflow.db` (MLflow 3 refuses the old ./mlruns file store);
`MLFLOW_TRACKING_URI` (e.g. a tracking server for clusters) wins. Metrics are buffered and sent with
`log_batch`; if the store is unreachable they stay buffered and are retried, so training never waits on it.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

TAG_PREFIX = "ebtscale."
PARENT_TAG = "mlflow.parentRunId"
MAX_BATCH = 1000  # MLflow's log_batch limit for metrics

log = logging.getLogger(__name__)


def resolve_tracking_uri(output_dir: str | Path) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    path = Path(output_dir).expanduser().resolve() / "mlflow.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _client(uri: str) -> Any:  # mlflow is imported lazily (slow import)
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def artifact_location(uri: str, experiment: str) -> str | None:
    """For a sqlite store, artifacts go beside the database (MLflow's default is ./mlruns under whatever
    the current directory is, which Ray changes per trial). Servers manage their own artifact store."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///"))
    return (db.parent / "artifacts" / experiment).resolve().as_uri()


def get_or_create_experiment(uri: str, name: str) -> str:
    client = _client(uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location(uri, name))
    except Exception:  # another process created it first
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


class RunTracker:
    """Writes one MLflow run. Create with `start`; `flush()` often, `end()` once."""

    def __init__(self, uri: str, run_id: str, flush_every_s: float = 5.0) -> None:
        self.uri = uri
        self.run_id = run_id
        self.client = _client(uri)
        self.flush_every_s = flush_every_s
        self._buffer: list[Any] = []
        self._last_flush = time.monotonic()
        self.last_logged_step = self._last_step()

    @classmethod
    def start(
        cls,
        uri: str,
        experiment: str,
        run_name: str,
        tags: dict[str, str] | None = None,
        parent_run_id: str | None = None,
        resume_run_id: str | None = None,
    ) -> RunTracker:
        """Create a run, or continue `resume_run_id` (same run: no duplicate on resume)."""
        client = _client(uri)
        if resume_run_id:
            run = client.get_run(resume_run_id)
            if run.info.status != "RUNNING":
                client.update_run(resume_run_id, status="RUNNING")
            return cls(uri, resume_run_id)
        all_tags = dict(tags or {})
        if parent_run_id:
            all_tags[PARENT_TAG] = parent_run_id
        exp_id = get_or_create_experiment(uri, experiment)
        run = client.create_run(exp_id, run_name=run_name, tags=all_tags)
        return cls(uri, run.info.run_id)

    def _last_step(self) -> int:
        """Highest step already logged for train_loss (a resumed run skips steps it already has)."""
        try:
            history = self.client.get_metric_history(self.run_id, "train_loss")
        except Exception:
            return -1
        return max((m.step for m in history), default=-1)

    def log_params(self, params: dict[str, Any]) -> None:
        """Params are immutable in MLflow: on a resumed run only the missing ones are written."""
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        new = [
            Param(k, str(v)[:6000]) for k, v in flatten(params).items() if k not in existing and v is not None
        ]
        for i in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[i : i + 100])

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: dict[str, float], step: int, force: bool = False) -> None:
        """Buffer metrics for `step`; steps at or below one already in the store are skipped (resume)."""
        from mlflow.entities import Metric

        if step > self.last_logged_step or force:
            now = int(time.time() * 1000)
            for key, value in metrics.items():
                if value is not None and math.isfinite(float(value)):
                    self._buffer.append(Metric(key, float(value), now, step))
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self) -> bool:
        """Send buffered metrics; on failure keep them for the next try. Returns True if all were sent."""
        self._last_flush = time.monotonic()
        while self._buffer:
            chunk = self._buffer[:MAX_BATCH]
            try:
                self.client.log_batch(self.run_id, metrics=chunk)
            except Exception as err:  # store unreachable: keep buffering, training goes on
                log.warning("MLflow unavailable (%s); %d metrics buffered", err, len(self._buffer))
                return False
            del self._buffer[: len(chunk)]
        return True

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str = "FINISHED", retries: int = 30, wait_s: float = 2.0) -> None:
        """Flush everything (retrying while the store is down), then close the run."""
        for _ in range(retries):
            if self.flush():
                break
            time.sleep(wait_s)
        self.client.set_terminated(self.run_id, status=status)
