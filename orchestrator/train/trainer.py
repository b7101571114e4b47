"""One training trial: a DeepSpeed ZeRO engine over a fixed token budget, with validation, verified
checkpoints, exact resume and MLflow tracking. The same code path trains both model families.

Determinism: the batch of optimizer step s is a pure function of (seed, s) (model/data.py), and every
random draw of the EBT is seeded per sample from `sample_ids` and per step from `step_seed`. Resuming
therefore needs only the step counter plus DeepSpeed's model/optimizer/scheduler state, and a global batch
split over W processes gives the same loss as one process.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor, nn

from model import ModelInterface, build_model
from model.data import TokenDataset, prepare_dataset
from model.family import count_params, executed_train_flops_per_token, train_flops_per_token
from model.loss import IGNORE_INDEX
from orchestrator import tags
from orchestrator.config import PLACEMENT_FIELDS, ConfigError, TrialConfig, check_same_trial
from orchestrator.tracking import RunTracker, record_outcome
from orchestrator.train import checkpoint, distributed
from orchestrator.train.second_order import SecondOrderSafe
from orchestrator.trial_dir import (
    TrialDir,
    TrialResult,
    TrialStatus,
    atomic_write,
    atomic_write_text,
    perplexity,
    stopped_by_search,
)

log = logging.getLogger(__name__)

SAMPLE_ID_SEED_SHIFT = 40  # sample id = seed << 40 | global sample index: unique per (seed, sample)
VAL_ID_OFFSET = 1 << 39  # validation samples get ids disjoint from training ones


@dataclass
class TrackingContext:
    """Where a trial reports: MLflow store, experiment, parent (sweep) run and tags for the child run."""

    uri: str
    experiment: str
    parent_run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- set-up


def lr_lambda(cfg: TrialConfig) -> Callable[[int], float]:
    """Linear warmup to 1, then cosine decay to min_lr_ratio at the last step (multiplies each group's lr)."""
    total = cfg.total_steps
    o = cfg.optim
    warmup = o.warmup_steps if o.warmup_steps is not None else int(o.warmup_fraction * total)
    floor = cfg.optim.min_lr_ratio

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return f


def param_groups(model: ModelInterface, cfg: TrialConfig) -> list[dict[str, Any]]:
    """AdamW groups, the one place that sets each parameter's lr and weight decay: weight decay on matrices
    (or every parameter, weight_decay_on='all'), never on a parameter with an lr multiplier (the EBT step
    size, as its authors do); lr = optim.lr x the parameter's multiplier. DeepSpeed's optimizer block
    (`deepspeed_config`) carries only what every group shares."""
    multipliers = model.lr_multipliers()
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        decays = p.dim() >= 2 or cfg.optim.weight_decay_on == "all"
        decay = cfg.optim.weight_decay if decays and name not in multipliers else 0.0
        groups.setdefault((multipliers.get(name, 1.0), decay), []).append(p)
    # base-lr groups first, so the reported lr is the base schedule
    ordered = sorted(groups.items(), key=lambda kv: (kv[0][0] != 1.0, -kv[0][1]))
    return [{"params": ps, "lr": cfg.optim.lr * mult, "weight_decay": wd} for (mult, wd), ps in ordered]


def deepspeed_config(cfg: TrialConfig, accelerator: str) -> dict[str, Any]:
    """DeepSpeed's config of the trial on `accelerator` (DeepSpeed's, e.g. 'cpu' or 'cuda'), which resolves
    precision 'auto' (TrialConfig.precision)."""
    o = cfg.optim
    return {
        "train_batch_size": cfg.train.global_batch_size,
        "train_micro_batch_size_per_gpu": cfg.train.micro_batch_size,
        "gradient_accumulation_steps": cfg.grad_accum_steps,
        "optimizer": {
            "type": "AdamW",
            # No lr or weight_decay: they differ per group and `param_groups` sets them. DeepSpeed 0.19 reads
            # these params only to build torch's AdamW, as defaults that a group's own values override (its
            # LR schedulers, unused here, read the groups' lr too, not this block's).
            "params": {
                "betas": [o.beta1, o.beta2],
                "eps": o.eps,
                "torch_adam": True,  # torch's AdamW: nothing JIT-compiled
                # its fused kernel (CPU and CUDA): 2.2x faster engine.step than for-each, same losses
                # (benchmarks/NOTES.md, T2)
                "fused": True,
            },
        },
        "gradient_clipping": o.grad_clip,
        # memory_efficient_linear off: otherwise ZeRO-3 replaces torch.nn.functional.linear for the whole
        # process and its lifetime, with an autograd Function that computes a weight gradient whenever the
        # weight requires one, also in the EBT's candidate gradient (autograd.grad w.r.t. the candidates
        # only): +16% executed FLOPs on a tiny EBT step. Its memory saving is moot here: SecondOrderSafe's
        # weights are clones, and ZeRO-3's module hooks gather parameters for native linears as well.
        "zero_optimization": {"stage": cfg.deepspeed.zero_stage, "memory_efficient_linear": False},
        "bf16": {"enabled": cfg.precision(accelerator) == "bf16"},
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def wrap_for_deepspeed(model: ModelInterface) -> nn.Module:
    """Models that differentiate through their own gradients need SecondOrderSafe (see that module)."""
    return SecondOrderSafe(model) if model.second_order else model


def call_model(engine: Any, method: str, *args: Any, **kwargs: Any) -> Tensor:
    """Run a model method through the engine's module (both wrapped and plain modules)."""
    module = engine.module
    if isinstance(module, SecondOrderSafe):
        return module(*args, method=method, **kwargs)
    return getattr(module, method)(*args, **kwargs)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------- loop


EvalHook = Callable[[int, float, float], bool]  # (step, val_loss, train_time_s) -> keep training?
_HAS_FINAL_LOSS = (TrialStatus.FINISHED, TrialStatus.STOPPED)


class Trial:
    """Owns one trial's engine, data and tracker; `run()` trains to the token budget (or resumes)."""

    def __init__(self, cfg: TrialConfig, tracking: TrackingContext | None, progress: bool):
        self.cfg = cfg
        self._last_progress_write = 0.0
        self.dir: TrialDir = cfg.folder
        self.tracking = tracking
        self.progress = progress
        self.accelerator = distributed.init_process_group()  # DeepSpeed's: where this trial trains
        self.rank, self.world = distributed.rank(), distributed.world_size()
        if self.world != cfg.resources.num_workers:
            raise ConfigError(
                f"resources.num_workers is {cfg.resources.num_workers} but {self.world} processes joined"
            )
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
        self.flops_per_token = train_flops_per_token(cfg.model)
        self.params = count_params(cfg.model)
        self.data: TokenDataset = prepare_dataset(
            cfg.data, cfg.model.context_length, quiet=not (progress and self.rank == 0)
        )
        if self.data.vocab_size > cfg.model.vocab_size:
            raise ConfigError(
                f"model.vocab_size ({cfg.model.vocab_size}) is smaller than the tokenizer's "
                f"vocabulary ({self.data.vocab_size}); set model.vocab_size >= {self.data.vocab_size}"
            )
        torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
        # kernels 'auto' resolved for this accelerator: compile and the chunked CE on CUDA, off on CPU
        self.model = build_model(cfg.resolved_model(self.accelerator))
        if self.device is not None:
            self.model.to(self.device)
        import deepspeed

        deepspeed.utils.logger.setLevel(logging.WARNING)
        self.engine, _, _, self.scheduler = deepspeed.initialize(
            model=wrap_for_deepspeed(self.model),
            model_parameters=param_groups(self.model, cfg),
            config=deepspeed_config(cfg, self.accelerator),
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg)),
        )
        self.tracker = None

    # -- tracking (rank 0 only) ------------------------------------------------------------------------
    def _start_tracker(self) -> None:
        if self.tracking is None or self.rank != 0:
            return
        record = self.dir.read_run()
        resume_id = record.run_id if record is not None else None
        t = self.tracking
        self.tracker = RunTracker.start(
            t.uri,
            t.experiment,
            self.cfg.name,
            tags=t.tags,
            parent_run_id=t.parent_run_id,
            resume_run_id=resume_id,
            system_metrics=True,
        )
        if record is None or record.tracking_uri is None:  # the store is recorded too: `think` logs there
            self.dir.write_run(self.tracker.run_id, t.uri)
        self.tracker.log_params(
            {
                **self.cfg.model_dump(mode="json", exclude=PLACEMENT_FIELDS - {"name"}),
                "n_params": self.params["total"],
                "n_params_non_embedding": self.params["non_embedding"],
                "tokens": self.cfg.total_steps * self.cfg.tokens_per_step,
                "flops_per_token": self.flops_per_token,
                "flops": self.flops_per_token * self.cfg.total_steps * self.cfg.tokens_per_step,
                # what the configured model computes (less for an EBT reusing its observed stream): the
                # report's equal-compute view
                "flops_executed": executed_train_flops_per_token(self.cfg.model)
                * self.cfg.total_steps
                * self.cfg.tokens_per_step,
                "total_steps": self.cfg.total_steps,
                "trial_id": self.cfg.config_hash(),
                "data_fingerprint": self.data.fingerprint,
                "kernels_resolved": self.cfg.kernels(self.accelerator).model_dump(mode="json"),
            }
        )
        self.tracker.set_tags({tags.STATUS: TrialStatus.RUNNING, tags.TRIAL_ID: self.cfg.config_hash()})
        self.tracker.log_artifact(self.dir.config)

    def _log(self, metrics: dict[str, float], step: int) -> None:
        if self.tracker is not None:
            self.tracker.log_metrics(metrics, step)
        if self.rank == 0 and time.monotonic() - self._last_progress_write > 2.0:
            self._write_progress(step, metrics)

    def _write_progress(self, step: int, metrics: dict[str, float]) -> None:
        """A small status file the sweep driver polls for live progress (no MLflow round-trip)."""
        self._last_progress_write = time.monotonic()
        self.dir.write_progress(step, self.cfg.total_steps, metrics)

    # -- batches ---------------------------------------------------------------------------------------
    def _micro_batches(self, step: int) -> list[tuple[Tensor, Tensor, Tensor]]:
        """This rank's micro-batches of optimizer step `step`: rows [a*W*m + r*m, +m) of the global batch."""
        cfg, m = self.cfg, self.cfg.train.micro_batch_size
        G = cfg.train.global_batch_size
        indices = self.data.train_indices(step, G, cfg.train.seed)
        out = []
        for a in range(cfg.grad_accum_steps):
            rows = np.arange(a * self.world * m + self.rank * m, a * self.world * m + (self.rank + 1) * m)
            x, y = self.data.windows("train", indices[rows])
            ids = torch.as_tensor(
                (cfg.train.seed << SAMPLE_ID_SEED_SHIFT) + step * G + rows, dtype=torch.int64
            )
            out.append((self._to(x), self._to(y), ids))
        return out

    def _to(self, t: Tensor) -> Tensor:
        return t.to(self.device, non_blocking=True) if self.device is not None else t

    def evaluate(self) -> float:
        """Mean validation CE per counted target over fixed windows, sharded over ranks (all ranks run the
        same number of batches): each batch's mean is weighted by its counted targets (model/loss.py), so the
        result does not depend on how the windows are split into batches and ranks."""
        m = self.cfg.train.micro_batch_size
        n = self.cfg.train.eval_batches * m * self.world
        indices = self.data.eval_indices(n)
        total, counted = 0.0, 0
        self.engine.eval()
        with torch.no_grad():
            for b in range(self.cfg.train.eval_batches):
                start = (b * self.world + self.rank) * m
                rows = indices[start : start + m]
                x, y = self.data.windows("val", rows)
                ids = torch.as_tensor(VAL_ID_OFFSET + rows, dtype=torch.int64)
                loss = call_model(self.engine, "eval_loss", self._to(x), self._to(y), sample_ids=ids)
                count = int((y != IGNORE_INDEX).sum())
                if count:
                    total, counted = total + float(loss) * count, counted + count
        self.engine.train()
        return distributed.all_reduce_sum(total) / max(distributed.all_reduce_sum(counted), 1)

    # -- the loop --------------------------------------------------------------------------------------
    def run(self, stop_after_steps: int | None = None, on_eval: EvalHook | None = None) -> TrialResult:
        """Train to the token budget (or `stop_after_steps` more steps). `on_eval(step, val_loss)` is called
        after every evaluation; returning False stops the trial there as STOPPED (a tuning search's early
        stop), a final outcome like finishing."""
        cfg = self.cfg
        if self.rank == 0:
            self.dir.path.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.dir.config, yaml.safe_dump(cfg.model_dump(mode="json")))
        distributed.barrier()
        state = checkpoint.load_latest(self.engine, self.dir.checkpoints) or {}
        if state:
            _set_rng_state(state["rng"])
        start_step, elapsed = state.get("step", 0), state.get("train_time_s", 0.0)
        self._start_tracker()
        total, tokens_per_step = cfg.total_steps, cfg.tokens_per_step
        end_step = total if stop_after_steps is None else min(total, start_step + stop_after_steps)
        status, reason, losses = TrialStatus.FINISHED, "", []
        val_loss: float | None = state.get("val_loss")
        bar = _progress_bar(self.progress and self.rank == 0, total, start_step, cfg.name)
        try:
            for step in range(start_step, end_step):
                t0 = time.perf_counter()
                loss = self._train_step(step)
                elapsed += time.perf_counter() - t0
                losses.append(loss)
                if not math.isfinite(loss) or loss > cfg.train.divergence_loss:
                    status, reason = TrialStatus.DIVERGED, f"train loss {loss:.4g} at step {step}"
                    break
                done = step + 1
                metrics = {
                    "train_loss": loss,
                    "lr": self.scheduler.get_last_lr()[0],
                    "tokens_per_s": tokens_per_step / (time.perf_counter() - t0),
                    "tokens_seen": done * tokens_per_step,
                    "flops_cumulative": done * tokens_per_step * self.flops_per_token,
                }
                if done % cfg.train.eval_every == 0 or done == total:
                    val_loss = self.evaluate()
                    metrics.update(val_loss=val_loss, val_perplexity=perplexity(val_loss))
                if done % cfg.train.log_every == 0 or "val_loss" in metrics:
                    self._log(metrics, step=done)
                if "val_loss" in metrics and on_eval is not None:
                    # The hook may be this process's last act: Tune ends the actor of a trial it stops at a
                    # report without waiting for it. What was logged goes to the store first.
                    if self.tracker is not None:
                        self.tracker.flush()
                    # (a search's scheduler also says stop at a trial's last report: it has nothing to stop)
                    if not on_eval(done, val_loss, elapsed) and done < total:
                        status, reason = TrialStatus.STOPPED, stopped_by_search(done)
                        bar.update(loss, val_loss)
                        break
                if done % cfg.train.checkpoint_every == 0 and done < total:
                    # Metrics up to the checkpoint go to the store first: a resume from it re-logs only
                    # later steps, so the run's history has no gap (and, skipping steps it has, no repeat).
                    if self.tracker is not None:
                        self.tracker.flush()
                    ckpt_state = {
                        "step": done,
                        "train_time_s": elapsed,
                        "val_loss": val_loss,
                        "rng": _rng_state(),
                    }
                    checkpoint.save(self.engine, self.dir.checkpoints, done, ckpt_state)
                bar.update(loss, val_loss)
        except FloatingPointError as err:  # e.g. NonFiniteEnergyGradient from the EBT's inner loop
            status, reason = TrialStatus.DIVERGED, str(err)
        finally:
            bar.close()
        steps_done = start_step + len(losses)
        if status == TrialStatus.FINISHED and steps_done < total:
            status, reason = TrialStatus.INTERRUPTED, f"stopped after step {steps_done} of {total}"
        result = TrialResult(
            status=status,
            reason=reason,
            steps=steps_done,
            tokens=steps_done * tokens_per_step,
            final_val_loss=val_loss if status in _HAS_FINAL_LOSS else None,
            final_val_perplexity=perplexity(val_loss) if status in _HAS_FINAL_LOSS and val_loss else None,
            train_time_s=elapsed,
            run_id=self.tracker.run_id if self.tracker else None,
            losses=losses,
        )
        self._finish(result)
        return result

    def _train_step(self, step: int) -> float:
        """One optimizer step (all micro-batches); returns the global mean training loss."""
        step_seed = (self.cfg.train.seed << SAMPLE_ID_SEED_SHIFT) + step
        skipped_before = self.engine.skipped_steps
        micro_losses = []
        for x, y, ids in self._micro_batches(step):
            try:
                loss = self.engine(x, y, sample_ids=ids, step_seed=step_seed)
                ok = True
            except FloatingPointError:
                ok = False
            if distributed.all_reduce_any(not ok):  # every rank must skip backward together
                raise FloatingPointError(f"non-finite energy gradient at step {step}")
            self.engine.backward(loss)
            self.engine.step()
            micro_losses.append(loss.item())
        if self.engine.skipped_steps > skipped_before:
            # Without fp16 loss scaling a skipped update means non-finite gradients: the run has diverged
            # (DeepSpeed would otherwise carry on silently with frozen weights).
            raise FloatingPointError(f"non-finite gradients at step {step}: DeepSpeed skipped the update")
        return distributed.all_reduce_mean(float(np.mean(micro_losses)))

    def save_final_weights(self) -> None:
        """The trained model's state dict, under the model's own names, as `model.pt` (rank 0). Under ZeRO-3
        the partitioned parameters are gathered first. Loaded safely with torch.load(weights_only=True)."""
        import deepspeed

        params = list(self.model.parameters())
        with deepspeed.zero.GatheredParameters(params, enabled=self.cfg.deepspeed.zero_stage == 3):
            if self.rank == 0:
                state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
                atomic_write(self.dir.weights, lambda tmp: torch.save(state, tmp))
        distributed.barrier()

    def _finish(self, result: TrialResult) -> None:
        if result.status == TrialStatus.FINISHED:
            self.save_final_weights()
        if self.rank == 0 and result.status != TrialStatus.INTERRUPTED:
            result.save(self.dir.result)
        if self.tracker is not None:
            record_outcome(self.tracker, result, self.dir)


