"""Run a sweep on Ray: one Tune trial per unique trial config. A multi-worker trial launches a Ray Train
`TorchTrainer` whose workers run the DeepSpeed trainer; a single-worker trial runs the same trainer in its
Tune trial actor, which holds the trial's resources and is reused across trials (`TrialJob.in_tune_actor`).
MLflow gets one parent run per sweep and one child run per trial.

Exactly-once bookkeeping (what makes re-running `sweep run` safe):
- a trial's identity is its config hash; rows of the plan that share it (the base point on several axes)
  are trained once, and its MLflow run carries every row it stands for (`tags.ROWS`);
- the driver creates the parent run and every child run *before* any training, serially, and records each
  run id in the trial's folder (`run.json`) and as tags, so a rerun finds and continues the same runs;
- a trial with `result.json` is done (finished or diverged) and is skipped; an interrupted one resumes from
  its last verified checkpoint. Each invocation runs a fresh Tune experiment over the pending trials (Tune's
  restore is not needed: the trial folders hold the state that matters).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from orchestrator import tags
from orchestrator.config import ConfigError, TrialConfig
from orchestrator.sweep.expand import PlannedTrial, expand
from orchestrator.sweep.plan import Plan, check_budget, check_memory, local_memory_limits, plan
from orchestrator.sweep.spec import SweepSpec
from orchestrator.sweep_dir import SweepDir
from orchestrator.tracking import (
    RunTracker,
    close_with_outcome,
    gc_paused,
    get_or_create_experiment,
    mlflow_client,
    resolve_tracking_uri,
)
from orchestrator.trial_dir import TrialDir, TrialStatus


@dataclass
class TrialUnit:
    """One training job: a unique config and the plan rows (axis memberships) it stands for."""

    id: str
    rows: list[PlannedTrial]

    @property
    def config(self) -> TrialConfig:
        return self.rows[0].config

    @property
    def name(self) -> str:
        return self.rows[0].name

    @property
    def family(self) -> str:
        return self.rows[0].family

    @property
    def shape(self) -> str:
        return self.rows[0].shape

    @property
    def folder(self) -> TrialDir:
        """The trial's folder, as planned (`TrialConfig.trial_dir`)."""
        return self.config.folder

    def status(self) -> dict[str, Any]:
        """What the trial's folder says (`TrialDir.status`), with the trial's name."""
        return self.folder.status() | {"name": self.name}


@dataclass(frozen=True)
class Stage:
    """A stage that trains (the sweep, its tuning stage) once `start_stage` has set it up: the spec, its
    folder and MLflow store, the units to account for and those still to train, and the sweep's parent run.
    It holds the sweep's driver lock for as long as it lives."""

    spec: SweepSpec
    folder: SweepDir
    tracking_uri: str
    units: list[TrialUnit]
    pending: list[TrialUnit]
    parent_run_id: str


def unit_flops(unit: TrialUnit) -> float:
    """Training FLOPs of a unit's trial (the study's count), for the progress ETA and the schedule order."""
    return unit.rows[0].costs.train_flops


def trial_units(trials: Iterable[PlannedTrial]) -> list[TrialUnit]:
    units: dict[str, TrialUnit] = {}
    for t in trials:
        units.setdefault(t.id, TrialUnit(t.id, [])).rows.append(t)
    return list(units.values())


def sweep_status(spec: SweepSpec) -> dict[str, dict[str, Any]]:
    """{trial id: status dict} of every trial of the sweep, from their folders (`ebtscale sweep status`)."""
    return {u.id: u.status() for u in trial_units(expand(spec))}


# ---------------------------------------------------------------------------------------------- MLflow


