"""`ebtscale sweep ...`: commands on sweep specs. The logic lives in sweep/ (spec, plan, runner, results);
this file only parses arguments and turns errors into one line on stderr with exit code 2 (never a
traceback)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from orchestrator.cli.common import SpecArg, fail, print_status, print_tuning
from orchestrator.config import ConfigError
from orchestrator.sweep.expand import TuningState, expand
from orchestrator.sweep.plan import check_budget, plan, render_plan
from orchestrator.sweep.power import power_section, print_power
from orchestrator.sweep.spec import load_spec

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


_PLAN_HELP = (
    "Validate SPEC and print its dry-run plan; nothing is trained. "
    "Per trial: parameters N, tokens D, FLOPs, steps, batch, memory per worker, estimated time and the "
    "values it takes from the tuning stage; then totals, where a trial shared by several axes counts once. "
    "With --tuning: the plan of a tune: block's tuning trials instead. "
    "Exit code 2 on an invalid spec or an exceeded cap."
)
ForceOption = Annotated[
    bool,
    typer.Option(
        "--force", help="start even a trial whose planned memory per worker exceeds what a worker can get"
    ),
]
AddressOption = Annotated[
    str | None,
    typer.Option("--address", envvar="RAY_ADDRESS", help="Ray cluster to join (default: embedded local Ray)"),
]
LauncherOption = Annotated[
    str,
    typer.Option(
        help="auto: single-worker trials train in their (reused) Tune actor, multi-worker trials under a "
        "Ray Train TorchTrainer; ray_train: a TorchTrainer for every trial"
    ),
]


@sweep_app.command("plan", help=_PLAN_HELP, short_help="Validate a sweep spec and print its dry-run plan.")
def plan_command(
    spec: SpecArg,
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
    tuning: Annotated[
        bool, typer.Option("--tuning", help="plan the tuning stage's trials instead of the sweep's")
    ] = False,
    wide: Annotated[bool, typer.Option("--wide", help="every column, whatever the terminal's width")] = False,
    power: Annotated[
        bool,
        typer.Option(
            "--power/--no-power",
            help="per axis, the verdict's expected interval width, power and smallest detectable difference, "
            "simulated with the report's fitting code (a few seconds per axis)",
        ),
    ] = True,
    effect: Annotated[
        float | None,
        typer.Option(
            "--effect",
            help="the relative EBT-vs-Transformer++ exponent difference to compute power for, e.g. 0.35 "
            "(default: the paper's number per axis, where one is verified)",
        ),
    ] = None,
) -> None:
    """Validate SPEC and print its dry-run plan (help text: _PLAN_HELP)."""
    note = ""
    try:
        sweep = load_spec(spec)
        if tuning:
            from orchestrator.sweep.tuning import plan_searches

            if sweep.tune is None:
                raise ConfigError(f"{spec}: no tune: block, so no tuning stage to plan")
            trials = [t for search in plan_searches(sweep) for t in search.trials]
        else:
            trials = expand(sweep)
            if trials.tuning is not None:
                note = _tuning_note(trials.tuning)
        result = plan(trials, throughput_flops=throughput)
        if note:
            result.notes.append(note)
    except (ConfigError, OSError, ImportError) as err:
        raise fail(err) from None
    powers, inputs = ([], None) if tuning or not power else power_section(sweep, result, effect)
    if as_json:
        out = result.to_dict()
        if inputs is not None:
            out["power"] = {"inputs": asdict(inputs), "axes": [d.to_dict() for d in powers]}
        typer.echo(json.dumps(out, indent=2))
    else:
        console = Console()
        if wide or not console.is_terminal:  # every column; pipes and test runners are not squeezed
            console = Console(width=max(console.width, 400))
            console.print(render_plan(result))
        else:  # the columns that fit, no number cut: the caption names those left out
            console.print(render_plan(result, width=console.width))
        if inputs is not None:
            print_power(console, powers, inputs)
    try:
        check_budget(result, max_flops=max_flops, max_trials=max_trials)
    except ConfigError as err:
        raise fail(err) from None


def _tuning_note(state: TuningState) -> str:
    if state.status == "complete":
        return "the 'tuned' column: values from the tuning stage (tuned at that size, or carried to it)"
    why = "has not run" if state.status == "missing" else "is stale (its tune: block or base changed)"
    return f"the tuning stage {why}: trials show the spec's own values; run `ebtscale sweep tune` first"


@sweep_app.command("tune")
def tune_command(
    spec: SpecArg,
    address: AddressOption = None,
    max_failures: Annotated[int, typer.Option(help="retries per tuning trial after a crash")] = 2,
    max_concurrent: Annotated[
        int | None,
        typer.Option(help="trials at once (default: the spec's tune.max_concurrent, else as many as fit)"),
    ] = None,
    launcher: LauncherOption = "auto",
    force: ForceOption = False,
) -> None:
    """Run SPEC's tuning stage: per family and model size, a Ray Tune search over its tune: space with ASHA
    early stopping on validation loss, on the sweep's trainer, Ray and MLflow store (runs tagged
    ebtscale.stage=tuning under the sweep's parent run). The choice and its evidence go to
    <output_dir>/<sweep>/tuning.json, which `sweep plan` and `sweep run` then use.

    Safe to re-run: finished and early-stopped trials are not trained again, interrupted ones resume."""
    from orchestrator.sweep.tuning import run_tuning

    try:
        sweep = load_spec(spec)
        outcome = run_tuning(
            sweep,
            address=address,
            max_failures=max_failures,
            max_concurrent=max_concurrent,
            launcher=launcher,
            force=force,
        )
    except (ConfigError, OSError) as err:
        raise fail(err) from None
    print_tuning(sweep.name, outcome)
    if not outcome["complete"]:
        raise typer.Exit(1)


@sweep_app.command("run")
def run_command(
    spec: SpecArg,
    address: AddressOption = None,
    max_failures: Annotated[int, typer.Option(help="retries per trial after a crash")] = 2,
    max_concurrent: Annotated[
        int | None, typer.Option(help="trials at once (default: as many as the cluster's resources fit)")
    ] = None,
    max_flops: Annotated[float | None, typer.Option("--max-flops", help="refuse a sweep over this")] = None,
    max_trials: Annotated[int | None, typer.Option("--max-trials", help="refuse more trials")] = None,
    launcher: LauncherOption = "auto",
    dashboard: Annotated[
        bool,
        typer.Option(
            "--dashboard",
            help="start the embedded Ray's dashboard even when no trial needs it (trials under Ray Train do)",
        ),
    ] = False,
    untuned: Annotated[
        bool,
        typer.Option("--untuned", help="a spec with a tune: block: train its own values, without tuning"),
    ] = False,
    force: ForceOption = False,
) -> None:
    """Train every trial of SPEC on Ray Tune, tracked in MLflow (multi-worker trials under Ray Train).

    Safe to re-run: finished trials are skipped, interrupted ones resume from their last checkpoint, and
    no MLflow run is ever duplicated."""
    from orchestrator.sweep.runner import run_sweep

    try:
        sweep = load_spec(spec)
        statuses = run_sweep(
            sweep,
            address=address,
            max_failures=max_failures,
            max_concurrent=max_concurrent,
            launcher=launcher,
            dashboard=dashboard,
            max_flops=max_flops,
            max_trials=max_trials,
            untuned=untuned,
            force=force,
        )
    except (ConfigError, OSError) as err:
        raise fail(err) from None
    print_status(sweep.name, statuses)
    if not all(s["status"].final for s in statuses.values()):
        raise typer.Exit(1)


@sweep_app.command("extend")
def extend_command(
    spec: SpecArg,
    target_width: Annotated[
        float | None,
        typer.Option(
            "--target-width",
            help="stop once the 95% interval of EBT's relative scaling-rate difference is this wide "
            "(0.2: about ±10%); default: the spec's adaptive.target_width, else only the budget stops it",
        ),
    ] = None,
    budget_flops: Annotated[
        float | None,
        typer.Option(
            "--budget-flops", help="training FLOPs all rounds together may add (or adaptive.budget_flops)"
        ),
    ] = None,
    axis: Annotated[
        str | None, typer.Option(help="data or batch (default: adaptive.axis, else data when present)")
    ] = None,
    batch: Annotated[int | None, typer.Option(help="trials per round (default: adaptive.batch, 4)")] = None,
    address: AddressOption = None,
    max_failures: Annotated[int, typer.Option(help="retries per trial after a crash")] = 2,
    launcher: LauncherOption = "auto",
) -> None:
    """Adaptive rounds on one axis of SPEC after it has run: each round fits the finished trials as the report
    does, adds the trials that narrow the EBT vs Transformer++ verdict's interval most per training FLOP
    (new axis values within the adaptive range, or another seed, for either family), trains them on Ray
    through a Tune Searcher, and refits. Stops at the target width, at the FLOP budget, or when no candidate
    helps, and says which. Rounds are kept in <output_dir>/<sweep>/extend.json and on the sweep's MLflow
    run; safe to re-run after a kill: an unfinished round resumes and nothing is trained twice."""
    from orchestrator.sweep.extend import ExtendSettings, run_extend

    try:
        sweep = load_spec(spec)
        settings = ExtendSettings.of(
            sweep, axis=axis, target_width=target_width, budget_flops=budget_flops, batch=batch
        )
        state = run_extend(sweep, settings, address=address, max_failures=max_failures, launcher=launcher)
    except (ConfigError, OSError) as err:
        raise fail(err) from None
    typer.echo(f"{sweep.name}: {len(state.rounds)} round(s) on the {state.axis} axis; stopped: {state.stop}")


@sweep_app.command("status")
def status_command(spec: SpecArg) -> None:
    """Show each trial of SPEC: finished, running, interrupted, pending, failed or diverged."""
    from orchestrator.sweep.runner import sweep_status

    try:
        sweep = load_spec(spec)
        statuses = sweep_status(sweep)
    except (ConfigError, OSError) as err:
        raise fail(err) from None
    print_status(sweep.name, statuses)


@sweep_app.command("repair")
def repair_command(spec: SpecArg) -> None:
    """Make SPEC's MLflow records agree with its trial folders after a crash or an older concurrent run:
    one parent run, one run per trial, no metric step twice, no run left RUNNING or SCHEDULED with an
    outcome. Prints each change; no finished result is lost. Refused while a driver of the sweep runs."""
    from orchestrator.sweep.repair import repair_sweep

    try:
        changes = repair_sweep(load_spec(spec))
    except (ConfigError, OSError) as err:
        raise fail(err) from None
    for line in changes:
        typer.echo(f"  {line}")
    typer.echo(
        f"{len(changes)} change(s)" if changes else "nothing to repair: the store agrees with the folders"
    )


@sweep_app.command("export")
def export_command(
    sweep: Annotated[str, typer.Argument(help="a sweep spec YAML, or a sweep name in the MLflow store")],
    out: Annotated[Path, typer.Option("--out", "-o", help="runs.parquet or runs.csv")],
    tracking_uri: Annotated[
        str | None, typer.Option(envvar="MLFLOW_TRACKING_URI", help="MLflow store (default: the spec's)")
    ] = None,
) -> None:
    """Write the sweep's trials as a tidy table (one row per trial and axis, numeric columns)."""
    from orchestrator.sweep.results import SweepNotFound, load_sweep_trials, resolve_sweep

    try:
        ref = resolve_sweep(sweep, tracking_uri)
        frame = load_sweep_trials(ref.tracking_uri, ref.name)
    except (ConfigError, OSError, SweepNotFound) as err:
        raise fail(err) from None
    if out.suffix == ".parquet":
        frame.to_parquet(out, index=False)
    elif out.suffix == ".csv":
        frame.to_csv(out, index=False)
    else:
        raise fail(ValueError(f"--out must end in .parquet or .csv, got {out.name!r}"))
    typer.echo(f"{len(frame)} rows -> {out}")