def ensure_writable(folder: Path, needed_bytes: int = 0) -> None:
    """Fail before any training, with a clear message, if the trial's folder cannot be written or its
    filesystem has less than `needed_bytes` free (see checkpoint.required_bytes)."""
    probe = folder / f".write-probe-{os.getpid()}"  # per process: the ranks of one trial probe at once
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"output folder {folder} is not writable: {err.strerror or err}") from None
    if needed_bytes:
        checkpoint.ensure_free_space(folder, needed_bytes)


def train_trial(
    cfg: TrialConfig,
    tracking: TrackingContext | None = None,
    progress: bool = True,
    stop_after_steps: int | None = None,
    on_eval: EvalHook | None = None,
) -> TrialResult:
    """Train (or resume) one trial in this process, in its folder (`cfg.folder`); the process group must span
    cfg.resources.num_workers.

    A trial whose `result.json` exists is finished and is not trained again."""
    check_same_trial(cfg)
    folder = cfg.folder
    done = folder.read_result()
    if done is not None:
        return done
    ensure_writable(folder.path, checkpoint.required_bytes(cfg))
    trial = None
    try:
        trial = Trial(cfg, tracking, progress)
        folder.failed.unlink(missing_ok=True)
        return trial.run(stop_after_steps=stop_after_steps, on_eval=on_eval)
    except BaseException as err:
        if distributed.rank() == 0:  # recorded for `sweep status`; a rerun tries again
            try:
                folder.write_failed(f"{type(err).__name__}: {err}")
            except OSError as write_err:  # e.g. the disk that failed the trial is full: keep its error
                log.error("could not record the failure in %s: %s", folder.failed, write_err)
        if trial is not None and trial.tracker is not None:
            trial.tracker.set_tags({tags.STATUS: TrialStatus.FAILED, tags.STATUS_REASON: str(err)[:500]})
            trial.tracker.end("FAILED")
        raise


