"""MLflow tracking: one run per trial (a child of its sweep's parent run), written in buffered batches.

Default store: an absolute `sqlite:///<output_dir>/mlflow.db` (MLflow 3 refuses the old ./mlruns file store);
`MLFLOW_TRACKING_URI` (e.g. a tracking server for clusters) wins.

Training never waits on the store: a `RunTracker` only queues metrics, params, tags and artifacts, and a
background thread of its own sends them (`log_batch`). While the store is unreachable everything stays queued
and is retried every few seconds; each attempt is a single request with a short timeout (`fail_fast`), since
MLflow's HTTP client would otherwise retry with exponential backoff for minutes and deliver long after the
store is back. `end()` waits (bounded) for the queue to drain before it closes the run.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import gc
import importlib
import logging
import math
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator import tags
from orchestrator.tags import PARENT as PARENT_TAG
from orchestrator.trial_dir import TrialResult, TrialStatus

if TYPE_CHECKING:
    from orchestrator.trial_dir import TrialDir

MAX_BATCH = 1000  # MLflow's log_batch limit for metrics
# One attempt, no backoff, a short timeout: how the tracker talks to a tracking server while training runs.
FAIL_FAST_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}
_env_lock = threading.Lock()
_senders: set[RunTracker] = set()  # trackers whose sender thread runs (not yet ended): drained at exit

log = logging.getLogger(__name__)


def resolve_tracking_uri(output_dir: str | Path) -> str:
    """MLFLOW_TRACKING_URI, else the output folder's own sqlite store (an absolute path: Tune changes the
    working directory). Creates nothing: the first client of a writing command creates the store
    (`mlflow_client`), and a command that only reads checks it exists (`existing_store`)."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path(output_dir).expanduser().resolve() / 'mlflow.db'}"


def existing_store(uri: str) -> str:
    """`uri`, checked for a command that only reads: a sqlite store that does not exist is an error rather
    than an empty store created as a side effect (a server's store is the server's business)."""
    db = Path(uri.removeprefix("sqlite:///"))
    if uri.startswith("sqlite:///") and not db.is_file():
        raise FileNotFoundError(f"no MLflow store at {db}: nothing has run there yet")
    return uri


def mlflow_client(uri: str) -> Any:
    """The one way to get an `MlflowClient` (mlflow is imported lazily: a slow import)."""
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    from mlflow.tracking import MlflowClient

    if not uri.startswith("sqlite:///"):
        return MlflowClient(tracking_uri=uri)
    # The first client of a new sqlite store creates its tables (alembic migrations). Two processes doing it
    # at once (two sweeps sharing an output_dir) collide and one fails ("expected to match one row ... in
    # 'alembic_version'"), so store creation is serialised by a lock file beside the database. MLflow caches
    # the store per process: later clients of the same URI do not migrate again.
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{db}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not db.exists():
            _copy_empty_store(db)
        return MlflowClient(tracking_uri=uri)


