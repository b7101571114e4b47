"""System-2 evaluation of trained trials: load their final weights, run the thinking curves of
model/thinking.py on validation windows, log them to MLflow (the trial's run, and the sweep's parent run
as `thinking.json`, where the report finds them)."""

from __future__ import annotations

import json
import pickle
import tempfile
from pathlib import Path

import torch
import yaml
from torch import nn

from model import build_model
from model.data import prepare_dataset
from model.thinking import thinking_curves
from orchestrator.config import ConfigError, TrialConfig, parse_trial_config


def load_trained(trial_dir: Path) -> tuple[TrialConfig, nn.Module]:
    """A finished trial's config and model with its final weights (safe load: tensors only)."""
    weights = trial_dir / "model.pt"
    if not weights.is_file():
        raise ConfigError(f"{trial_dir}: no model.pt (is the trial finished?)")
    cfg = parse_trial_config(yaml.safe_load((trial_dir / "config.yaml").read_text()), str(trial_dir))
    model = build_model(cfg.model)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # anything but tensors (e.g. a pickled object): refused, not run
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()] or [type(err).__name__]
        reason = next((ln for ln in lines if "GLOBAL" in ln or "nsupported" in ln), lines[0])[:300]
        raise ConfigError(f"{weights}: refused: not a plain tensor state dict ({reason})") from None
    model.load_state_dict(state)
    return cfg, model.eval()


def evaluate_thinking(
    ebt_dir: Path,
    baseline_dir: Path | None = None,
    max_steps: int = 6,
    candidates: tuple[int, ...] = (1, 2, 4),
    batches: int = 4,
    batch_size: int = 8,
    seed: int = 0,
) -> list[dict]:
    """Thinking-steps and self-verification rows (analysis schema) on fixed validation windows."""
    cfg, ebt = load_trained(ebt_dir)
    if cfg.model.family != "ebt":
        raise ConfigError(f"{ebt_dir} is a {cfg.model.family} trial, not an EBT")
    baseline = load_trained(baseline_dir)[1] if baseline_dir is not None else None
    data = prepare_dataset(cfg.data, cfg.model.context_length, quiet=True)
    indices = data.val_indices(batches * batch_size)
    windows = [data.windows("val", indices[i : i + batch_size]) for i in range(0, len(indices), batch_size)]
    torch.manual_seed(seed)  # the initial candidates' noise: the same curves on every run
    return thinking_curves(ebt, windows, max_steps=max_steps, candidates=candidates, baseline=baseline)


def log_thinking(rows: list[dict], uri: str, run_ids: list[str]) -> None:
    """Curves as metrics on the EBT trial's run (step = forward passes) and as `thinking.json` on each run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "thinking.json"
        path.write_text(json.dumps(rows, indent=1))
        for run_id in run_ids:
            client.log_artifact(run_id, str(path))
    for row in rows:
        if row["family"] == "ebt":
            name = f"think_{row['mode']}_val_loss"
            client.log_metric(run_ids[0], name, row["val_loss"], step=row["forward_passes"])
