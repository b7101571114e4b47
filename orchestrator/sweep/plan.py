"""Dry-run plan of a sweep: size, compute, memory and time of every trial, before anything runs.

Estimates are analytic, with coefficients measured on this project's code (benchmarks/bench_memory.py and
benchmarks/bench_planner.py check them against measured runs; the tables are in benchmarks/NOTES.md §4).
Target: within 25% of the measured peak memory and training time on the CPU smoke sweeps. Good enough to
catch a sweep that would not fit in memory, would take a week, or exceeds a compute cap.

Memory per worker = runtime + model states + DeepSpeed's own buffers + peak activations:
- runtime (`runtime_bytes`): the process before the model exists (torch, DeepSpeed, Ray's worker library):
  0.5 GiB on CPU (measured 450-493 MiB + ~50 MiB for ray.train), 1 GiB on GPU (CUDA context, allocator).
- model states (`model_state_bytes`, the ZeRO paper's accounting of mixed-precision AdamW): 16 bytes/param
  unsharded; ZeRO-1 shards the optimizer states over `resources.num_workers`, ZeRO-2 also the gradients,
  ZeRO-3 also the parameters.
- DeepSpeed's buffers beyond that accounting (`implementation_bytes`): measured bytes per parameter per
  ZeRO stage.
- activations (`activation_terms`): what autograd keeps for the backward of one micro-batch, counted from
  the code (hidden-size values per row and layer, the EBT's T x T attention matrices of the MATH kernel, the
  vocabulary-sized tensors, the EBT's per-forward weight clones), plus the backward's transient buffers.
  Each family counts its own (model/family.py); the planner only picks the micro-batch and precision.

Time per optimizer step (`step_seconds`, over `time_terms`) = a fixed cost per step + a dispatch cost per
layer pass (Python, autograd and DeepSpeed per layer and micro-batch; an EBT micro-batch makes K + 2 x kept
passes) + the EBT's MATH-kernel attention (memory-bound work per T x T element, which FLOPs undervalue) +
the FLOPs the model executes / the per-worker throughput. The throughput is calibrated by timing fp32
GEMMs of the sweep's own shapes on this machine, x CALIBRATION_EFFICIENCY. A throughput given by the user
(`--throughput`, FLOP/s per worker in the study's FLOP convention) is taken as the whole effective rate:
time = C / (throughput x num_workers), nothing added.
Trials on GPUs get no time unless a GPU is present here or a throughput is given.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.table import Table

from model.family import activation_terms as family_activation_terms
from model.family import count_params, executed_train_flops_per_token, family, train_flops_per_token
from orchestrator.config import TrialConfig
from orchestrator.sweep.expand import PlannedTrial, si
from orchestrator.sweep.spec import SpecError

MIB, GIB = 1 << 20, 1 << 30

# --- memory coefficients (bench_memory.py measures every one of them; benchmarks/NOTES.md §4) -------------

# The process before the model exists. CPU: RSS after importing torch, DeepSpeed and the project and one
# throwaway DeepSpeed step: 447-450 MiB (ZeRO 0), 490-493 MiB (ZeRO 1-3); a sweep's Ray Train worker also
# imports ray.train (+50 MiB). GPU: the CUDA context and allocator slack (not measured here).
RUNTIME_OVERHEAD_BYTES = {"cpu": 512 * MIB, "gpu": GIB}

# DeepSpeed's buffers beyond the ZeRO paper's 16 B/param, per parameter (fp32 on CPU, one worker, measured
# on d_model 512/768 Transformer++ models whose parameters dominate: peak RSS - runtime = 21.4 / 37.6 / 35.6
# / 42.5 B/param at ZeRO 0/1/2/3). Every stage: the optimizer step's and gradient clipping's temporaries
# (~5 B, not sharded). ZeRO-1/2: an fp32 copy of the parameter partition and flat gradient partitions
# (~16 / 15 B, sharded: 2 workers measured 13.5 / 12.2 B above the paper). ZeRO-3: gathered parameters,
# gradient buckets and flat copies (~21.5 B, taken as sharded; 2 workers on CPU measured 28.5 B, above
# this: see NOTES.md §4).
DEEPSPEED_UNSHARDED_BYTES_PER_PARAM = 5.0
DEEPSPEED_SHARDED_BYTES_PER_PARAM = {0: 0.0, 1: 16.0, 2: 15.0, 3: 21.5}

# --- time coefficients (bench_planner.py; benchmarks/NOTES.md §4) ----------------------------------------

# Least-squares fit (relative error) of measured per-step train times (bench_planner.py: the mean of three
# runs, each trial the best of 4 rounds) on `time_terms`: the smoke sweeps' trials (d_model 32-96, 1-4
# layers, 1-4 micro-batches, context 64) and the paper's d_model 128/256 shapes at context 256, both
# families, the EBT with reuse_observed_kv false and true; 1 torch thread, fp32, ZeRO-1, against the
# calibrated GEMM rate (~110 GFLOP/s here). Fitted separately, the two families' pass costs came out equal
# (1.1 ms Transformer++, 1.1 ms EBT): one constant.
CALIBRATION_EFFICIENCY = 0.75  # executed FLOPs run at this share of the calibrated GEMM rate
STEP_OVERHEAD_S = 2.0e-3  # per optimizer step: DeepSpeed's step bookkeeping, scheduler, loss reduction
PASS_OVERHEAD_S = 1.1e-3  # per layer pass (see time_terms): Python, autograd and DeepSpeed dispatch
MATH_ATTENTION_S_PER_ELEMENT = 6.5e-9  # per (B, H, query, key) element and pass of the MATH kernel
# torch.backends.cpu.get_cpu_capability() on the machine of that fit. On another kind the fixed costs differ
# far more than the GEMM rate shows: on an AVX2 VM (2026-11-28) the smoke sweeps took 2.0-2.5x their planned
# time, so a plan made on such a CPU says so (benchmarks/NOTES.md).
FIT_CPU_CAPABILITY = "AVX512"
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
            "trial_dir": str(t.config.folder.path),
            "tuned": None if t.tuned is None else asdict(t.tuned),
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

    @property
    def gpu_hours(self) -> float | None:
        """GPU-hours of the distinct trials: time x workers x GPUs per worker (0 without GPU trials; None when
        a GPU trial has no time estimate: plan with a throughput)."""
        total = 0.0
        for r in self.unique_rows:
            res = r.trial.config.resources
            if res.gpus_per_worker > 0:
                if r.seconds is None:
                    return None
                total += r.seconds * res.num_workers * res.gpus_per_worker / 3600
        return total

    @property
    def uses_gpus(self) -> bool:
        return any(r.trial.config.resources.gpus_per_worker > 0 for r in self.rows)

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
                "gpu_hours": self.gpu_hours,
            },
            "notes": self.notes,
            "trials": [r.to_dict() for r in self.rows],
        }


def model_state_bytes(n_params: int, zero_stage: int, num_workers: int, prec: str = "fp32") -> float:
    """Params + grads + AdamW states per worker under ZeRO stage 0-3 (16 bytes/param unsharded: fp32 keeps
    params 4 + grads 4 + moments 8, bf16 params 2 + grads 2 + fp32 master params and moments 12)."""
    p, g, opt = (4, 4, 8) if prec == "fp32" else (2, 2, 12)
    w = num_workers
    if zero_stage >= 1:
        opt /= w
    if zero_stage >= 2:
        g /= w
    if zero_stage >= 3:
        p /= w
    return n_params * (p + g + opt)


def implementation_bytes(n_params: int, zero_stage: int, num_workers: int) -> float:
    """Per-worker bytes DeepSpeed keeps beyond `model_state_bytes`: its step temporaries and the ZeRO stage's
    buffers (DEEPSPEED_*_BYTES_PER_PARAM). Measured in fp32 on CPU; the same bytes are assumed for bf16."""
    sharded = DEEPSPEED_SHARDED_BYTES_PER_PARAM[zero_stage] / num_workers
    return n_params * (DEEPSPEED_UNSHARDED_BYTES_PER_PARAM + sharded)


def activation_terms(cfg: TrialConfig) -> dict[str, float]:
    """Activation memory of one micro-batch, in bytes, by kind and its peak: the family's own count
    (model.family.activation_terms, where the coefficients and formulas are) at the trial's micro-batch and
    precision (`TrialConfig.precision`, as its resources plan it) and kernels (`TrialConfig.kernels`: the
    chunked cross-entropy keeps no vocabulary-sized tensor)."""
    e = 4 if cfg.precision() == "fp32" else 2
    return family_activation_terms(cfg.resolved_model(), cfg.train.micro_batch_size, e)


def activation_bytes(cfg: TrialConfig) -> float:
    """Peak activation bytes of one micro-batch (saved for backward + the backward's transient buffers)."""
    return activation_terms(cfg)["peak"]


def runtime_bytes(cfg: TrialConfig) -> int:
    """The worker process before its model exists: RUNTIME_OVERHEAD_BYTES of its device kind."""
    return RUNTIME_OVERHEAD_BYTES["gpu" if cfg.resources.gpus_per_worker > 0 else "cpu"]


def memory_terms(cfg: TrialConfig, n_params: int | None = None) -> dict[str, float]:
    """Per-worker memory by term (bytes): runtime, states, implementation, activations, total."""
    n = count_params(cfg.model)["total"] if n_params is None else n_params
    stage, workers = cfg.deepspeed.zero_stage, cfg.resources.num_workers
    terms = {
        "runtime": float(runtime_bytes(cfg)),
        "states": model_state_bytes(n, stage, workers, cfg.precision()),
        "implementation": implementation_bytes(n, stage, workers),
        "activations": activation_bytes(cfg),
    }
    return {**terms, "total": sum(terms.values())}


def memory_per_worker(cfg: TrialConfig, n_params: int | None = None) -> int:
    """Peak memory of one worker (bytes): `memory_terms`' total."""
    return int(memory_terms(cfg, n_params)["total"])


def time_terms(cfg: TrialConfig) -> dict[str, float]:
    """What one optimizer step of one worker does, as the time model counts it (`step_seconds`):
    - layer_passes: micro-batches x passes x (n_layers + 1), the unit of the FLOP-independent dispatch cost
      (Python, autograd, DeepSpeed hooks; + 1 for the ends: embeddings, head or energy head, loss). The
      passes of a micro-batch are the family's (`Family.step_work`: a Transformer++ micro-batch is one
      pass, forward + backward; an EBT's is K + 2 x kept);
    - attention_elements: (B, H, queries, keys) elements a MATH-kernel attention materialises per
      micro-batch (the family's `step_work`; the Transformer++'s fused kernel: 0). Scores, mask, softmax and
      their (double) backward are memory-bound work that the FLOP count undervalues;
    - executed_flops: the FLOPs the model executes per step on this worker (`executed_train_flops_per_token`:
      less than the study's count for an EBT with reuse_observed_kv)."""
    m = cfg.model
    micro = cfg.grad_accum_steps
    work = family(m).step_work(m, cfg.train.micro_batch_size)
    return {
        "layer_passes": micro * work.passes * (m.n_layers + 1),
        "attention_elements": micro * work.attention_elements,
        "executed_flops": executed_train_flops_per_token(m) * cfg.tokens_per_step / cfg.resources.num_workers,
    }


def step_seconds(cfg: TrialConfig, rate: float) -> float:
    """Seconds of one optimizer step at a calibrated `rate` (effective FLOP/s per worker), from `time_terms`:
    STEP_OVERHEAD_S + layer_passes x PASS_OVERHEAD_S + attention_elements x
    MATH_ATTENTION_S_PER_ELEMENT + executed_flops / rate."""
    t = time_terms(cfg)
    return (
        STEP_OVERHEAD_S
        + t["layer_passes"] * PASS_OVERHEAD_S
        + t["attention_elements"] * MATH_ATTENTION_S_PER_ELEMENT
        + t["executed_flops"] / rate
    )


def trial_seconds(cfg: TrialConfig, rate: float, calibrated: bool = True) -> float:
    """Training time of a whole trial (train_time_s: optimizer steps only, no evaluation or checkpoints):
    total_steps x `step_seconds` at a calibrated rate. A given rate is the user's effective throughput in the
    study's FLOP convention: study FLOPs / (rate x workers), nothing added."""
    if not calibrated:
        tokens = cfg.total_steps * cfg.tokens_per_step
        return train_flops_per_token(cfg.model) * tokens / (rate * cfg.resources.num_workers)
    return cfg.total_steps * step_seconds(cfg, rate)


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


def _cpu_kind_notes() -> list[str]:
    """A note when torch runs other CPU kernels here than on the machine the time model was fitted on."""
    import torch

    here = torch.backends.cpu.get_cpu_capability()
    if here == FIT_CPU_CAPABILITY:
        return []
    return [
        f"CPU times were fitted on an {FIT_CPU_CAPABILITY} CPU and this one runs torch's {here} kernels: "
        "they may be well off (2.0-2.5x low on an AVX2 VM; docs/sweeps.md)"
    ]


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
            notes += _cpu_kind_notes()
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
        cfg, costs = t.config, t.costs
        rate = gpu_rate if cfg.resources.gpus_per_worker > 0 else cpu_rate
        rows.append(
            TrialEstimate(
                trial=t,
                params_total=costs.params_total,
                params_non_embedding=costs.params_non_embedding,
                tokens=costs.tokens,
                flops=costs.train_flops,
                steps=cfg.total_steps,
                global_batch=cfg.train.global_batch_size,
                memory_bytes=memory_per_worker(cfg, costs.params_total),
                seconds=None if rate is None else trial_seconds(cfg, rate, calibrated=source == "calibrated"),
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


def local_memory_limits() -> tuple[int, int | None]:
    """(bytes a CPU worker can get, bytes per GPU) on this machine, without starting Ray: the node memory
    Ray reports for a local instance (cgroup limits included), and the first visible GPU's memory (None
    without one)."""
    from ray._private.utils import get_system_memory

    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_properties(0).total_memory
    except ImportError:
        pass
    return int(get_system_memory()), gpu


def check_memory(p: Plan, cpu_limit: int | None, gpu_limit: int | None) -> None:
    """Refuse a plan with a trial whose memory per worker exceeds what one of its workers can get: the
    node's memory (CPU trials) or its share of a GPU's (GPU trials). A limit of None is not checked."""
    problems = []
    for r in p.unique_rows:
        res = r.trial.config.resources
        on_gpu = res.gpus_per_worker > 0
        if on_gpu:
            limit = None if gpu_limit is None else gpu_limit * min(1.0, res.gpus_per_worker)
        else:
            limit = cpu_limit
        if limit is not None and r.memory_bytes > limit:
            where = f"{res.gpus_per_worker:g} of a GPU's memory" if on_gpu else "the node's memory"
            problems.append(
                (
                    r.trial.name,
                    f"plans {fmt_bytes(r.memory_bytes)} per worker, over the {fmt_bytes(limit)} of {where}",
                )
            )
    if problems:
        advice = "shrink each such trial or add workers; --force starts them anyway"
        raise SpecError(problems, source=f"plan of {p.sweep}", advice=advice)


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
    "tuned",
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
        "" if r.trial.tuned is None else r.trial.tuned.describe(),
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
        "",
    ]


def _caption(p: Plan) -> str:
    rate = "no throughput" if p.throughput_flops is None else f"{p.throughput_flops:.3g} FLOP/s per worker"
    gpu = ""
    if p.uses_gpus:
        hours = p.gpu_hours
        gpu = f"; {hours:.3g} GPU-hours" if hours is not None else "; GPU-hours ? (no time estimate)"
    return f"{rate} ({p.throughput_source}); time is serial{gpu}" + "".join(f"; {n}" for n in p.notes)


# Left out first when a terminal is too narrow for every column (the others always stay): what a reader
# can find elsewhere (the id in --json and the trial folder, N total beside N, steps from D) goes first.
_FOLD_ORDER = ("id", "N total", "steps", "batch", "axis", "tuned")
_LEFT = ("trial", "axis", "tuned", "id")


def _column_widths(p: Plan) -> dict[str, int]:
    """Each column's widest cell (a header may wrap at its spaces)."""
    rows = [_cells(r) for r in p.rows] + [_total_cells(p)]
    return {
        col: max(max(len(word) for word in col.split()), *(len(row[i]) for row in rows))
        for i, col in enumerate(_COLUMNS)
    }


def plan_columns(p: Plan, width: int | None) -> list[str]:
    """The columns that fit `width` characters with no number cut (None: all), each its widest cell plus
    rich's padding and border (3 characters); a trial name may fold onto a second line."""
    need = _column_widths(p)
    columns = list(_COLUMNS)
    for col in _FOLD_ORDER:
        if width is None or sum(need[c] + 3 for c in columns) + 1 <= width:
            break
        columns.remove(col)
    return columns


def render_plan(p: Plan, width: int | None = None) -> Table:
    """A rich table, one row per planned row, with a totals row: the columns that fit `width` (`plan_columns`;
    the caption names those left out), all with None."""
    columns = plan_columns(p, width)
    left_out = [c for c in _COLUMNS if c not in columns]
    caption = _caption(p) + (f"; not shown: {', '.join(left_out)} (--wide, --json)" if left_out else "")
    table = Table(title=f"sweep {p.sweep}: plan", caption=caption, show_lines=False)
    keep = [i for i, c in enumerate(_COLUMNS) if c in columns]
    need = _column_widths(p)
    for i in keep:
        col = _COLUMNS[i]
        justify = "left" if col in _LEFT else "right"
        header = col.replace(" ", "\n")  # "N (non-emb)" on two lines: the numbers under it are short
        if col in ("trial", "tuned"):  # text: folds onto more lines where the numbers need the room
            table.add_column(header, justify=justify, overflow="fold")
        else:  # a name or a number is never cut
            table.add_column(header, justify=justify, no_wrap=True, min_width=need[col])
    for r in p.rows:
        cells = _cells(r)
        table.add_row(*(cells[i] for i in keep), style="dim" if r.duplicate else None)
    table.add_section()
    totals = _total_cells(p)
    table.add_row(*(totals[i] for i in keep), style="bold")
    return table


def plan_text(p: Plan) -> str:
    """Plain-text version of `render_plan` (logs, files, terminals without rich)."""
    rows = [list(_COLUMNS)] + [_cells(r) for r in p.rows] + [_total_cells(p)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return f"sweep {p.sweep}: plan\n" + "\n".join(lines) + f"\n{_caption(p)}\n"