def ensure_runs(
    spec: SweepSpec, uri: str, units: list[TrialUnit], extra_tags: dict[str, str] | None = None
) -> str:
    """Create (or find) the sweep's parent run and one child run per unit (`extra_tags` on the new ones:
    the tuning stage's mark); returns the parent run id. Idempotent: ids are kept in sweep.json / run.json
    and found by tag if those files were lost."""
    folder = spec.folder
    folder.root.mkdir(parents=True, exist_ok=True)
    exp_id = get_or_create_experiment(uri, spec.name)
    client = mlflow_client(uri)
    parent_id = folder.parent_run_id() if folder.sweep_file.is_file() else None
    if parent_id is None:
        role = {tags.ROLE: tags.ROLE_SWEEP, tags.SWEEP: spec.name}
        found = client.search_runs([exp_id], " and ".join(tags.search(k, v) for k, v in role.items()))
        if found:
            parent_id = found[0].info.run_id
        else:
            parent = RunTracker.start(uri, spec.name, spec.name, tags=role)
            parent.log_params({"spec": spec.model_dump(mode="json")})
            parent_id = parent.run_id
        folder.write_sweep_file(parent_id, uri)
    with gc_paused():
        children = client.search_runs([exp_id], tags.search(tags.PARENT, parent_id), max_results=50000)
    existing = {r.data.tags.get(tags.TRIAL_ID): r.info.run_id for r in children}
    for unit in units:
        if unit.folder.run.is_file():
            continue
        run_id = existing.get(unit.id)
        if run_id is None:
            # The client directly (one request, not a tracker's start-up queries): 17 runs took 8 s otherwise.
            run_tags = child_run_tags(spec.name, unit, parent_id) | (extra_tags or {})
            run_id = client.create_run(exp_id, run_name=unit.name, tags=run_tags).info.run_id
            client.set_terminated(run_id, status="SCHEDULED")
        unit.folder.write_run(run_id, uri)
    close_done_runs(uri, spec.name, units, parent_id)
    return parent_id


def close_done_runs(uri: str, sweep: str, units: list[TrialUnit], parent_id: str) -> None:
    """A trial killed between writing result.json and closing its MLflow run is done (never trained again),
    but its run was left open: record its outcome from result.json and close it."""
    exp_id = get_or_create_experiment(uri, sweep)
    client = mlflow_client(uri)
    with gc_paused():
        unfinished = client.search_runs(
            [exp_id],
            f"{tags.search(tags.PARENT, parent_id)} and attributes.status != 'FINISHED'",
            max_results=50000,
        )
    open_runs = {r.info.run_id for r in unfinished}
    for unit in units:
        folder = unit.folder
        record = folder.read_run()
        if record is None or not folder.result.is_file():
            continue
        if record.run_id in open_runs:
            close_with_outcome(uri, sweep, unit.name, record.run_id, folder)


def child_run_tags(sweep: str, unit: TrialUnit, parent_id: str) -> dict[str, str]:
    """The tags a trial's run is created with (pending, a child of the sweep's run)."""
    return {
        tags.TRIAL_ID: unit.id,
        tags.SWEEP: sweep,
        tags.FAMILY: unit.family,
        tags.AXIS: ",".join(sorted({r.axis for r in unit.rows})),
        tags.STATUS: TrialStatus.PENDING,
        tags.ROWS: json.dumps([_row_tag(r) for r in unit.rows]),
        tags.PARENT: parent_id,
    }


def _row_tag(row: PlannedTrial) -> dict[str, Any]:
    return {
        "name": row.name,
        "axis": row.axis,
        "axis_value": row.axis_value,
        "flops_budget": row.flops_budget,
    }


# ---------------------------------------------------------------------------------------------- Ray


LAUNCHERS = ("auto", "ray_train")


@dataclass(frozen=True)
class TrialJob:
    """What one Tune trial is asked to do: train `config` (in its planned folder), reporting to MLflow.
    It crosses into Ray as the plain dict of `to_dict` (Tune copies and pickles its param space) and is read
    back with `from_dict`: the one place it is serialised."""

    id: str
    config: TrialConfig
    tracking_uri: str
    experiment: str
    ray_storage: str  # Ray Train's storage for this sweep
    launcher: str
    attempt: str  # names this invocation's Tune experiment and Train runs
    report_evals: bool = False  # a tuning trial: every validation loss goes to Tune (its scheduler decides)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "config": self.config.model_dump(mode="json")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialJob:
        return cls(**{**data, "config": TrialConfig.model_validate(data["config"])})

    @property
    def in_tune_actor(self) -> bool:
        """Whether it trains in its Tune trial actor rather than under a Ray Train TorchTrainer."""
        return not uses_ray_train(self.launcher, self.config.resources.num_workers)


