"""`ebtscale think`: System-2 curves of a trained EBT (the logic: thinking/evaluate.py, `think`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from model.data import SHIPPED_OOD, EvalTextConfig
from orchestrator.cli.common import console, fail
from orchestrator.config import ConfigError


def think(
    target: Annotated[Path, typer.Argument(help="a finished EBT trial folder, or a sweep spec YAML")],
    baseline: Annotated[
        Path | None, typer.Option(help="a finished Transformer++ trial folder (with a spec: the EBT's twin)")
    ] = None,
    steps: Annotated[int, typer.Option(help="thinking steps: the curve goes 1..STEPS")] = 6,
    candidates: Annotated[str, typer.Option(help="self-verification candidate counts, e.g. 1,2,4")] = "1,2,4",
    batches: Annotated[int, typer.Option(help="batches of 8 windows, per split")] = 4,
    ood: Annotated[
        str,
        typer.Option(
            help="out-of-distribution text: 'prose' (shipped, offline), a .txt/.jsonl/.parquet file or "
            "folder, 'hf:NAME[:CONFIG]' (a hub dataset, online), or 'none'"
        ),
    ] = "prose",
    ood_split: Annotated[str, typer.Option(help="the hub dataset's split (hf: sources)")] = "test",
    ood_text_field: Annotated[str, typer.Option(help="the text field of .jsonl/.parquet/hub rows")] = "text",
    ood_max_documents: Annotated[
        int | None, typer.Option(help="read at most this many OOD documents (required for hf: sources)")
    ] = None,
    no_track: Annotated[bool, typer.Option("--no-track", help="do not log the curves to MLflow")] = False,
) -> None:
    """System-2 thinking of a trained EBT: loss vs thinking steps and self-verification candidates, on the
    validation split and on out-of-distribution text.

    The Transformer++ twin is measured at equal forward passes; curves are logged to MLflow for the report."""
    from pydantic import ValidationError

    try:
        counts = tuple(int(c) for c in candidates.split(","))
        text = None
        if ood.lower() != "none":
            fields = {"source": ood, "split": ood_split, "text_field": ood_text_field}
            text = EvalTextConfig(**fields, max_documents=ood_max_documents)
    except (ValueError, ValidationError) as err:
        raise fail(err) from None
    run_thinking(target, baseline, steps, counts, batches, track=not no_track, ood=text)


def run_thinking(
    target: Path,
    baseline: Path | None = None,
    steps: int = 6,
    candidates: tuple[int, ...] = (1, 2, 4),
    batches: int = 4,
    track: bool = True,
    ood: EvalTextConfig | None = SHIPPED_OOD,
) -> None:
    """Evaluate, log and print (what `think` and `demo` share)."""
    from orchestrator.thinking.evaluate import think as think_curves

    try:
        targets, rows = think_curves(target, baseline, steps, candidates, batches, track=track, ood=ood)
    except (ConfigError, ValueError, OSError) as err:
        raise fail(err) from None
    print_thinking(targets.ebt.name, rows)
    if track and targets.run_ids:
        console.print(f"logged to MLflow runs {', '.join(targets.run_ids)} ({targets.tracking_uri})")


def print_thinking(trial: str, rows: list[dict]) -> None:
    from rich.table import Table

    table = Table(title=f"System-2 thinking: {trial}")
    for col in ("split", "family", "mode", "steps", "candidates", "forward passes", "loss", "perplexity"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            f"{r['split']} ({r['source']})", r["family"], r["mode"], str(r["steps"]), str(r["candidates"]),
            str(r["forward_passes"]), f"{r['val_loss']:.4f}", f"{r['val_perplexity']:.2f}",
        )  # fmt: skip
    Console().print(table)
