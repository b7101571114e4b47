"""Dry-run plan of a sweep: size, compute, memory and time of every trial, before anything runs.

Estimates are analytic and deliberately simple (see docs/sweeps.md), good to a small factor: enough to catch
a sweep that would not fit in memory, would take a week, or exceeds a compute cap.

Memory per worker = model states + activations + a fixed runtime overhead:
- model states (mixed-precision AdamW, the ZeRO paper's accounting): fp32 training keeps params 4 + grads 4 +
  Adam moments 8 = 16 bytes/param; bf16 keeps params 2 + grads 2 + fp32 master params and moments 12 =
  16 bytes/param. ZeRO-1 shards the optimizer states over `resources.num_workers`, ZeRO-2 also the
  gradients, ZeRO-3 also the parameters.
- activations ~ micro_batch x context x d_model x n_layers x ACTIVATION_BYTES_PER_ELEMENT_LAYER (per layer
  and token: ~34 values per hidden unit saved for backward, Korthikanti et al. 2022, without recomputation
  and without the T^2 attention term that fused SDPA avoids), plus the vocabulary logits and their gradient
  (micro_batch x context x vocab x 2 x 4 bytes). EBT: the sequence is doubled (observed + candidate stream)
  and the graph of every optimisation step is kept for the second-order backward, so blocks x 2 x steps and
  logits x steps (steps = mcmc_steps_random_max or mcmc_steps).
- RUNTIME_OVERHEAD_BYTES for the framework (torch/DeepSpeed/CUDA context, allocator slack).

Time = C / (per-worker throughput x num_workers): the throughput is given (`--throughput`, FLOP/s per
worker) or calibrated by timing fp32 GEMMs of the sweep's own shapes on this machine and multiplying by
CALIBRATION_EFFICIENCY (the share of raw GEMM speed a whole training step achieves on small models:
attention, norms, optimizer, data loading and Python overhead). Trials on GPUs get no time unless a GPU is
present here or a throughput is given.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from model.flops import count_params, train_flops_per_token
from orchestrator.config import TrialConfig
from orchestrator.spec import PlannedTrial, SpecError, si

ACTIVATION_BYTES_PER_ELEMENT_LAYER = {"fp32": 68, "bf16": 34}  # bytes per (token x hidden unit x layer)
LOGIT_BYTES = 4 * 2  # fp32 logits + their gradient, per (token x vocabulary entry)
RUNTIME_OVERHEAD_BYTES = 1 << 30  # 1 GiB: torch + DeepSpeed + (CUDA context), measured order of magnitude
# Measured here: a plain torch AdamW step of d_model 32-64 models (both families, 1 thread) reaches 12-32
# GFLOP/s where a 1-thread GEMM of the same shapes reaches ~100: 0.1-0.3, before DeepSpeed/eval overhead.
CALIBRATION_EFFICIENCY = 0.2
_CALIBRATION_SECONDS = 0.25  # time spent timing GEMMs, per device


@dataclass(frozen=True)
class TrialEstimate:
    """The plan of one row. `duplicate`: an earlier row has the same id, so it is trained only once and is
    left out of the totals."""

    trial: PlannedTrial
    params_total: int
    params_non_embedding: int
    tokens: int
    flops: float
    steps: int
    global_batch: int
    memory_bytes: int
    seconds: float | None
    duplicate: bool

    def to_dict(self) -> dict[str, Any]:
        t = self.trial
        return {
            "id": t.id,
            "name": t.name,
            "family": t.family,
            "axis": t.axis,
            "seed": t.seed,
            "axis_value": t.axis_value,
            "flops_budget": t.flops_budget,
            "source": t.source,
            "params_total": self.params_total,
            "params_non_embedding": self.params_non_embedding,
            "tokens": self.tokens,
            "flops": self.flops,
            "steps": self.steps,
            "global_batch": self.global_batch,
            "memory_bytes_per_worker": self.memory_bytes,
            "seconds": self.seconds,
            "duplicate": self.duplicate,
            "output_dir": t.config.output_dir,
        }


@dataclass(frozen=True)
class Plan:
    sweep: str
    rows: list[TrialEstimate]
    throughput_flops: float | None = None  # per worker, effective
    throughput_source: str = "none"  # "given" | "calibrated" | "none"
    notes: list[str] = field(default_factory=list)

    @property
    def unique_rows(self) -> list[TrialEstimate]:
        return [r for r in self.rows if not r.duplicate]

    @property
    def n_trials(self) -> int:
        """Trials to train (distinct ids)."""
        return len(self.unique_rows)

    @property
    def total_flops(self) -> float:
        return sum(r.flops for r in self.unique_rows)

    @property
    def total_seconds(self) -> float | None:
        """Serial training time of the distinct trials (None when some trial has no estimate)."""
        times = [r.seconds for r in self.unique_rows]
        return None if any(t is None for t in times) else sum(times)  # type: ignore[misc]

    @property
    def max_memory_bytes(self) -> int:
        return max((r.memory_bytes for r in self.rows), default=0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sweep": self.sweep,
            "throughput_flops_per_worker": self.throughput_flops,
            "throughput_source": self.throughput_source,
            "totals": {
                "rows": len(self.rows),
                "trials": self.n_trials,
                "flops": self.total_flops,
                "seconds": self.total_seconds,
                "max_memory_bytes_per_worker": self.max_memory_bytes,
            },
            "notes": self.notes,
            "trials": [r.to_dict() for r in self.rows],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def precision(cfg: TrialConfig) -> str:
    """The precision a trial trains in: 'auto' means bf16 on GPU workers, fp32 on CPU ones."""
    if cfg.deepspeed.precision != "auto":
        return cfg.deepspeed.precision
    return "bf16" if cfg.resources.gpus_per_worker > 0 else "fp32"


def model_state_bytes(n_params: int, zero_stage: int, num_workers: int, prec: str = "fp32") -> float:
    """Params + grads + AdamW states per worker under ZeRO stage 0-3 (16 bytes/param unsharded)."""
    p, g, opt = (4, 4, 8) if prec == "fp32" else (2, 2, 12)
    w = num_workers
    if zero_stage >= 1:
        opt /= w
    if zero_stage >= 2:
        g /= w
    if zero_stage >= 3:
        p /= w
    return n_params * (p + g + opt)


def activation_bytes(cfg: TrialConfig) -> float:
    m = cfg.model
    tokens = cfg.train.micro_batch_size * m.context_length
    blocks = tokens * m.d_model * m.n_layers * ACTIVATION_BYTES_PER_ELEMENT_LAYER[precision(cfg)]
    logits = tokens * m.vocab_size * LOGIT_BYTES
    if m.family == "ebt":
        steps = m.ebt.mcmc_steps_random_max or m.ebt.mcmc_steps
        return blocks * 2 * steps + logits * steps
    return blocks + logits


def memory_per_worker(cfg: TrialConfig, n_params: int | None = None) -> int:
    n = count_params(cfg.model)["total"] if n_params is None else n_params
    states = model_state_bytes(n, cfg.deepspeed.zero_stage, cfg.resources.num_workers, precision(cfg))
    return int(states + activation_bytes(cfg) + RUNTIME_OVERHEAD_BYTES)


def calibrate_throughput(
    m: int = 512, k: int = 256, n: int = 512, device: str = "cpu", threads: int | None = None
) -> float:
    """Effective training FLOP/s of one worker here: the best of a few timed rounds of (m x k) @ (k x n) GEMMs
    (fp32; bf16 on CUDA) on `threads` CPU threads (a worker's cpus), x CALIBRATION_EFFICIENCY.
    Best-of-rounds because the machine may be shared: we want the speed, not the contention."""
    import torch

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    saved = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(max(1, threads))
    try:
        best, deadline = 0.0, time.perf_counter() + _CALIBRATION_SECONDS
        a @ b
        while time.perf_counter() < deadline or best == 0.0:
            start = time.perf_counter()
            for _ in range(4):
                a @ b
            if device == "cuda":
                torch.cuda.synchronize()
            best = max(best, 4 * 2 * m * k * n / (time.perf_counter() - start))
    finally:
        torch.set_num_threads(saved)
    return best * CALIBRATION_EFFICIENCY


def _representative(trials: list[PlannedTrial]) -> dict[str, int]:
    """The largest trial's main GEMM (micro-batch tokens x d_model x d_ff, clamped so timing stays short)
    and its worker's CPU threads."""
    cfg = max(trials, key=lambda t: t.config.model.d_model * t.config.model.n_layers).config
    clamp = lambda x: max(32, min(2048, x))  # noqa: E731
    return {
        "m": clamp(cfg.train.micro_batch_size * cfg.model.context_length),
        "k": clamp(cfg.model.d_model),
        "n": clamp(cfg.model.ff_dim),
        "threads": max(1, int(cfg.resources.cpus_per_worker)),
    }


def plan(trials: list[PlannedTrial], throughput_flops: float | None = None, calibrate: bool = True) -> Plan:
    """Estimate every row. `throughput_flops` (effective FLOP/s per worker) overrides calibration."""
    notes: list[str] = []
    if throughput_flops is not None and not throughput_flops > 0:
        raise SpecError([("throughput", f"must be > 0, got {throughput_flops}")])
    cpu_rate, gpu_rate = throughput_flops, throughput_flops
    source = "given" if throughput_flops is not None else "none"
    if throughput_flops is None and calibrate and trials:
        cpu = [t for t in trials if t.config.resources.gpus_per_worker == 0]
        gpu = [t for t in trials if t.config.resources.gpus_per_worker > 0]
        if cpu:
            cpu_rate = calibrate_throughput(**_representative(cpu))
            source = "calibrated"
        if gpu:
            import torch

            if torch.cuda.is_available():
                gpu_rate = calibrate_throughput(**_representative(gpu), device="cuda")
                source = "calibrated"
            else:
                notes.append("GPU trials have no time estimate here: pass --throughput (FLOP/s per GPU)")
    rows: list[TrialEstimate] = []
    seen: set[str] = set()
    for t in trials:
        cfg = t.config
        counts = count_params(cfg.model)
        tokens = cfg.total_steps * cfg.tokens_per_step  # what training consumes (whole steps)
        flops = train_flops_per_token(cfg.model) * tokens
        rate = gpu_rate if cfg.resources.gpus_per_worker > 0 else cpu_rate
        rows.append(
            TrialEstimate(
                trial=t,
                params_total=counts["total"],
                params_non_embedding=counts["non_embedding"],
                tokens=tokens,
                flops=flops,
                steps=cfg.total_steps,
                global_batch=cfg.train.global_batch_size,
                memory_bytes=memory_per_worker(cfg, counts["total"]),
                seconds=None if rate is None else flops / (rate * cfg.resources.num_workers),
                duplicate=t.id in seen,
            )
        )
        seen.add(t.id)
    if any(r.duplicate for r in rows):
        notes.append("rows marked 'shared' have the id of an earlier row: trained once, counted once")
    rate = cpu_rate if cpu_rate is not None else gpu_rate
    return Plan(trials[0].sweep if trials else "", rows, rate, source, notes)


def check_budget(p: Plan, max_flops: float | None = None, max_trials: int | None = None) -> None:
    """Refuse a plan over a cap (distinct trials only: shared rows train once)."""
    if max_flops is not None and p.total_flops > max_flops:
        raise SpecError(
            [("max_flops", f"the plan needs {p.total_flops:.3g} FLOPs, over the cap of {max_flops:.3g}")],
            source=f"plan of {p.sweep}",
        )
    if max_trials is not None and p.n_trials > max_trials:
        raise SpecError(
            [("max_trials", f"the plan has {p.n_trials} trials to train, over the cap of {max_trials}")],
            source=f"plan of {p.sweep}",
        )


def fmt_bytes(n: float) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    for unit, scale in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s:.3g} s"