def uses_ray_train(launcher: str, num_workers: int) -> bool:
    """Whether a trial trains under a Ray Train TorchTrainer rather than inside its Tune trial actor.

    `auto` trains single-worker trials in the Tune actor. Ray Train adds nothing such a trial uses (no process
    group to form across workers; retries are Tune's and checkpoints are the trainer's own), but it costs ~16
    Python processes and ~15 s of start-up and teardown per trial (benchmarks/NOTES.md). In the Tune actor,
    which holds the trial's real CPUs/GPUs and is reused by the next trial of the same shape, torch, DeepSpeed
    and MLflow are imported once per slot instead of once per trial. Multi-worker trials always use Ray
    Train."""
    return launcher != "auto" or num_workers > 1


def trial_resources(tune_config: dict[str, Any]) -> dict[str, float]:
    """What the Tune trial actor asks Ray for: the trial's own resources when it trains in the actor; when
    it only waits on a TorchTrainer, no CPU (Tune needs a non-empty request: a token amount of memory),
    leaving every core to the Train workers."""
    job = TrialJob.from_dict(tune_config["job"])
    if not job.in_tune_actor:
        return {"cpu": 0, "memory": 1 << 20}
    res = job.config.resources
    return {"cpu": res.cpus_per_worker, "gpu": res.gpus_per_worker}


