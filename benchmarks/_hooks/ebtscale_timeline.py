"""Benchmark-only timeline of a sweep: timestamps of what every process of the sweep does, with no change to
the project's code. Loaded at interpreter start by the sitecustomize.py beside it, which
bench_orchestration.py puts on PYTHONPATH of the sweep's processes (driver, Ray cluster, Ray workers) only.

When a watched module is first imported, its functions are wrapped (functools.wraps keeps their names, so
Ray still pickles them by reference) to append events to <EBTSCALE_BENCH_TIMELINE>/<pid>.jsonl:
- imports of torch, deepspeed, mlflow and ray.train (how long each import took);
- the driver: run_sweep, ensure_runs (MLflow run creation), init_ray, run_on_ray (Tune);
- the Tune trainable `_trial_driver` and the trial's training `_train` (in a Ray Train worker or the Tune
  actor), keyed by trial id;
- inside the trainer: init_process_group, prepare_dataset, build_model, deepspeed.initialize, Trial.run,
  _start_tracker, save_final_weights, _finish; per-trial totals of _train_step, evaluate, checkpoint.save,
  _log and every MLflow call (RunTracker methods), written when the trial finishes.
Every wrapper records and re-raises; nothing here changes what the wrapped code does.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

_DIR = os.environ.get("EBTSCALE_BENCH_TIMELINE", "")
_TOTALS: dict[str, float] = {}  # per-process sums (one trial per Train worker process)
_COUNTS: dict[str, int] = {}
_CONTEXT: dict[str, str] = {}  # trial id of this process, once known


def event(kind: str, /, **fields: Any) -> None:
    record = {"t": time.time(), "pid": os.getpid(), "event": kind, **_CONTEXT, **fields}
    try:
        with open(os.path.join(_DIR, f"{os.getpid()}.jsonl"), "a") as f:
            f.write(json.dumps(record, default=str) + "\n")
    except OSError:
        pass


def _process_start_time() -> float:
    """Epoch seconds at which this process started (/proc/self/stat starttime + boot time)."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as f:
            btime = next(int(line.split()[1]) for line in f if line.startswith("btime"))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration):
        return time.time()


def spanned(fn: Callable[..., Any], name: str, fields: Callable[..., dict[str, Any]] | None = None) -> Any:
    """Wrap fn: events '<name>:start' and '<name>:end' (with seconds) around every call."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        extra = {}
        if fields is not None:
            try:
                extra = fields(*args, **kwargs)
            except Exception:
                extra = {}
        start = time.time()
        event(f"{name}:start", **extra)
        ok = False
        try:
            out = fn(*args, **kwargs)
            ok = True
            return out
        finally:
            event(f"{name}:end", seconds=time.time() - start, ok=ok, **extra)

    return wrapper


_DEPTH: dict[str, int] = {}  # open calls per group: nested calls of one group are counted once


def summed(fn: Callable[..., Any], name: str, group: str | None = None) -> Any:
    """Wrap fn: add its seconds and calls to this process's totals (flushed by flush_totals). Within a
    `group`, only the outermost call counts (e.g. RunTracker.end calling RunTracker.flush)."""
    group = group or name

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        outer = _DEPTH.get(group, 0) == 0
        _DEPTH[group] = _DEPTH.get(group, 0) + 1
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _DEPTH[group] -= 1
            if outer:
                _TOTALS[name] = _TOTALS.get(name, 0.0) + time.perf_counter() - start
                _COUNTS[name] = _COUNTS.get(name, 0) + 1

    return wrapper


def flush_totals(name: str) -> None:
    """Record this trial's totals, then start afresh: a reused Tune actor trains the next trial."""
    event(name, totals=dict(_TOTALS), counts=dict(_COUNTS))
    _TOTALS.clear()
    _COUNTS.clear()


# ---------------------------------------------------------------------------------------------- patches


def _job_fields(job: dict[str, Any]) -> dict[str, Any]:
    return {"trial": job["id"], "name": job["config"]["name"]}


