"""System-2 evaluation of trained trials: load their final weights, run the thinking curves of
model/thinking.py on windows of the validation split and of out-of-distribution text (`EvalTextConfig`: by
default the shipped English prose, model/corpora/README.md), log them to MLflow (the trial's run, and the
sweep's parent run as `thinking.json`, where the report finds them). `think` is what `ebtscale think`
calls."""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import nn

from model import build_model
from model.data import SHIPPED_OOD, EvalTextConfig, add_eval_text, prepare_dataset
from model.family_ids import EBT
from model.thinking import thinking_curves
from orchestrator import tags
from orchestrator.config import ConfigError, TrialConfig, parse_trial_config
from orchestrator.tracking import mlflow_client
from orchestrator.trial_dir import TrialDir, TrialStatus


def load_trained(trial_dir: Path) -> tuple[TrialConfig, nn.Module]:
    """A finished trial's config and model with its final weights (safe load: tensors only)."""
    folder = TrialDir(trial_dir)
    weights = folder.weights
    if not weights.is_file():
        raise ConfigError(f"{trial_dir}: no {weights.name} (is the trial finished?)")
    cfg = parse_trial_config(yaml.safe_load(folder.config.read_text()), str(trial_dir))
    model = build_model(cfg.model)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # anything but tensors (e.g. a pickled object): refused, not run
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()] or [type(err).__name__]
        reason = next((ln for ln in lines if "GLOBAL" in ln or "nsupported" in ln), lines[0])[:300]
        raise ConfigError(f"{weights}: refused: not a plain tensor state dict ({reason})") from None
    model.load_state_dict(state)
    return cfg, model.eval()


OOD_SPLIT = "ood"  # the split name of the out-of-distribution rows (the validation rows: "val")


def evaluate_thinking(
    ebt_dir: Path,
    baseline_dir: Path | None = None,
    max_steps: int = 6,
    candidates: tuple[int, ...] = (1, 2, 4),
    batches: int = 4,
    batch_size: int = 8,
    seed: int = 0,
    ood: EvalTextConfig | None = None,
) -> list[dict]:
    """Thinking-steps and self-verification rows (analysis schema) on fixed windows of the validation split
    and, with `ood`, of that text: every row has `split` ("val" or "ood") and `source` (the text it read)."""
    cfg, ebt = load_trained(ebt_dir)
    if cfg.model.family != EBT.name:
        raise ConfigError(f"{ebt_dir} is a {cfg.model.family} trial, not an EBT")
    baseline = load_trained(baseline_dir)[1] if baseline_dir is not None else None
    data = prepare_dataset(cfg.data, cfg.model.context_length, quiet=True)
    splits = {"val": cfg.data.source}
    if ood is not None:
        data = add_eval_text(data, ood, OOD_SPLIT, quiet=True)
        splits[OOD_SPLIT] = ood.source
    rows = []
    for split, source in splits.items():
        indices = data.eval_indices(batches * batch_size, split)
        windows = [
            data.windows(split, indices[i : i + batch_size]) for i in range(0, len(indices), batch_size)
        ]
        torch.manual_seed(seed)  # the initial candidates' noise: the same curves on every run
        curves = thinking_curves(ebt, windows, max_steps=max_steps, candidates=candidates, baseline=baseline)
        rows += [{"split": split, "source": source, **row} for row in curves]
    return rows


def log_thinking(rows: list[dict], uri: str, run_ids: list[str]) -> None:
    """Curves as metrics on the EBT trial's run (step = forward passes) and as `thinking.json` on each run."""
    client = mlflow_client(uri)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / tags.THINKING_ARTIFACT
        path.write_text(json.dumps(rows, indent=1))
        for run_id in run_ids:
            client.log_artifact(run_id, str(path))
    for row in rows:
        if row["family"] == EBT.name:
            prefix = "" if row["split"] == "val" else f"{row['split']}_"
            name = f"think_{prefix}{row['mode']}_val_loss"
            client.log_metric(run_ids[0], name, row["val_loss"], step=row["forward_passes"])


@dataclass(frozen=True)
class ThinkTargets:
    """What `ebtscale think` evaluates and where it logs: the EBT trial's folder, its Transformer++ twin's
    (or None), the MLflow runs that get the curves (the trial's, and with a spec the sweep's parent run) and
    the store holding them."""

    ebt: Path
    baseline: Path | None
    run_ids: list[str]
    tracking_uri: str | None


def think_targets(target: Path, baseline: Path | None = None) -> ThinkTargets:
    """For a trial folder: that trial, logged to the run and store its run.json records. For a sweep spec:
    its largest finished EBT trial and that trial's Transformer++ twin (the same `shape`)."""
    if target.is_dir():
        record = TrialDir(target).read_run()
        if record is None:
            return ThinkTargets(target, baseline, [], None)
        uri = record.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        return ThinkTargets(target, baseline, [record.run_id], uri)
    from orchestrator.sweep.expand import expand
    from orchestrator.sweep.runner import trial_units
    from orchestrator.sweep.spec import load_spec
    from orchestrator.tracking import resolve_tracking_uri

    spec = load_spec(target)
    done = [u for u in trial_units(expand(spec)) if u.folder.status()["status"] == TrialStatus.FINISHED]
    ebts = sorted((u for u in done if u.family == EBT.name), key=lambda u: (u.config.total_steps, u.name))
    if not ebts:
        raise ConfigError(f"sweep {spec.name!r} has no finished EBT trial (run `ebtscale sweep run` first)")
    ebt = ebts[-1]
    twin = next((u for u in done if u.family != EBT.name and u.shape == ebt.shape), None)
    base_dir = baseline or (twin.folder.path if twin else None)
    record = ebt.folder.read_run()
    runs = [record.run_id] if record is not None else []
    uri = resolve_tracking_uri(spec.output_dir)
    return ThinkTargets(ebt.folder.path, base_dir, [*runs, spec.folder.parent_run_id()], uri)


def think(
    target: Path,
    baseline: Path | None = None,
    max_steps: int = 6,
    candidates: tuple[int, ...] = (1, 2, 4),
    batches: int = 4,
    track: bool = True,
    ood: EvalTextConfig | None = SHIPPED_OOD,
) -> tuple[ThinkTargets, list[dict]]:
    """`ebtscale think`: the curves of a trial folder or a sweep's EBT (`think_targets`) on its validation
    split and on `ood` text (None: validation only), logged to MLflow unless `track` is off or the trial has
    no run. A sweep's evaluation writes to the sweep's runs, so it holds the sweep's driver lock as every
    stage that writes does (SweepBusy while another driver of the sweep runs)."""
    with _sweep_lock(target):
        targets = think_targets(target, baseline)
        rows = evaluate_thinking(
            targets.ebt,
            targets.baseline,
            max_steps=max_steps,
            candidates=candidates,
            batches=batches,
            ood=ood,
        )
        if track and targets.run_ids:
            if targets.tracking_uri is None:
                raise ConfigError(
                    f"{targets.ebt / 'run.json'} does not record its MLflow store; set MLFLOW_TRACKING_URI "
                    "or pass --no-track"
                )
            log_thinking(rows, targets.tracking_uri, targets.run_ids)
    return targets, rows


def _sweep_lock(target: Path) -> AbstractContextManager[None]:
    """The driver lock of the sweep a spec names; a trial folder's evaluation writes to its own run only."""
    if target.is_dir():
        return nullcontext()
    from orchestrator.sweep.spec import load_spec

    return load_spec(target).folder.driver_lock()
