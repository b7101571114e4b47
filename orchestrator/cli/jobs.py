"""`ebtscale submit` and `ebtscale jobs ...`: a sweep's driver as a Ray Job (the logic: cluster/jobs.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.common import fail
from orchestrator.cluster.jobs import (
    DEFAULT_ADDRESS,
    client,
    client_errors,
    follow_logs,
    parse_env,
    plan_job,
    submit,
)

jobs_app = typer.Typer(
    name="jobs",
    help="Sweeps submitted to a Ray cluster as Ray Jobs: status, logs, stop, list.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

AddressOption = Annotated[
    str,
    typer.Option(
        "--address",
        envvar="RAY_API_SERVER_ADDRESS",
        help="the cluster's Ray dashboard (Jobs API), e.g. http://HEAD:8265 or an ssh/kubectl tunnel",
    ),
]
JobArg = Annotated[str, typer.Argument(help="the job id `ebtscale submit` printed", show_default=False)]


def submit_command(
    spec: Annotated[Path, typer.Argument(help="sweep spec YAML (see docs/sweeps.md)", show_default=False)],
    address: AddressOption = DEFAULT_ADDRESS,
    output_dir: Annotated[
        str | None,
        typer.Option(help="absolute path on storage every node mounts (default: the spec's output_dir)"),
    ] = None,
    working_dir: Annotated[
        Path | None,
        typer.Option(help="uploaded as the job's working dir (default: this project's checkout)"),
    ] = None,
    exclude: Annotated[
        list[str] | None, typer.Option("--exclude", help="extra path pattern not to upload (repeatable)")
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", help="extra KEY=VALUE for the job's environment (repeatable; no secrets)"),
    ] = None,
    submission_id: Annotated[str | None, typer.Option(help="job id to use (default: generated)")] = None,
    max_failures: Annotated[int, typer.Option(help="retries per trial after a crash")] = 2,
    max_concurrent: Annotated[int | None, typer.Option(help="trials at once (default: what fits)")] = None,
    max_flops: Annotated[float | None, typer.Option("--max-flops", help="refuse a sweep over this")] = None,
    max_trials: Annotated[int | None, typer.Option("--max-trials", help="refuse more trials")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", help="stream the job's logs until it ends; exit 0 only on success")
    ] = False,
) -> None:
    """Run SPEC on a Ray cluster as a Ray Job: its driver (`sweep run`) runs on the head node.

    Prints the job id on stdout. output_dir must be an absolute path that every node mounts; MLflow goes to
    $MLFLOW_TRACKING_URI (a tracking server) when set. See docs/cluster.md."""
    try:
        job = plan_job(
            spec,
            dict(os.environ),
            working_dir=working_dir,
            output_dir=output_dir,
            extra_env=parse_env(env),
            excludes=exclude,
            max_failures=max_failures,
            max_concurrent=max_concurrent,
            max_flops=max_flops,
            max_trials=max_trials,
        )
        if "MLFLOW_TRACKING_URI" not in job.env_vars:
            typer.echo(
                "warning: MLFLOW_TRACKING_URI is not set here: runs go to the cluster's own setting, else to "
                "sqlite in output_dir (fine on one node; use a tracking server for several)",
                err=True,
            )
        job_id = submit(job, address, submission_id)
    except client_errors() as err:
        raise fail(err) from None
    forwarded = ", ".join(sorted(k for k in job.env_vars if k != "RAY_OVERRIDE_JOB_RUNTIME_ENV"))
    typer.echo(
        f"submitted sweep '{job.sweep}' ({job.n_trials} trials) to {address}\n"
        f"  entrypoint: {job.entrypoint}\n  env: {forwarded}\n"
        f"  follow: ebtscale jobs logs {job_id} --follow --address {address}",
        err=True,
    )
    typer.echo(job_id)
    if follow:
        _follow_or_fail(address, job_id)


def _follow_or_fail(address: str, job_id: str) -> None:
    try:
        status = follow_logs(address, job_id)
    except client_errors() as err:
        raise fail(err) from None
    typer.echo(f"job {job_id}: {status}", err=True)
    if status != "SUCCEEDED":
        raise typer.Exit(1)


@jobs_app.command("status")
def status_command(job_id: JobArg, address: AddressOption = DEFAULT_ADDRESS) -> None:
    """Print the job's status (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED) and details."""
    try:
        info = client(address).get_job_info(job_id)
    except client_errors() as err:
        raise fail(err) from None
    typer.echo(f"{job_id}: {info.status.value}")
    meta = info.metadata or {}
    for label, value in (
        ("sweep", meta.get("ebtscale.sweep")),
        ("entrypoint", info.entrypoint),
        ("message", info.message),
        ("driver node", getattr(info, "driver_node_id", None)),
    ):
        if value:
            typer.echo(f"  {label}: {value}")


@jobs_app.command("logs")
def logs_command(
    job_id: JobArg,
    address: AddressOption = DEFAULT_ADDRESS,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="stream until the job ends; exit 0 only on success")
    ] = False,
) -> None:
    """Print the job's driver logs (the sweep's progress, errors); `--follow` streams them."""
    if follow:
        _follow_or_fail(address, job_id)
        return
    try:
        typer.echo(client(address).get_job_logs(job_id), nl=False)
    except client_errors() as err:
        raise fail(err) from None


@jobs_app.command("stop")
def stop_command(job_id: JobArg, address: AddressOption = DEFAULT_ADDRESS) -> None:
    """Stop the job (its driver and trials). Submitting the spec again resumes where it stopped."""
    try:
        stopped = client(address).stop_job(job_id)
    except client_errors() as err:
        raise fail(err) from None
    typer.echo(f"{job_id}: {'stop requested' if stopped else 'already finished'}")


@jobs_app.command("list")
def list_command(address: AddressOption = DEFAULT_ADDRESS) -> None:
    """List the cluster's jobs, newest first, with the sweep each one runs."""
    try:
        jobs = client(address).list_jobs()
    except client_errors() as err:
        raise fail(err) from None
    for info in sorted(jobs, key=lambda j: j.start_time or 0, reverse=True):
        sweep = (info.metadata or {}).get("ebtscale.sweep", "-")
        typer.echo(f"{info.submission_id or info.job_id}\t{info.status.value}\t{sweep}")