_COLUMNS = (
    "trial",
    "axis",
    "N (non-emb)",
    "N total",
    "D",
    "C (FLOPs)",
    "steps",
    "batch",
    "mem/worker",
    "time",
    "id",
)


def _cells(r: TrialEstimate) -> list[str]:
    return [
        r.trial.name,
        r.trial.axis,
        si(r.params_non_embedding),
        si(r.params_total),
        si(r.tokens),
        f"{r.flops:.3g}",
        str(r.steps),
        str(r.global_batch),
        fmt_bytes(r.memory_bytes),
        fmt_seconds(r.seconds),
        r.trial.id + (" (shared)" if r.duplicate else ""),
    ]


def _total_cells(p: Plan) -> list[str]:
    return [
        f"total: {p.n_trials} trials",
        f"{len(p.rows)} rows",
        "",
        "",
        si(sum(r.tokens for r in p.unique_rows)),
        f"{p.total_flops:.3g}",
        str(sum(r.steps for r in p.unique_rows)),
        "",
        f"max {fmt_bytes(p.max_memory_bytes)}",
        fmt_seconds(p.total_seconds),
        "",
    ]


def _caption(p: Plan) -> str:
    rate = "no throughput" if p.throughput_flops is None else f"{p.throughput_flops:.3g} FLOP/s per worker"
    return f"{rate} ({p.throughput_source}); time is serial" + "".join(f"; {n}" for n in p.notes)


def render_plan(p: Plan) -> Table:
    """A rich table, one row per planned row, with a totals row."""
    table = Table(title=f"sweep {p.sweep}: plan", caption=_caption(p), show_lines=False)
    for i, col in enumerate(_COLUMNS):
        table.add_column(col, justify="left" if i in (0, 1, 10) else "right", no_wrap=i == 0)
    for r in p.rows:
        table.add_row(*_cells(r), style="dim" if r.duplicate else None)
    table.add_section()
    table.add_row(*_total_cells(p), style="bold")
    return table


def plan_text(p: Plan) -> str:
    """Plain-text version of `render_plan` (logs, files, terminals without rich)."""
    rows = [list(_COLUMNS)] + [_cells(r) for r in p.rows] + [_total_cells(p)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return f"sweep {p.sweep}: plan\n" + "\n".join(lines) + f"\n{_caption(p)}\n"