def _train(payload: dict[str, Any], in_actor: bool) -> dict[str, Any]:
    """Train (or resume) the job's trial in this process; returns Tune's final report. A tuning trial
    (`report_evals`) also reports each validation loss as it comes, `report` counting evaluations: the time
    axis of the search's scheduler (ASHA), the same on a resumed trial."""
    from orchestrator.train.trainer import TrackingContext, train_trial

    job = TrialJob.from_dict(payload)
    tracking = TrackingContext(uri=job.tracking_uri, experiment=job.experiment)
    every = job.config.train.eval_every
    reported: list[int] = []
    stopped_by_tune: list[bool] = []

    def on_eval(step: int, val_loss: float, train_time_s: float) -> bool:
        report = -(-step // every)
        metrics = {"val_loss": val_loss, "report": report, "step": step, "train_time_s": train_time_s}
        reported.append(step)
        if not in_actor:  # a Ray Train worker: its TuneReportCallback relays rank 0's metrics
            import ray.train

            ray.train.report(metrics)
            return True
        from ray import tune

        try:
            tune.report(metrics)
        except SystemExit:  # Tune stops a function trainable at its report: the scheduler's early stop
            stopped_by_tune.append(True)
            return False
        return True

    hook = on_eval if job.report_evals else None
    result = train_trial(job.config, tracking, progress=False, on_eval=hook)
    final = {"status": str(result.status), "val_loss": result.final_val_loss or float("nan"), "final": 1}
    if job.report_evals:
        final.update(report=-(-result.steps // every), step=result.steps, evals=len(reported))
        final["stopped_by_tune"] = bool(stopped_by_tune)
    return final


def _needs_final_report(final: dict[str, Any]) -> bool:
    """A tuning trial's evaluations were its reports; only one that reported none (say, resumed at its
    last step) still owes Tune a result."""
    return not final.get("evals")


def _trial_worker(job: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: the DeepSpeed trainer. Metrics stream to MLflow; Tune gets one
    final report (Ray's Train->Tune report queue holds one item, and frequent reports were seen to block
    the Train controller when Tune consumed them slowly, stranding the trial's resources)."""
    import ray.train

    final = _train(job, in_actor=False)
    if _needs_final_report(final):
        ray.train.report(final)


def _trial_driver(tune_config: dict[str, Any]) -> None:
    """The Tune function trainable: trains a single-worker trial itself (`TrialJob.in_tune_actor`), or
    launches one Ray Train TorchTrainer for it. A failed attempt raises, and Tune retries the trial
    (`--max-failures`); every attempt resumes from the trial's last verified checkpoint."""
    from ray import tune

    payload = tune_config["job"]
    job = TrialJob.from_dict(payload)
    res = job.config.resources
    if job.in_tune_actor:
        import torch

        torch.set_num_threads(max(1, int(res.cpus_per_worker)))
        final = _train(payload, in_actor=True)
        if final.get("stopped_by_tune"):
            # Tune ended this trial at a report, whose SystemExit the trainer caught to record the outcome:
            # end the thread the same way (returning would make Tune's wrapper wait for one more report).
            raise SystemExit(0)
        if _needs_final_report(final):
            tune.report(final)  # if Tune stops the trial at this report, its SystemExit ends the thread
        return

    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    use_gpu = res.gpus_per_worker > 0
    per_worker = {"CPU": res.cpus_per_worker, **({"GPU": res.gpus_per_worker} if use_gpu else {})}
    trainer = TorchTrainer(
        _trial_worker,
        train_loop_config=payload,
        scaling_config=ray.train.ScalingConfig(
            num_workers=res.num_workers, use_gpu=use_gpu, resources_per_worker=per_worker
        ),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=ray.train.RunConfig(
            name=f"train-{job.id}-{job.attempt}",
            storage_path=job.ray_storage,
            # Retries are Tune's (one mechanism for both launchers): a worker failure fails this attempt.
            failure_config=ray.train.FailureConfig(max_failures=0),
            callbacks=[TuneReportCallback()],
        ),
    )
    trainer.fit()


def init_ray(address: str | None, env: dict[str, str], dashboard: bool = True) -> str | None:
    """Connect to a cluster (`address` or RAY_ADDRESS) or start a private embedded local instance, with its
    dashboard if `dashboard` (Ray Train needs it; it delays the start by ~2 s and takes a few % of a core).
    Returns the embedded instance's dashboard URL, if it has one."""
    import ray

    from orchestrator.ports import free_port

    if ray.is_initialized():
        return None
    address = cluster_address(address)
    env = dict(env)
    if address is None:
        # "local" always starts a private instance: a bare ray.init() would silently attach to any cluster
        # that `ray start` left running on this machine. Its GCS port is chosen here so that its own
        # processes get RAY_ADDRESS: Ray Train's placement-group cleaner queries the State API, which
        # otherwise fails ("multiple active Ray instances") when other Ray instances run on the machine,
        # and then finished trials never give their CPUs back.
        port = free_port()
        env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
        os.environ["RAY_GCS_SERVER_PORT"] = str(port)
    try:
        context = ray.init(
            address=address or "local",
            # Ray Train's placement-group cleaner needs the State API, which the dashboard serves. Bound to
            # loopback unless the user says otherwise.
            include_dashboard=dashboard,
            dashboard_host=os.environ.get("EBTSCALE_DASHBOARD_HOST", "127.0.0.1"),
            logging_level="WARNING",
            log_to_driver=False,
            runtime_env={"env_vars": env},
            _node_ip_address="127.0.0.1" if address is None else None,
        )
    finally:
        os.environ.pop("RAY_GCS_SERVER_PORT", None)
    return context.dashboard_url if address is None and dashboard else None


def ray_env(tracking_uri: str) -> dict[str, str]:
    """Environment of every process the sweep's Ray starts (trial actors, Train workers)."""
    env = {k: os.environ[k] for k in ("DS_ACCELERATOR", "EBTSCALE_CACHE_DIR", "HF_HOME") if k in os.environ}
    env.update(MLFLOW_TRACKING_URI=tracking_uri, TOKENIZERS_PARALLELISM="false", RAY_TRAIN_V2_ENABLED="1")
    # Starting a worker imports torch + DeepSpeed; on a loaded 2-core machine that can exceed Ray Train's 60 s
    # default, after which it retries the start forever. A generous limit lets a slow start succeed.
    timeout_var = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
    env[timeout_var] = os.environ.setdefault(timeout_var, "600")
    # A tuning trial stopped early writes its result and closes its MLflow run before its reused actor takes
    # the next trial; Tune's default 2 s wait for that was seen to be too short on a loaded machine.
    env["TUNE_FUNCTION_THREAD_TIMEOUT_S"] = os.environ.get("TUNE_FUNCTION_THREAD_TIMEOUT_S", "60")
    return env


def cluster_address(address: str | None) -> str | None:
    """The cluster a sweep joins (`--address`, else RAY_ADDRESS); None: an embedded local Ray."""
    return address or os.environ.get("RAY_ADDRESS")


def check_plan_fits(p: Plan, force: bool, on_cluster: bool) -> None:
    """Refuse (SpecError) a plan with a trial that cannot fit in a worker, before any trial starts. For the
    embedded Ray it needs no Ray at all (this machine's memory): call it before starting Ray; on a cluster
    it needs the connection (the largest node's memory): call it once connected. `force` skips it."""
    if force:
        return
    if not on_cluster:
        check_memory(p, *local_memory_limits())
        return
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    node_memory = max((int(r.get("memory", 0) + r.get("object_store_memory", 0)) for r in nodes), default=0)
    check_memory(p, node_memory or None, None)


def concurrent_slots(units: list[TrialUnit]) -> int:
    """How many trials fit on the cluster at once, from each trial's requested workers x resources."""
    import ray

    total = ray.cluster_resources()
    slots = []
    for u in units:
        r = u.config.resources
        need_cpu = r.num_workers * r.cpus_per_worker
        fit = total.get("CPU", 1) // need_cpu
        if r.gpus_per_worker > 0:
            fit = min(fit, total.get("GPU", 0) // (r.num_workers * r.gpus_per_worker))
        slots.append(int(fit))
    return max(1, min(slots, default=1))


@contextmanager
def start_stage(
    spec: SweepSpec,
    trials: Sequence[PlannedTrial],
    *,
    address: str | None = None,
    launcher: str = "auto",
    force: bool = False,
    progress: bool = True,
    dashboard: bool = False,
    max_flops: float | None = None,
    max_trials: int | None = None,
    extra_tags: dict[str, str] | None = None,
) -> Iterator[Stage]:
    """What every stage that trains does before its first trial, in this order, and the sweep's driver lock
    for as long as the stage runs: the launcher and the budget caps are checked and each trial's memory
    against this machine (a cluster's: once connected; `force` skips it), then, under the lock, the MLflow
    runs are created (`ensure_runs`, with `extra_tags` on new ones) while Ray starts, if anything is pending.
    An embedded Ray gets its dashboard when a pending trial uses Ray Train, or when `dashboard` asks for it.
    Raises ConfigError (SweepBusy when another driver holds the lock) before anything trains."""
    if launcher not in LAUNCHERS:
        raise ConfigError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    planned = plan(list(trials), calibrate=False, throughput_flops=1.0)
    check_budget(planned, max_flops, max_trials)
    on_cluster = cluster_address(address) is not None
    if not on_cluster:
        check_plan_fits(planned, force, on_cluster)
    folder, uri = spec.folder, resolve_tracking_uri(spec.output_dir)
    units = trial_units(trials)
    with folder.driver_lock():
        pending = [u for u in units if not u.folder.status()["status"].final]
        with ThreadPoolExecutor(1) as pool:
            # Ray starts (seconds) while the MLflow runs are created: both are done before any trial trains.
            runs = pool.submit(ensure_runs, spec, uri, units, extra_tags)
            if pending:
                dashboard = dashboard or any(
                    uses_ray_train(launcher, u.config.resources.num_workers) for u in pending
                )
                url = init_ray(address, ray_env(uri), dashboard=dashboard)
                if url and progress:
                    print(f"Ray dashboard: http://{url}", flush=True)
                if on_cluster:
                    check_plan_fits(planned, force, on_cluster)
            parent_id = runs.result()
        stage = Stage(spec, folder, uri, units, pending, parent_id)
        client = mlflow_client(uri)
        client.update_run(parent_id, status="RUNNING")
        ended = "FAILED"
        try:
            yield stage
            ended = "FINISHED" if all(u.folder.status()["status"].final for u in units) else "FAILED"
        except KeyboardInterrupt:
            ended = "KILLED"
            raise
        finally:
            # MLflow's run lifecycle: a driver that ends leaves its sweep's run FINISHED (every trial of
            # the stage has an outcome), FAILED (some trial has none) or KILLED, never RUNNING
            client.set_terminated(parent_id, status=ended)


def run_sweep(
    spec: SweepSpec,
    address: str | None = None,
    max_failures: int = 2,
    max_concurrent: int | None = None,
    progress: bool = True,
    launcher: str = "auto",
    dashboard: bool = False,
    max_flops: float | None = None,
    max_trials: int | None = None,
    untuned: bool = False,
    force: bool = False,
) -> dict[str, dict[str, Any]]:
    """Expand (once), start the stage (`start_stage`: caps, memory, the driver lock, MLflow runs, Ray), train
    every pending trial on Ray; returns {trial id: status dict}. `launcher`: "auto" trains single-worker
    trials in their Tune actor (`TrialJob.in_tune_actor`), "ray_train" gives every trial a Ray Train
    TorchTrainer. A spec with a `tune:` block needs its search done first (`sweep tune`), unless
    `untuned`."""
    trials = expand(spec)
    if trials.tuning is not None and not untuned and trials.tuning.status != "complete":
        state = trials.tuning
        why = "has not finished" if state.status == "missing" else "answers another tune: block or base"
        raise ConfigError(
            f"sweep {spec.name}: its tuning stage {why} ({state.path}); run `ebtscale sweep tune` first, "
            "or pass --untuned to train the spec's own values"
        )
    with start_stage(
        spec,
        trials,
        address=address,
        launcher=launcher,
        force=force,
        progress=progress,
        dashboard=dashboard,
        max_flops=max_flops,
        max_trials=max_trials,
    ) as stage:
        if stage.pending:
            run_on_ray(stage, stage.units, stage.pending, max_failures, max_concurrent, progress, launcher)
    return {u.id: u.status() for u in stage.units}


def run_on_ray(
    stage: Stage,
    units: list[TrialUnit],
    pending: list[TrialUnit],
    max_failures: int,
    max_concurrent: int | None,
    progress: bool,
    launcher: str,
    scheduler: Any = None,
    label: str = "tune",
    searcher: Any = None,
) -> Any:
    """One Tune experiment over the pending units; returns its ResultGrid. With a `scheduler` (the tuning
    stage's ASHA) the trials report every validation loss and may be stopped early. With a `searcher` (a
    Tune Searcher built from the jobs: `sweep extend`'s rounds) Tune asks it for each trial's job, in
    batches of the concurrent slots, instead of walking a grid."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    ray_dir = stage.folder.ray
    attempt = time.strftime("%Y%m%d-%H%M%S")  # names this invocation's Tune experiment and Train runs
    jobs = [
        TrialJob(
            id=u.id,
            config=u.config,
            tracking_uri=stage.tracking_uri,
            experiment=stage.spec.name,
            ray_storage=str(ray_dir / "train"),
            launcher=launcher,
            attempt=attempt,
            report_evals=scheduler is not None,
        ).to_dict()
        # Longest first (by training FLOPs): short trials fill the gaps at the end instead of one long trial
        # running alone while the other slots idle. (A search keeps its sampling order: ASHA compares each
        # trial with those that reached a rung before it.)
        for u in (pending if scheduler is not None else sorted(pending, key=unit_flops, reverse=True))
    ]
    trainable = tune.with_resources(_trial_driver, trial_resources)
    # Tune's new console output prints an experiment banner and a TensorBoard hint whatever `verbose` says;
    # its classic reporter honours verbose=0 (the sweep shows its own progress table).
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # A fresh Tune experiment per invocation, over the pending trials only. What a restore would give (skip
    # finished, resume interrupted) lives in the trial folders and verified checkpoints, which survive any
    # crash; restoring Tune's own state after a driver kill was seen to strand later trials waiting for
    # resources held by the dead run.
    slots = max_concurrent or concurrent_slots(pending)
    search: dict[str, Any] = {"max_concurrent_trials": slots}
    if searcher is not None:
        search = {
            "search_alg": ConcurrencyLimiter(searcher(jobs), max_concurrent=slots, batch=True),
            "num_samples": len(jobs),
        }
    tuner = tune.Tuner(
        trainable,
        param_space={} if searcher is not None else {"job": tune.grid_search(jobs)},
        tune_config=tune.TuneConfig(
            **search,
            # A finished trial's actor trains the next trial of the same resource shape: imports, the first
            # deepspeed.initialize and the process group are paid once per slot, not once per trial.
            reuse_actors=True,
            scheduler=scheduler,
        ),
        run_config=tune.RunConfig(
            name=f"{label}-{attempt}",
            storage_path=str(ray_dir),
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=max_failures),
        ),
    )
    monitor = _ProgressMonitor(stage.spec.name, units) if progress else None
    try:
        results = tuner.fit()
    finally:
        if monitor is not None:
            monitor.stop()
    record_errors(stage, pending, results)
    return results


def root_error(error: BaseException) -> BaseException:
    """The exception a trial raised, out of Ray's wrappers (a RayTaskError holds it as `cause`)."""
    seen = 0
    while getattr(error, "cause", None) is not None and seen < 10:
        error, seen = error.cause, seen + 1
    return error


def record_errors(stage: Stage, units: list[TrialUnit], results: Any) -> None:
    """A trial whose last attempt raised without an outcome is an outcome of its own: failed. The trainer
    records the errors of training itself; this records the others (the trainable's call into training, an
    import that fails on a worker): failed.json with the error's type and message, and its MLflow run
    FAILED with them as its status reason and the traceback as an artifact, so that no trial is left
    pending or SCHEDULED by a driver that has finished."""
    by_id = {u.id: u for u in units}
    client = mlflow_client(stage.tracking_uri)
    for result in results:
        unit = by_id.get(((result.config or {}).get("job") or {}).get("id"))
        if result.error is None or unit is None or unit.folder.status()["status"].final:
            continue
        cause = root_error(result.error)
        reason = f"{type(cause).__name__}: {cause}".split("\n")[0][:500]
        unit.folder.write_failed(reason)
        record = unit.folder.read_run()
        if record is None:
            continue
        client.set_tag(record.run_id, tags.STATUS, str(TrialStatus.FAILED))
        client.set_tag(record.run_id, tags.STATUS_REASON, reason)
        client.log_text(record.run_id, str(result.error), tags.ERROR_ARTIFACT)
        client.set_terminated(record.run_id, status="FAILED")


def progress_table(sweep: str, units: list[TrialUnit], elapsed: float) -> Any:
    """The live view's table: trials by status and the work done (in FLOPs), with an ETA from `elapsed`."""
    from rich.table import Table

    counts: dict[str, int] = {}
    done_flops = total_flops = 0.0
    for u in units:
        st = u.folder.status()
        counts[st["status"]] = counts.get(st["status"], 0) + 1
        flops = unit_flops(u)
        total_flops += flops
        if st["status"].final:
            done_flops += flops
        elif "step" in st:
            done_flops += flops * st["step"] / max(1, st["total"])
    frac = done_flops / total_flops if total_flops else 1.0
    eta = f"{elapsed * (1 - frac) / frac:,.0f}s" if frac > 0.01 else "-"
    table = Table(title=f"sweep {sweep}", show_header=True)
    S = TrialStatus
    # the other outcomes only once a trial has one: an 80-column terminal then shows every header whole
    states = [S.FINISHED, S.RUNNING, S.PENDING]
    states += [k for k in (S.DIVERGED, S.STOPPED, S.FAILED, S.INTERRUPTED) if counts.get(k)]
    for col in ("trials", *states, "work done", "ETA"):
        table.add_column(col, no_wrap=True, min_width=len(col))
    table.add_row(str(len(units)), *(str(counts.get(k, 0)) for k in states), f"{frac:.0%}", eta)
    return table


class _ProgressMonitor:
    """Live terminal view of the sweep: trials done / running / failed, and an ETA from FLOPs done."""

    def __init__(self, sweep: str, units: list[TrialUnit], every_s: float = 2.0) -> None:
        from rich.live import Live

        self.sweep, self.units, self.every_s = sweep, units, every_s
        self.start = time.time()
        self._stop = threading.Event()
        self.live = Live(self.render(), refresh_per_second=1, transient=False)
        self.live.start()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def render(self) -> Any:
        return progress_table(self.sweep, self.units, time.time() - self.start)

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.live.update(self.render())

    def stop(self) -> None:
        self._stop.set()
        self.thread.join()
        self.live.update(self.render())
        self.live.stop()
