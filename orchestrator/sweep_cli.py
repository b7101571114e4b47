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
    help="Scaling sweeps: validate a sweep spec (YAML) and show its dry-run plan.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@sweep_app.callback()
def _sweep() -> None:
    """Scaling sweeps: validate a sweep spec (YAML) and show its dry-run plan."""


def _fail(err: BaseException) -> typer.Exit:
    message = " ".join(str(err).split())  # one line, whatever the source
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


@sweep_app.command("plan")
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
    """Validate SPEC, expand it into trials and print the plan: N, D, FLOPs, steps, memory and time per trial,
    with totals. Nothing is trained. Exit code 2 on an invalid spec or an exceeded cap."""
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
