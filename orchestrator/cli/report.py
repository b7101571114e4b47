"""`ebtscale report`: the scaling-law report of a sweep (the logic: sweep/report.py, `build_report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from analysis.options import DEFAULT_OPTIONS, AnalysisOptions
from orchestrator.cli.common import TrackingOption, console, fail
from orchestrator.config import ConfigError


def report(
    sweep: Annotated[str, typer.Argument(help="a sweep spec YAML, or a sweep name in the MLflow store")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="report folder")] = None,
    tracking_uri: TrackingOption = None,
    bootstrap: Annotated[
        int, typer.Option(help="bootstrap resamples for the confidence intervals")
    ] = DEFAULT_OPTIONS.bootstrap,
    y: Annotated[str, typer.Option(help="the measured quantity to fit")] = DEFAULT_OPTIONS.y,
) -> None:
    """Write the scaling-law report of a sweep (HTML + Markdown + PNGs), also logged to MLflow.

    Per axis: power-law fits with bootstrap CIs, EBT vs Transformer++ scaling-rate verdicts, plots; plus the
    System-2 thinking curves and the excluded trials."""
    run_report(sweep, out, tracking_uri, AnalysisOptions(y=y, bootstrap=bootstrap))


def run_report(
    sweep: str,
    out: Path | None = None,
    tracking_uri: str | None = None,
    options: AnalysisOptions = DEFAULT_OPTIONS,
) -> None:
    """Build and publish the report, then print its first screen and paths (what `report` and `demo`
    share: the demo's last lines are the answer)."""
    from orchestrator.sweep.report import build_report, read_summary
    from orchestrator.sweep.results import SweepNotFound

    try:
        paths = build_report(sweep, out, tracking_uri, options)
    except (ConfigError, OSError, SweepNotFound, ValueError) as err:
        raise fail(err) from None
    for line in read_summary(paths).get("first_screen", []):  # the answer first: a line per axis, System-2
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(f"report: {paths['html']}")
    console.print(f"        {paths['markdown']}")
