"""What every `ebtscale` command shares: the error exit, the options several commands take, and the tables
they print."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

console = Console(stderr=True)

SpecArg = Annotated[Path, typer.Argument(help="sweep spec YAML (see docs/sweeps.md)", show_default=False)]
TrackingOption = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        envvar="MLFLOW_TRACKING_URI",
        help="MLflow store (default: sqlite:///<output-dir>/mlflow.db).",
    ),
]


def fail(err: BaseException | str, code: int = 2) -> typer.Exit:
    """Print `error: <message>` on stderr and return the Exit to raise: a user error gets no traceback,
    whatever raised it. A message of several problems keeps one line each; white space within a line is
    folded."""
    lines = [" ".join(line.split()) for line in str(err).splitlines()]
    message = "\n  ".join(line for line in lines if line) or type(err).__name__
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def print_status(sweep: str, statuses: dict[str, dict[str, Any]]) -> None:
    """One row per trial: name, id, status, progress or val loss, reason."""
    from rich.table import Table

    table = Table(title=f"sweep {sweep}")
    for col in ("trial", "id", "status", "progress / val loss", "reason"):
        table.add_column(col)
    for trial_id, st in statuses.items():
        detail = f"{st['val_loss']:.4f}" if st.get("val_loss") is not None else ""
        if "step" in st:
            detail = f"step {st['step']}/{st['total']}"
        table.add_row(st["name"], trial_id, str(st["status"]), detail, st.get("reason", ""))
    Console(width=max(120, Console().width)).print(table)


def print_tuning(sweep: str, outcome: dict[str, Any]) -> None:
    """One row per family and size of a tuning stage: trials by outcome, the chosen values, edge warnings."""
    from rich.table import Table

    from orchestrator.sweep.tune_space import knob_label

    table = Table(title=f"sweep {sweep}: tuning" + ("" if outcome["complete"] else " (incomplete)"))
    for col in ("family", "size", "trials", "chosen", "val loss", "warning"):
        table.add_column(col)
    for size in outcome["sizes"].values():
        chosen = size["chosen"]
        counts = ", ".join(f"{n} {status}" for status, n in size["counts"].items())
        edges = "; ".join(f"{e['knob']} at the {e['side']} edge of its range" for e in size["edges"])
        table.add_row(
            size["family"],
            f"d{size['d_model']} L{size['n_layers']}",
            counts,
            knob_label(chosen["values"]) if chosen else "none finished",
            f"{chosen['val_loss']:.4f}" if chosen else "",
            edges,
        )
    Console(width=max(120, Console().width)).print(table)
