"""`ebtscale train`: one trial under DeepSpeed (the logic: train/trainer.py, `launch_trial`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from orchestrator.cli.common import TrackingOption, console, fail
from orchestrator.config import (
    ConfigError,
    TrialConfig,
    TrialMismatch,
    check_same_trial,
    load_trial_config,
    yaml_load,
)
from orchestrator.trial_dir import TrialStatus

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config field, e.g. --set model.d_model=128 (repeatable)."),
]
OutputOption = Annotated[
    Path | None, typer.Option("--output-dir", "-o", help="Where trials, checkpoints and mlflow.db go.")
]


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


def load_config(path: Path, overrides: list[str] | None, output_dir: Path | None) -> TrialConfig:
    """The trial config of `ebtscale train`: the YAML, then `--set`, then `--output-dir`."""
    extra = parse_overrides(overrides)
    if output_dir is not None:
        extra["output_dir"] = str(output_dir)
    return load_trial_config(path, extra)


def train(
    config: Annotated[Path, typer.Argument(help="Trial config YAML (see sweeps/trials/).")],
    set_: SetOption = None,
    output_dir: OutputOption = None,
    tracking_uri: TrackingOption = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment name.")] = "ebtscale-trials",
    no_track: Annotated[bool, typer.Option("--no-track", help="Do not log to MLflow.")] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="The trial's folder holds a trial of this name with another config: move that folder aside "
            "(kept as <name>.replaced-<time>) and train this one into a new run.",
        ),
    ] = False,
) -> None:
    """Train one trial (Transformer++ or EBT) under DeepSpeed, resuming from its last checkpoint."""
    try:
        cfg = load_config(config, set_, output_dir)
        if force:
            set_aside_other_trial(cfg)
    except (ConfigError, OSError) as err:
        raise fail(err) from None
    from model.data import DataError
    from orchestrator import tags
    from orchestrator.tracking import resolve_tracking_uri
    from orchestrator.train.trainer import TrackingContext, launch_trial

    tracking = None
    if not no_track:
        uri = tracking_uri or resolve_tracking_uri(cfg.output_dir)
        tracking = TrackingContext(uri=uri, experiment=experiment, tags={tags.FAMILY: cfg.model.family})
    try:
        result = launch_trial(cfg, tracking=tracking, progress=True)
    except (ConfigError, DataError) as err:
        raise fail(err) from None
    console.print(
        f"[bold]{cfg.name}[/]: {result.status}"
        + (f" ({result.reason})" if result.reason else "")
        + f" - {result.steps} steps, {result.tokens:,} tokens"
        + (f", val loss {result.final_val_loss:.4f}" if result.final_val_loss is not None else "")
    )
    if tracking is not None:
        console.print(f"MLflow: {tracking.uri}  experiment '{experiment}'  run {result.run_id}")
        console.print(f"  view: mlflow ui --backend-store-uri {tracking.uri} --host 127.0.0.1")
    if result.status != TrialStatus.FINISHED:
        raise typer.Exit(1)


def set_aside_other_trial(cfg: TrialConfig) -> None:
    """--force: a folder holding this name's trial with another config is renamed, never overwritten."""
    try:
        check_same_trial(cfg)
    except TrialMismatch:
        folder = cfg.folder.path
        kept = folder.with_name(f"{folder.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        folder.rename(kept)
        console.print(f"kept the other trial's folder as {kept}")
