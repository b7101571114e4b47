"""`ebtscale sweep ...`: commands on sweep specs. The logic lives in spec.py / plan.py; this file only parses
arguments and turns errors into one line on stderr with exit code 2 (never a traceback)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from orchestrator.config import ConfigError
from orchestrator.plan import check_budget, plan, render_plan
from orchestrator.spec import expand, load_spec

sweep_app = typer.Typer(
    name="sweep",
    help="Scaling sweeps: plan, run on Ray, follow and export a sweep spec (YAML).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@sweep_app.callback()
def _sweep() -> None:
    """Scaling sweeps: plan, run on Ray, follow and export a sweep spec (YAML)."""


def _fail(err: BaseException) -> typer.Exit:
    message = " ".join(str(err).split())  # one line, whatever the source
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


_PLAN_HELP = (
    "Validate SPEC and print its dry-run plan; nothing is trained. "
    "Per trial: parameters N, tokens D, FLOPs, steps, batch, memory per worker and estimated time; then "
    "totals, where a trial shared by several axes counts once. "
    "Exit code 2 on an invalid spec or an exceeded cap."
)


@sweep_app.command("plan", help=_PLAN_HELP, short_help="Validate a sweep spec and print its dry-run plan.")
def plan_command(
    spec: Annotated[Path, typer.Argument(help="sweep spec YAML (see docs/sweeps.md)", show_default=False)],
    max_flops: Annotated[
        float | None,
        typer.Option("--max-flops", help="refuse (exit 2) if the distinct trials need more training FLOPs"),
    ] = None,
    max_trials: Annotated[
        int | None,
        typer.Option("--max-trials", help="refuse (exit 2) if there are more distinct trials to train"),
    ] = None,
    throughput: Annotated[
        float | None,
        typer.Option(
            "--throughput",
            help="effective training FLOP/s per worker for time estimates (default: calibrated here)",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the plan as JSON instead of a table")
    ] = False,
) -> None:
    """Validate SPEC and print its dry-run plan (help text: _PLAN_HELP)."""
    try:
        trials = expand(load_spec(spec))
        result = plan(trials, throughput_flops=throughput)
    except (ConfigError, OSError, ImportError) as err:
        raise _fail(err) from None
    if as_json:
        typer.echo(result.to_json())
    else:
        console = Console()
        if not console.is_terminal:  # pipes and test runners: do not squeeze the table into 80 columns
            console = Console(width=200)
        console.print(render_plan(result))
    try:
        check_budget(result, max_flops=max_flops, max_trials=max_trials)
    except ConfigError as err:
        raise _fail(err) from None


SpecArg = Annotated[Path, typer.Argument(help="sweep spec YAML (see docs/sweeps.md)", show_default=False)]


@sweep_app.command("run")
def run_command(
    spec: SpecArg,
    address: Annotated[
        str | None,
        typer.Option(
            "--address", envvar="RAY_ADDRESS", help="Ray cluster to join (default: embedded local Ray)"
        ),
    ] = None,
    max_failures: Annotated[int, typer.Option(help="retries per trial after a crash")] = 2,
    max_concurrent: Annotated[
        int | None, typer.Option(help="trials at once (default: as many as the cluster's resources fit)")
    ] = None,
    max_flops: Annotated[float | None, typer.Option("--max-flops", help="refuse a sweep over this")] = None,
    max_trials: Annotated[int | None, typer.Option("--max-trials", help="refuse more trials")] = None,
    launcher: Annotated[
        str,
        typer.Option(
            help="auto: single-worker trials train in their (reused) Tune actor, multi-worker trials under a "
            "Ray Train TorchTrainer; ray_train: a TorchTrainer for every trial"
        ),
    ] = "auto",
    dashboard: Annotated[
        bool,
        typer.Option(
            "--dashboard",
            help="start the embedded Ray's dashboard even when no trial needs it (trials under Ray Train do)",
        ),
    ] = False,
) -> None:
    """Train every trial of SPEC on Ray Tune, tracked in MLflow (multi-worker trials under Ray Train).

    Safe to re-run: finished trials are skipped, interrupted ones resume from their last checkpoint, and
    no MLflow run is ever duplicated."""
    from orchestrator.sweep_runner import run_sweep

    try:
        sweep = load_spec(spec)
        check_budget(plan(expand(sweep), calibrate=False, throughput_flops=1.0), max_flops, max_trials)
        statuses = run_sweep(
            sweep,
            address=address,
            max_failures=max_failures,
            max_concurrent=max_concurrent,
            launcher=launcher,
            dashboard=dashboard,
        )
    except (ConfigError, OSError) as err:
        raise _fail(err) from None
    _print_status(sweep.name, statuses)
    if any(s["status"] not in ("finished", "diverged") for s in statuses.values()):
        raise typer.Exit(1)


@sweep_app.command("status")
def status_command(spec: SpecArg) -> None:
    """Show each trial of SPEC: finished, running, interrupted, pending, failed or diverged."""
    from orchestrator.sweep_runner import SweepLayout, trial_units, unit_status

    try:
        sweep = load_spec(spec)
        layout = SweepLayout(sweep)
        statuses = {u.id: unit_status(layout, u) | {"name": u.name} for u in trial_units(expand(sweep))}
    except (ConfigError, OSError) as err:
        raise _fail(err) from None
    _print_status(sweep.name, statuses)


def _print_status(sweep: str, statuses: dict[str, dict]) -> None:
    from rich.table import Table

    table = Table(title=f"sweep {sweep}")
    for col in ("trial", "id", "status", "progress / val loss", "reason"):
        table.add_column(col)
    for trial_id, st in statuses.items():
        detail = f"{st['val_loss']:.4f}" if st.get("val_loss") is not None else ""
        if "step" in st:
            detail = f"step {st['step']}/{st['total']}"
        table.add_row(st["name"], trial_id, st["status"], detail, st.get("reason", ""))
    Console(width=max(120, Console().width)).print(table)


@sweep_app.command("export")
def export_command(
    sweep: Annotated[str, typer.Argument(help="a sweep spec YAML, or a sweep name in the MLflow store")],
    out: Annotated[Path, typer.Option("--out", "-o", help="runs.parquet or runs.csv")],
    tracking_uri: Annotated[
        str | None, typer.Option(envvar="MLFLOW_TRACKING_URI", help="MLflow store (default: the spec's)")
    ] = None,
) -> None:
    """Write the sweep's trials as a tidy table (one row per trial and axis, numeric columns)."""
    from orchestrator.results import SweepNotFound, load_sweep_trials

    try:
        name, uri = resolve_sweep(sweep, tracking_uri)
        frame = load_sweep_trials(uri, name)
    except (ConfigError, OSError, SweepNotFound) as err:
        raise _fail(err) from None
    if out.suffix == ".parquet":
        frame.to_parquet(out, index=False)
    elif out.suffix == ".csv":
        frame.to_csv(out, index=False)
    else:
        raise _fail(ValueError(f"--out must end in .parquet or .csv, got {out.name!r}"))
    typer.echo(f"{len(frame)} rows -> {out}")


def resolve_sweep(sweep: str, tracking_uri: str | None) -> tuple[str, str]:
    """(sweep name, tracking URI) from a spec path or a bare sweep name."""
    from orchestrator.tracking import resolve_tracking_uri

    if sweep.endswith((".yaml", ".yml")) or Path(sweep).is_file():
        spec = load_spec(sweep)
        return spec.name, tracking_uri or resolve_tracking_uri(spec.output_dir)
    return sweep, tracking_uri or resolve_tracking_uri("outputs")
