"""`ebtscale`: the command line. Thin: parse, validate at the edge, call into the orchestrator/analysis."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from orchestrator.config import ConfigError, TrialConfig, load_trial_config

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
    console.print(f"[bold red]error:[/] {message}")
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
        node[leaf] = yaml.safe_load(raw)
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
def demo(
    output_dir: Annotated[Path, typer.Option("--output-dir", "-o")] = Path("outputs/demo"),
) -> None:
    """The README's main job: a small real run on the embedded defaults, offline."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    root = Path(__file__).resolve().parent.parent
    train(root / "sweeps" / "trials" / "tiny-transformer-pp.yaml", output_dir=output_dir)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
