"""`ebtscale`: the command line. Thin: parse, validate at the edge, call into the orchestrator/analysis."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml
from rich.console import Console

from orchestrator.config import ConfigError, TrialConfig, load_trial_config, yaml_load

app = typer.Typer(
    name="ebtscale",
    help="Scaling studies of Energy-Based Transformers vs Transformer++ on Ray, DeepSpeed and MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

from orchestrator.sweep_cli import sweep_app  # noqa: E402 - after `app`, so the module order reads top-down

app.add_typer(sweep_app, name="sweep")

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config field, e.g. --set model.d_model=128 (repeatable)."),
]
OutputOption = Annotated[
    Path | None, typer.Option("--output-dir", "-o", help="Where trials, checkpoints and mlflow.db go.")
]
TrackingOption = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        envvar="MLFLOW_TRACKING_URI",
        help="MLflow store (default: sqlite:///<output-dir>/mlflow.db).",
    ),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print a one-line (or short) error and return the Exit to raise: no traceback for user errors."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)  # no wrap at 80 columns
    return typer.Exit(code)


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """['a.b=1', 'c=x'] -> {'a': {'b': 1}, 'c': 'x'}; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        node = out
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        try:
            node[leaf] = yaml_load(raw)
        except yaml.YAMLError as err:  # e.g. a python/object tag: refused by the safe loader
            raise ConfigError(f"--set {key.strip()}: not valid YAML: {' '.join(str(err).split())}") from None
    return out


def load_config_or_exit(path: Path, overrides: list[str] | None, output_dir: Path | None) -> TrialConfig:
    try:
        extra = parse_overrides(overrides)
        if output_dir is not None:
            extra["output_dir"] = str(output_dir)
        return load_trial_config(path, extra)
    except ConfigError as err:
        raise fail(str(err)) from None


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Trial config YAML (see sweeps/trials/).")],
    set_: SetOption = None,
    output_dir: OutputOption = None,
    tracking_uri: TrackingOption = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment name.")] = "ebtscale-trials",
    no_track: Annotated[bool, typer.Option("--no-track", help="Do not log to MLflow.")] = False,
) -> None:
    """Train one trial (Transformer++ or EBT) under DeepSpeed, resuming from its last checkpoint."""
    cfg = load_config_or_exit(config, set_, output_dir)
    from model.data import DataError
    from orchestrator.tracking import resolve_tracking_uri
    from orchestrator.trainer import TrackingContext, launch_trial

    tracking = None
    if not no_track:
        uri = tracking_uri or resolve_tracking_uri(cfg.output_dir)
        tracking = TrackingContext(uri=uri, experiment=experiment, tags={"ebtscale.family": cfg.model.family})
    try:
        result = launch_trial(cfg, tracking=tracking, progress=True)
    except (ConfigError, DataError) as err:
        raise fail(str(err)) from None
    console.print(
        f"[bold]{cfg.name}[/]: {result.status}"
        + (f" ({result.reason})" if result.reason else "")
        + f" - {result.steps} steps, {result.tokens:,} tokens"
        + (f", val loss {result.final_val_loss:.4f}" if result.final_val_loss is not None else "")
    )
    if tracking is not None:
        console.print(f"MLflow: {tracking.uri}  experiment '{experiment}'  run {result.run_id}")
        console.print(f"  view: mlflow ui --backend-store-uri {tracking.uri} --host 127.0.0.1")
    if result.status != "finished":
        raise typer.Exit(1)


@app.command()
def think(
    target: Annotated[Path, typer.Argument(help="a finished EBT trial folder, or a sweep spec YAML")],
    baseline: Annotated[
        Path | None, typer.Option(help="a finished Transformer++ trial folder (with a spec: the EBT's twin)")
    ] = None,
    steps: Annotated[int, typer.Option(help="thinking steps: the curve goes 1..STEPS")] = 6,
    candidates: Annotated[str, typer.Option(help="self-verification candidate counts, e.g. 1,2,4")] = "1,2,4",
    batches: Annotated[int, typer.Option(help="validation batches of 8 windows")] = 4,
    no_track: Annotated[bool, typer.Option("--no-track", help="do not log the curves to MLflow")] = False,
) -> None:
    """System-2 thinking of a trained EBT: loss vs thinking steps and self-verification candidates.

    The Transformer++ twin is measured at equal forward passes; curves are logged to MLflow for the report."""
    from rich.table import Table

    from orchestrator.think import evaluate_thinking, log_thinking

    try:
        counts = tuple(int(c) for c in candidates.split(","))
        ebt_dir, base_dir, runs, uri = _think_targets(target, baseline)
        rows = evaluate_thinking(ebt_dir, base_dir, max_steps=steps, candidates=counts, batches=batches)
    except (ConfigError, ValueError, OSError) as err:
        raise fail(str(err)) from None
    table = Table(title=f"System-2 thinking: {ebt_dir.name}")
    for col in ("family", "mode", "steps", "candidates", "forward passes", "val loss", "val ppl"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["family"], r["mode"], str(r["steps"]), str(r["candidates"]), str(r["forward_passes"]),
            f"{r['val_loss']:.4f}", f"{r['val_perplexity']:.2f}",
        )  # fmt: skip
    Console().print(table)
    if not no_track and runs:
        log_thinking(rows, uri, runs)
        console.print(f"logged to MLflow runs {', '.join(runs)} ({uri})")