class _progress_bar:
    """A rich progress bar on rank 0 (no-op elsewhere or when disabled)."""

    def __init__(self, enabled: bool, total: int, start: int, name: str) -> None:
        self.progress = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  val {task.fields[val]}"),
            TimeRemainingColumn(),
        )
        self.task = self.progress.add_task(name, total=total, completed=start, loss="-", val="-")
        self.progress.start()

    def update(self, loss: float, val: float | None) -> None:
        if self.progress is not None:
            val_text = f"{val:.3f}" if val is not None else "-"
            self.progress.update(self.task, advance=1, loss=f"{loss:.3f}", val=val_text)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _spawned_trial(cfg: TrialConfig, tracking: TrackingContext | None, progress: bool) -> None:
    torch.set_num_threads(max(1, int(cfg.resources.cpus_per_worker)))
    train_trial(cfg, tracking, progress=progress)


def launch_trial(
    cfg: TrialConfig, tracking: TrackingContext | None = None, progress: bool = True
) -> TrialResult:
    """Run a trial outside Ray: in this process if it has one worker, else in `num_workers` local gloo/NCCL
    processes (rank 0 writes result.json, which is returned)."""
    check_same_trial(cfg)
    if cfg.resources.num_workers == 1:
        return train_trial(cfg, tracking, progress=progress)
    distributed.spawn(_spawned_trial, cfg.resources.num_workers, args=(cfg, tracking, progress))
    return TrialResult.load(cfg.folder.result)