def _patch_sweep_runner(m: Any) -> None:
    def worker_fields(job: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        _CONTEXT["trial"] = job["id"]
        return _job_fields(job)

    original_train = m._train  # the trial's training, in a Ray Train worker or in the Tune actor

    # *args/**kwargs: whatever _train takes besides the job (now `in_actor`) passes through untouched, so
    # that a change of its signature cannot break the benchmark's trials again
    @functools.wraps(original_train)
    def train(job: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            return spanned(original_train, "worker_fn", worker_fields)(job, *args, **kwargs)
        finally:
            flush_totals("worker_totals")

    m._train = train
    m._trial_driver = spanned(m._trial_driver, "tune_trial", lambda cfg: _job_fields(cfg["job"]))
    m.run_sweep = spanned(m.run_sweep, "run_sweep")
    m.ensure_runs = spanned(m.ensure_runs, "ensure_runs")
    m.init_ray = spanned(m.init_ray, "init_ray")
    m.run_on_ray = spanned(m.run_on_ray, "tune_fit")


def _patch_trainer(m: Any) -> None:
    def trial_fields(self: Any, cfg: Any, *a: Any, **kw: Any) -> dict[str, Any]:
        _CONTEXT.setdefault("trial", str(cfg.folder.path)[-12:])  # trial folders are <name>-<id>
        return {"name": cfg.name}

    m.Trial.__init__ = spanned(m.Trial.__init__, "trial_init", trial_fields)
    m.Trial.run = spanned(m.Trial.run, "trial_run")
    m.Trial._start_tracker = spanned(m.Trial._start_tracker, "mlflow_start_tracker")
    m.Trial.save_final_weights = spanned(m.Trial.save_final_weights, "final_weights")
    original_finish = m.Trial._finish

    @functools.wraps(original_finish)
    def finish(self: Any, result: Any) -> None:
        try:
            spanned(original_finish, "trial_finish")(self, result)
        finally:
            flush_totals("trial_totals")

    m.Trial._finish = finish
    m.Trial._train_step = summed(m.Trial._train_step, "train_step")
    m.Trial.evaluate = summed(m.Trial.evaluate, "evaluate")
    m.Trial._log = summed(m.Trial._log, "log")
    m.prepare_dataset = spanned(m.prepare_dataset, "prepare_dataset")
    m.build_model = spanned(m.build_model, "build_model")
    m.checkpoint.save = summed(m.checkpoint.save, "checkpoint_save")
    m.distributed.init_process_group = spanned(m.distributed.init_process_group, "init_process_group")


def _patch_tracking(m: Any) -> None:
    """Every RunTracker call (the trainer's only MLflow I/O), outermost calls only; `start` includes the
    client's creation and, the first time in a process, the mlflow import."""
    for name in ("log_params", "set_tags", "log_metrics", "flush", "log_artifact", "end"):
        setattr(m.RunTracker, name, summed(getattr(m.RunTracker, name), f"mlflow.{name}", "mlflow"))
    m.RunTracker.start = classmethod(summed(m.RunTracker.start.__func__, "mlflow.start", "mlflow"))


def _patch_deepspeed(m: Any) -> None:
    m.initialize = spanned(m.initialize, "deepspeed_initialize")


PATCHES: dict[str, Callable[[Any], None] | None] = {
    "torch": None,
    "deepspeed": _patch_deepspeed,
    "mlflow": None,
    "ray.train": None,
    "orchestrator.sweep.runner": _patch_sweep_runner,
    "orchestrator.train.trainer": _patch_trainer,
    "orchestrator.tracking": _patch_tracking,
}


class _Loader(importlib.abc.Loader):
    """Delegates to the real loader, timing the module's execution, then applies its patch."""

    def __init__(self, inner: importlib.abc.Loader, name: str) -> None:
        self.inner, self.name = inner, name

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self.inner.create_module(spec)

    def exec_module(self, module: Any) -> None:
        start = time.time()
        self.inner.exec_module(module)
        event("import", module=self.name, seconds=time.time() - start, start=start)
        patch = PATCHES.get(self.name)
        if patch is not None:
            try:
                patch(module)
            except Exception as err:  # a hook must never break the sweep
                event("patch_failed", module=self.name, error=repr(err))


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name not in PATCHES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _Loader(spec.loader, name)
        return spec


def _record_title(delay_s: float) -> None:
    """Ray renames its worker processes (`ray::TrainController.run`, `ray::IDLE`, ...) once they have a job:
    record the name a few seconds after start-up, to tell which actors a sweep starts."""
    time.sleep(delay_s)
    try:
        with open("/proc/self/cmdline", "rb") as f:
            title = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return
    event("title", title=title[:120])


def install() -> None:
    if not _DIR or not os.path.isdir(_DIR):
        return
    sys.meta_path.insert(0, _Finder())
    event("process", started=_process_start_time(), argv=" ".join(sys.argv)[:300])
    if "default_worker" in " ".join(sys.argv):
        import threading

        threading.Thread(target=_record_title, args=(8.0,), daemon=True).start()