def _copy_empty_store(db: Path) -> None:
    """A new sqlite store as a copy of an empty one this MLflow version migrated once (cached): creating the
    tables runs every alembic migration, 4-9 s on the CPU machines here, paid by every new sweep folder. The
    copy's Default experiment gets the store's own artifacts folder (`artifact_location`), not the cached
    template's. Does nothing (MLflow then migrates itself) if the template cannot be made."""
    import sqlite3

    import mlflow
    from mlflow.tracking import MlflowClient

    from model.data import resolve_cache_dir

    template = resolve_cache_dir() / "mlflow" / f"empty-{mlflow.__version__}.db"
    fresh = template.with_name(f"{template.name}.{os.getpid()}.tmp")
    partial = db.with_name(f"{db.name}.{os.getpid()}.tmp")
    try:
        if not template.exists():
            template.parent.mkdir(parents=True, exist_ok=True)
            MlflowClient(tracking_uri=f"sqlite:///{fresh}").search_experiments()  # migrates
            os.replace(fresh, template)  # atomic: a racing process finds a whole template or none
        shutil.copyfile(template, partial)
        with contextlib.closing(sqlite3.connect(partial)) as conn, conn:
            default = artifact_location(f"sqlite:///{db}", "Default")
            conn.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (default,))
        os.replace(partial, db)
    except (OSError, sqlite3.Error) as err:
        log.warning("creating the MLflow store %s from scratch (no template: %s)", db, err)
        for leftover in (fresh, partial):  # a failed copy leaves nothing beside the store
            with contextlib.suppress(OSError):
                leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for a bulk read from the store. Reading a sweep's runs builds
    ~80 ORM objects per run (params, tags, metrics), all alive until the read ends, and the collector keeps
    re-scanning them as they pile up: 10,000 runs took 18.5 s to read with it and 6.5 s without
    (benchmarks/bench_store.py's store). Reference counting still frees everything; cycles wait for the next
    collection. Restored on exit (left off if it was off)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def fail_fast() -> Iterator[None]:
    """MLflow calls inside this block make one HTTP attempt with a short timeout instead of retrying with
    backoff for minutes (MLflow reads these variables at each request). Restored on exit. The variables are
    process-wide: another thread's MLflow request made meanwhile fails fast too."""
    with _env_lock:
        saved = {k: os.environ.get(k) for k in FAIL_FAST_ENV}
        os.environ.update(FAIL_FAST_ENV)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _rejected(err: Exception) -> bool:
    """The store answered and refused the request (HTTP 4xx: bad value, changed param, deleted run):
    sending it again cannot succeed. Anything else (refused connection, timeout, 5xx) is transient."""
    from mlflow.exceptions import MlflowException

    return isinstance(err, MlflowException) and 400 <= err.get_http_status_code() < 500


def artifact_location(uri: str, experiment: str) -> str | None:
    """For a sqlite store, artifacts go beside the database (MLflow's default is ./mlruns under whatever
    the current directory is, which Ray changes per trial). Servers manage their own artifact store."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///"))
    return (db.parent / "artifacts" / experiment).resolve().as_uri()


def get_or_create_experiment(uri: str, name: str) -> str:
    """The experiment's id, created if missing; every experiment of the tool is a model-training one
    (`tags.EXPERIMENT_KIND`: the MLflow UI opens it on its runs, not on an empty GenAI traces view)."""
    client = mlflow_client(uri)
    kind = {tags.EXPERIMENT_KIND: tags.EXPERIMENT_KIND_TRAINING}
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location(uri, name), tags=kind)
        except Exception:  # another process created it first
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.tags.get(tags.EXPERIMENT_KIND) != tags.EXPERIMENT_KIND_TRAINING:  # made by an older version
        client.set_experiment_tag(exp.experiment_id, tags.EXPERIMENT_KIND, tags.EXPERIMENT_KIND_TRAINING)
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


SYSTEM_METRICS_EVERY_S = 5.0  # a trial run's system metrics: one sample every so many seconds


class SystemSampler:
    """The machine's system metrics on a run, as `system/<name>` (the names MLflow's UI groups): MLflow's own
    monitors (CPU, memory, disk, network; an NVIDIA or AMD GPU where its library is installed), sampled on a
    thread of ours every `every_s` and logged through the tracker's queue. MLflow's own monitor thread talks
    to the store itself and stops for good at its first failed request (a busy sqlite file, an outage);
    through the queue, samples ride out an outage like the training metrics. A resumed run continues its
    steps."""

    def __init__(self, tracker: RunTracker, every_s: float, resumed: bool) -> None:
        from mlflow.system_metrics.metrics.cpu_monitor import CPUMonitor
        from mlflow.system_metrics.metrics.disk_monitor import DiskMonitor
        from mlflow.system_metrics.metrics.network_monitor import NetworkMonitor

        self.monitors: list[Any] = [CPUMonitor(), DiskMonitor(), NetworkMonitor()]
        for module, name in (("gpu_monitor", "GPUMonitor"), ("rocm_monitor", "ROCMMonitor")):
            try:  # raises without the GPU's library or a GPU
                gpu = importlib.import_module(f"mlflow.system_metrics.metrics.{module}")
                self.monitors.append(getattr(gpu, name)())
                break
            except Exception:
                continue
        self.tracker, self.every_s = tracker, every_s
        self.step = self._next_step() if resumed else 0
        self._stop = threading.Event()
        name = f"system-metrics-{tracker.run_id[:8]}"
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _next_step(self) -> int:
        key = "system/cpu_utilization_percentage"
        try:
            history = self.tracker.client.get_metric_history(self.tracker.run_id, key)
        except Exception:
            return 0
        return 1 + max((m.step for m in history), default=-1)

    def sample(self) -> None:
        """One sample of every monitor, queued on the run at the next step."""
        metrics: dict[str, float] = {}
        for monitor in self.monitors:
            monitor.collect_metrics()
            metrics |= monitor.aggregate_metrics()
            monitor.clear_metrics()
        self.tracker.log_metrics({f"system/{k}": v for k, v in metrics.items()}, step=self.step, force=True)
        self.step += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def stop(self) -> None:
        """End the thread, then take a last sample: even a run shorter than `every_s` has one."""
        self._stop.set()
        self._thread.join(timeout=30)
        self.sample()


class RunTracker:
    """Writes one MLflow run. Create with `start`; log freely, `flush()` at checkpoints, `end()` once.

    Only `start` and `end` talk to the store from the caller's thread; everything else is queued and sent by
    a sender thread (started on first use), so a slow or unreachable store never stalls training."""

    def __init__(self, uri: str, run_id: str, flush_every_s: float = 5.0) -> None:
        self.uri = uri
        self.run_id = run_id
        self.client = mlflow_client(uri)
        self.flush_every_s = flush_every_s
        self._lock = threading.RLock()  # guards the queues below; the sender removes only what it sent
        self._sent = threading.Condition(self._lock)  # notified after every send attempt
        self._buffer: list[Any] = []
        self._params: dict[str, str] = {}
        self._tags: dict[str, str] = {}
        self._artifacts: list[tuple[str, str | None]] = []
        self._wake = threading.Event()
        self._stop = False
        self._sender: threading.Thread | None = None
        self._reachable = True  # the last attempt reached the store
        self._last_flush = time.monotonic()
        self.failed_flushes = 0  # send attempts that found the store unreachable (for reports and tests)
        self.max_buffered = 0  # the most metrics ever waiting in the queue
        self.last_logged_step = self._last_step()
        self._monitor: SystemSampler | None = None  # `start(system_metrics=True)`

    @classmethod
    def start(
        cls,
        uri: str,
        experiment: str,
        run_name: str,
        tags: dict[str, str] | None = None,
        parent_run_id: str | None = None,
        resume_run_id: str | None = None,
        system_metrics: bool = False,
    ) -> RunTracker:
        """Create a run, or continue `resume_run_id` (same run: no duplicate on resume). `system_metrics`:
        this machine's CPU, memory, disk and network (and GPU where its library is installed) as system/*
        metrics every SYSTEM_METRICS_EVERY_S until `end` (`SystemSampler`)."""
        client = mlflow_client(uri)
        if resume_run_id:
            run = client.get_run(resume_run_id)
            if run.info.status != "RUNNING":
                client.update_run(resume_run_id, status="RUNNING")
            tracker = cls(uri, resume_run_id)
        else:
            all_tags = dict(tags or {})
            if parent_run_id:
                all_tags[PARENT_TAG] = parent_run_id  # (`tags` is the argument here)
            exp_id = get_or_create_experiment(uri, experiment)
            tracker = cls(uri, client.create_run(exp_id, run_name=run_name, tags=all_tags).info.run_id)
        if system_metrics:
            tracker._start_system_metrics(resumed=resume_run_id is not None)
        return tracker

    def _start_system_metrics(self, resumed: bool) -> None:
        try:
            self._monitor = SystemSampler(self, SYSTEM_METRICS_EVERY_S, resumed)
        except Exception as err:  # e.g. psutil missing: training goes on without them
            log.warning("no system metrics for run %s: %s", self.run_id, err)

    def has_logged(self, key: str, step: int) -> bool:
        """Whether the store already holds `key` at `step` (False when it cannot say: a store that does not
        answer at once)."""
        try:
            with fail_fast():
                return any(m.step == step for m in self.client.get_metric_history(self.run_id, key))
        except Exception:
            return False

    def _last_step(self) -> int:
        """Highest step already logged for train_loss (a resumed run skips steps it already has)."""
        try:
            history = self.client.get_metric_history(self.run_id, "train_loss")
        except Exception:
            return -1
        return max((m.step for m in history), default=-1)

    @property
    def pending(self) -> int:
        """Metrics, params, tags and artifacts not yet in the store."""
        with self._lock:
            return len(self._buffer) + len(self._params) + len(self._tags) + len(self._artifacts)

    # -- what the trainer calls: queue, never wait -------------------------------------------------------
    def log_params(self, params: dict[str, Any]) -> None:
        """Params are immutable in MLflow: on a resumed run only the missing ones are written."""
        with self._lock:
            self._params.update({k: str(v)[:6000] for k, v in flatten(params).items() if v is not None})
        self._kick()

    def set_tags(self, tags: dict[str, Any]) -> None:
        with self._lock:
            self._tags.update({k: str(v) for k, v in tags.items()})
        self._kick()

    def log_metrics(self, metrics: dict[str, float], step: int, force: bool = False) -> None:
        """Queue metrics for `step`; steps at or below one already in the store are skipped (resume)."""
        from mlflow.entities import Metric

        if step > self.last_logged_step or force:
            now = int(time.time() * 1000)
            batch = [
                Metric(key, float(value), now, step)
                for key, value in metrics.items()
                if value is not None and math.isfinite(float(value))
            ]
            with self._lock:
                self._buffer.extend(batch)
                self.max_buffered = max(self.max_buffered, len(self._buffer))
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self._last_flush = time.monotonic()
            self._kick()

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        with self._lock:
            self._artifacts.append((str(path), artifact_path))
        self._kick()

    def flush(self, wait_s: float = 5.0) -> bool:
        """Have everything queued sent now. While the store answers, wait up to `wait_s` for it (metrics up
        to a checkpoint should be in the store before the checkpoint); while it does not, return at once.
        True if nothing is pending."""
        self._last_flush = time.monotonic()
        self._kick()
        deadline = time.monotonic() + wait_s
        with self._sent:
            while self._reachable and self.pending and time.monotonic() < deadline:
                self._sent.wait(deadline - time.monotonic())
            return not self.pending

    def drain(self, timeout: float, retry_every_s: float = 2.0) -> bool:
        """Wait up to `timeout` seconds for the queue to empty, retrying every `retry_every_s` while the
        store is down. True once nothing is pending."""
        deadline = time.monotonic() + timeout
        next_try = time.monotonic()
        while True:
            if time.monotonic() >= next_try:  # one attempt per interval, not one per failure notice
                self._kick()
                next_try = time.monotonic() + retry_every_s
            with self._sent:
                if not self.pending:
                    return True
                now = time.monotonic()
                if now >= deadline:
                    return False
                self._sent.wait(max(0.01, min(next_try, deadline) - now))

    def end(self, status: str = "FINISHED", retries: int = 30, wait_s: float = 2.0) -> None:
        """Send everything (waiting up to retries x wait_s while the store is down), then close the run."""
        if self._monitor is not None:  # its last sample joins the queue first
            self._monitor.stop()
            self._monitor = None
        if not self.drain(retries * wait_s, wait_s):
            log.error(
                "MLflow still unreachable after %.0f s: run %s closes without %d pending items",
                retries * wait_s,
                self.run_id,
                self.pending,
            )
        self._stop_sender()
        self.client.set_terminated(self.run_id, status=status)

    # -- the sender thread -------------------------------------------------------------------------------
    def _kick(self) -> None:
        """Wake the sender (starting it on first use)."""
        with self._lock:
            if self._sender is None and not self._stop:
                self._sender = threading.Thread(
                    target=self._send_loop, name=f"mlflow-sender-{self.run_id[:8]}", daemon=True
                )
                self._sender.start()
                _senders.add(self)
        self._wake.set()

    def _stop_sender(self) -> None:
        with self._lock:
            self._stop = True
            sender = self._sender
        self._wake.set()
        if sender is not None:
            sender.join(timeout=30)  # at most one request in flight (FAIL_FAST_ENV's timeout)
        _senders.discard(self)

    def _send_loop(self) -> None:
        while not self._stop:
            self._wake.wait(self.flush_every_s)
            self._wake.clear()
            if self._stop:
                break
            ok = self._send_params() and self._send_tags() and self._send_metrics() and self._send_artifacts()
            with self._sent:
                self._reachable = ok
                if not ok:
                    self.failed_flushes += 1
                self._sent.notify_all()

    def _attempt(self, what: str, send: Any, *args: Any, **kwargs: Any) -> bool:
        """One fail-fast `send(*args, **kwargs)`; False (and a warning) if the store is unreachable. A
        request the store rejects is dropped with an error: sending it again could never succeed."""
        try:
            with fail_fast():
                send(*args, **kwargs)
        except Exception as err:
            if _rejected(err):
                log.error("MLflow rejected %s for run %s, dropped: %s", what, self.run_id, err)
                return True
            log.warning("MLflow unavailable (%s); %d metrics buffered", err, len(self._buffer))
            return False
        return True

    def _send_params(self) -> bool:
        from mlflow.entities import Param

        queued = self._snapshot(self._params)
        if not queued:
            return True
        existing: dict[str, str] = {}
        if not self._attempt("params", lambda: existing.update(self.client.get_run(self.run_id).data.params)):
            return False
        new = [(k, v) for k, v in queued.items() if k not in existing]
        for i in range(0, len(new), 100):
            chunk = [Param(k, v) for k, v in new[i : i + 100]]
            if not self._attempt("params", self.client.log_batch, self.run_id, params=chunk):
                return False
        self._forget_sent(self._params, queued)
        return True

    def _send_tags(self) -> bool:
        from mlflow.entities import RunTag

        queued = self._snapshot(self._tags)
        if not queued:
            return True
        tags = [RunTag(k, v) for k, v in queued.items()]
        if not self._attempt("tags", self.client.log_batch, self.run_id, tags=tags):
            return False
        self._forget_sent(self._tags, queued)
        return True

    def _snapshot(self, pending: dict[str, str]) -> dict[str, str]:
        with self._lock:
            return dict(pending)

    def _forget_sent(self, pending: dict[str, str], sent: dict[str, str]) -> None:
        """Drop what was sent from `pending`, unless it was set again meanwhile (that value still goes)."""
        with self._lock:
            for k, v in sent.items():
                if pending.get(k) == v:
                    del pending[k]

    def _send_metrics(self) -> bool:
        while True:
            with self._lock:
                chunk = self._buffer[:MAX_BATCH]
            if not chunk:
                return True
            if not self._attempt("metrics", self.client.log_batch, self.run_id, metrics=chunk):
                return False
            with self._lock:
                del self._buffer[: len(chunk)]  # only this thread removes, always from the front

    def _send_artifacts(self) -> bool:
        while True:
            with self._lock:
                if not self._artifacts:
                    return True
                path, artifact_path = self._artifacts[0]
            if not self._attempt(
                f"artifact {path}", self.client.log_artifact, self.run_id, path, artifact_path
            ):
                return False
            with self._lock:
                self._artifacts.pop(0)


@atexit.register
def _deliver_unsent() -> None:
    """Last chance, at exit, for what a tracker queued but nobody waited for (e.g. params of a run whose
    owner never calls `end`)."""
    for tracker in list(_senders):
        if not tracker.drain(timeout=10):
            log.error(
                "MLflow unreachable: %d items of run %s were never logged", tracker.pending, tracker.run_id
            )


def run_end_status(result: TrialResult) -> str:
    """The MLflow status a trial's run ends with, once its outcome is recorded."""
    return "KILLED" if result.status == TrialStatus.INTERRUPTED else "FINISHED"