def _think_targets(target: Path, baseline: Path | None) -> tuple[Path, Path | None, list[str], str]:
    """(EBT trial dir, baseline dir, MLflow run ids to log to, tracking uri) for a trial folder or a spec:
    with a spec, the largest finished EBT trial and its Transformer++ twin (same name after the family)."""
    import json

    from orchestrator.tracking import resolve_tracking_uri

    if target.is_dir():
        run_file = target / "run.json"
        runs = [json.loads(run_file.read_text())["run_id"]] if run_file.is_file() else []
        uri = resolve_tracking_uri(target.parent.parent.parent)
        return target, baseline, runs, os.environ.get("MLFLOW_TRACKING_URI", uri)
    from orchestrator.spec import expand, load_spec
    from orchestrator.sweep_runner import SweepLayout, trial_units, unit_status

    spec = load_spec(target)
    layout = SweepLayout(spec)
    done = [u for u in trial_units(expand(spec)) if unit_status(layout, u)["status"] == "finished"]
    ebts = sorted((u for u in done if u.family == "ebt"), key=lambda u: (u.config.total_steps, u.name))
    if not ebts:
        raise ConfigError(f"sweep {spec.name!r} has no finished EBT trial (run `ebtscale sweep run` first)")
    ebt = ebts[-1]
    shape = ebt.name.split("-", 1)[1]  # the name after the family: same size, data and seed
    twin = next((u for u in done if u.family != "ebt" and u.name.split("-", 1)[1] == shape), None)
    base_dir = baseline or (layout.trial_dir(twin) if twin else None)
    parent = json.loads((layout.root / "sweep.json").read_text())["parent_run_id"]
    run = json.loads((layout.trial_dir(ebt) / "run.json").read_text())["run_id"]
    return layout.trial_dir(ebt), base_dir, [run, parent], layout.tracking_uri


@app.command()
def report(
    sweep: Annotated[str, typer.Argument(help="a sweep spec YAML, or a sweep name in the MLflow store")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="report folder")] = None,
    tracking_uri: TrackingOption = None,
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples for the confidence intervals")] = 1000,
    y: Annotated[str, typer.Option(help="the measured quantity to fit")] = "val_loss",
) -> None:
    """Write the scaling-law report of a sweep (HTML + Markdown + PNGs), also logged to MLflow.

    Per axis: power-law fits with bootstrap CIs, EBT vs Transformer++ scaling-rate verdicts, plots; plus the
    System-2 thinking curves and the excluded trials."""
    from analysis import write_report
    from orchestrator.report import provenance_of, publish_report
    from orchestrator.results import SweepNotFound, load_sweep_trials, load_thinking_curves
    from orchestrator.sweep_cli import resolve_sweep

    try:
        name, uri = resolve_sweep(sweep, tracking_uri)
        trials = load_sweep_trials(uri, name)
        thinking = load_thinking_curves(uri, name)
        out_dir = out or _default_report_dir(sweep, name)
        provenance = provenance_of(uri, name, sweep)
        paths = write_report(trials, out_dir, provenance, thinking, y=y, bootstrap=bootstrap)
        publish_report(uri, name, paths)
    except (ConfigError, OSError, SweepNotFound, ValueError) as err:
        raise fail(str(err)) from None
    console.print(f"report: {paths['html']}")
    console.print(f"        {paths['markdown']}")


def _default_report_dir(sweep: str, name: str) -> Path:
    if sweep.endswith((".yaml", ".yml")):
        from orchestrator.spec import load_spec

        return Path(load_spec(sweep).output_dir) / name / "report"
    return Path("outputs") / name / "report"


@app.command()
def demo(
    spec: Annotated[Path, typer.Option(help="the sweep to run")] = Path("sweeps/demo.yaml"),
) -> None:
    """The README's main job: a small real sweep of both families, System-2 curves, and the report.

    Offline, on the embedded defaults: local Ray, DeepSpeed on CPU, MLflow in outputs/mlflow.db."""
    from orchestrator.sweep_cli import run_command

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not spec.is_file():
        spec = Path(__file__).resolve().parent.parent / "sweeps" / "demo.yaml"
    try:
        run_command(spec, address=None, max_failures=2, max_concurrent=None, max_flops=None, max_trials=None)
    except typer.Exit as done:
        if done.exit_code:
            console.print("[yellow]some trials did not finish; the report covers the ones that did[/]")
    think(spec, baseline=None, steps=6, candidates="1,2,4", batches=4, no_track=False)
    report(str(spec), out=None, tracking_uri=None, bootstrap=1000, y="val_loss")


from analysis.cli import fit_command  # noqa: E402 - mounted here so `ebtscale fit` sits with the others

app.command("fit", help="Fit a scaling law to any table (CSV/parquet) with bootstrap CIs.")(fit_command)

from orchestrator.jobs import jobs_app, submit_command  # noqa: E402

app.command("submit")(submit_command)
app.add_typer(jobs_app, name="jobs")


def main() -> None:
    """The `ebtscale` command. It exits as Python does, minus the final clean-up: non-daemon threads are
    joined and every atexit handler runs (Ray's shutdown, MLflow's, logging's flush), then the process ends
    without tearing down its modules one by one. With Ray and MLflow loaded that teardown took ~1.2 s of
    every command and frees nothing the OS does not (benchmarks/NOTES.md). Other exceptions propagate."""
    try:
        app()
    except SystemExit as stop:
        _exit_without_teardown(stop)


def _exit_without_teardown(stop: SystemExit) -> NoReturn:
    join_threads = getattr(threading, "_shutdown", None)  # what the interpreter calls first at exit
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)  # and second
    if join_threads is None or run_exit_handlers is None:  # a Python without them: the usual exit
        raise stop
    code = stop.code
    if code is not None and not isinstance(code, int):  # sys.exit("message"): printed, status 1
        print(code, file=sys.stderr)
        code = 1
    join_threads()
    run_exit_handlers()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    main()
