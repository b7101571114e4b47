"""`ebtscale demo`: the README's main job, end to end on the embedded defaults."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from orchestrator import SOURCE_ROOT
from orchestrator.cli.common import console, fail, print_status, print_tuning
from orchestrator.cli.report import run_report
from orchestrator.cli.think import run_thinking
from orchestrator.config import ConfigError

DEMO_SPEC = Path("sweeps") / "demo.yaml"


def demo(
    spec: Annotated[
        Path | None, typer.Option(help="the sweep to run [default: sweeps/demo.yaml]", show_default=False)
    ] = None,
) -> None:
    """The README's main job: the tuning stage of its spec's tune: block (sweeps/demo.yaml has one), a small
    real sweep of both families on the chosen values, System-2 curves, and the report, whose first screen
    (a line per axis and one for System-2) it prints last. `make study` runs it on sweeps/study.yaml.

    Offline, on the embedded defaults: local Ray, DeepSpeed on CPU, MLflow in outputs/mlflow.db."""
    from orchestrator.sweep.runner import run_sweep
    from orchestrator.sweep.spec import load_spec

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if spec is None:  # the checkout's demo, also when run from another folder
        spec = DEMO_SPEC if DEMO_SPEC.is_file() else SOURCE_ROOT / DEMO_SPEC
    try:
        sweep = load_spec(spec)
        if sweep.tune is not None:
            from orchestrator.sweep.tuning import run_tuning

            outcome = run_tuning(sweep)
            print_tuning(sweep.name, outcome)
            if not outcome["complete"]:
                raise ConfigError(f"sweep {sweep.name}: the tuning stage found no finished trial for a size")
        statuses = run_sweep(sweep)
    except (ConfigError, OSError) as err:
        raise fail(err) from None
    print_status(sweep.name, statuses)
    if not all(s["status"].final for s in statuses.values()):
        console.print("[yellow]some trials did not finish; the report covers the ones that did[/]")
    run_thinking(spec)
    run_report(str(spec))