def record_outcome(tracker: RunTracker, result: TrialResult, folder: TrialDir) -> None:
    """Final metrics, status tags and result.json into the trial's run, then close it. The trainer calls it
    when a trial ends; the sweep driver and `sweep repair` for a run a crash left open after result.json was
    written (`close_with_outcome`). Idempotent: final metrics a crash let through before the close (the
    metric `train_time_s` at the last step marks them) are not logged twice."""
    final = {"train_time_s": result.train_time_s}
    if result.final_val_loss is not None:
        final.update(final_val_loss=result.final_val_loss, final_val_perplexity=result.final_val_perplexity)
    if not tracker.has_logged("train_time_s", result.steps):
        tracker.log_metrics(final, step=result.steps, force=True)
    tracker.set_tags({tags.STATUS: result.status, tags.STATUS_REASON: result.reason})
    if result.status != TrialStatus.INTERRUPTED:
        tracker.log_artifact(folder.result)
    tracker.end(run_end_status(result))


def close_with_outcome(uri: str, experiment: str, run_name: str, run_id: str, folder: TrialDir) -> bool:
    """A run whose trial has result.json but was left open (a crash between the two): its outcome recorded
    and the run closed, as the trainer would have. False when it already was."""
    result = TrialResult.load(folder.result)
    if mlflow_client(uri).get_run(run_id).info.status == run_end_status(result):
        return False
    record_outcome(RunTracker.start(uri, experiment, run_name, resume_run_id=run_id), result, folder)
    return True
