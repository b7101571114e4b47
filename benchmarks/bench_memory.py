"""Peak memory per worker against the planner's estimate, and the planner's time estimate against measured
training time on a smoke sweep.

    .venv/bin/python benchmarks/bench_memory.py [--json-out benchmarks/results/memory.json]
    .venv/bin/python benchmarks/bench_memory.py --sizes 128 --stages 1 --no-smoke      # quick, ~30 s
    .venv/bin/python benchmarks/bench_memory.py --sizes 128,256,384 --stages 0,1,2,3 --workers 1,2

Memory. Each configuration (family x d_model x ZeRO stage x workers) trains --steps optimizer steps in a
fresh process (`--workers 2`: two gloo processes, as `launch_trial` runs them), through the trainer's own
`Trial` (DeepSpeed engine, fp32, torch_adam). Each process reports its peak resident set (VmHWM from
/proc/self/status) and its resident set after the imports (torch, DeepSpeed, the project) and one step of
a throwaway 4x4 DeepSpeed engine (the first deepspeed.initialize imports torch._dynamo and more), before
the model exists: the runtime baseline. Two steps at least: the second step's activations coexist with
the optimizer states created by the first. Compared with `orchestrator.plan.memory_per_worker` (what
`ebtscale sweep plan` prints per worker):
- total: measured peak RSS vs the plan (model states + activations + RUNTIME_OVERHEAD_BYTES);
- model part: measured peak - runtime baseline vs the plan without its runtime constant;
- runtime baseline vs the plan's RUNTIME_OVERHEAD_BYTES.

Time. The rows of a smoke sweep spec (default sweeps/smoke-params.yaml) are planned with
`orchestrator.plan.plan` (throughput calibrated here, as `ebtscale sweep plan` does) and then trained one
after another in this process with `train_trial` (1 torch thread, as a sweep worker with cpus_per_worker=1,
no MLflow; the first --smoke-steps steps of each, the plan's seconds scaled to them); the plan's seconds
are compared with each trial's train_time_s (target: within 25%). The
calibration is best-of GEMM timing (unloaded speed) and the trials run on a shared machine, so the load
during the run is reported and CPU time is given beside wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _bench import (
    REPO,
    RESULTS,
    Clock,
    LoadMonitor,
    console,
    cpu_environment,
    machine_info,
    print_targets,
    use_thread_cpu_clock,
    write_json,
)

cpu_environment()

PAPER_SHAPES = {128: (2, 2), 256: (4, 4), 384: (6, 6)}  # d_model -> n_layers, n_heads (4xs, 3xs, xxs)
DEFAULT_MICRO_BATCH = {128: 8, 256: 4, 384: 2}
TARGET_TIME_ERROR = 0.25  # issue: planner estimates within 25%
MIB = 1 << 20


# ---------------------------------------------------------------------------------------------- child


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _warm_runtime(zero_stage: int) -> None:
    """One step of a throwaway 4x4 DeepSpeed engine: the first deepspeed.initialize imports torch._dynamo,
    optimizer modules and more (hundreds of MiB of code and data). That belongs to the runtime, not to the
    model, so it is paid before the baseline is read."""
    import deepspeed
    import torch

    model = torch.nn.Linear(4, 4)
    config = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}},
        "zero_optimization": {"stage": zero_stage},
    }
    engine, *_ = deepspeed.initialize(model=model, model_parameters=list(model.parameters()), config=config)
    engine.backward(engine(torch.randn(1, 4)).sum())
    engine.step()


def _measure_rank(cfg_json: str, steps: int, out_dir: str) -> None:
    """One worker: imports, Trial, `steps` optimizer steps; writes its RSS figures to out_dir/rank-R.json."""
    import torch

    torch.set_num_threads(1)
    import deepspeed  # noqa: F401 - imported here so that the "after imports" baseline includes it

    from orchestrator import distributed
    from orchestrator.config import TrialConfig
    from orchestrator.trainer import Trial

    cfg = TrialConfig.model_validate_json(cfg_json)
    distributed.init_process_group()
    _warm_runtime(cfg.deepspeed.zero_stage)
    rss_imports = status_kib("VmRSS")
    start = time.perf_counter()
    trial = Trial(cfg, Path(out_dir) / f"trial-{distributed.rank()}", None, progress=False)
    rss_init = status_kib("VmRSS")
    init_s = time.perf_counter() - start
    step_s = []
    for step in range(steps):
        start = time.perf_counter()
        trial._train_step(step)
        step_s.append(time.perf_counter() - start)
    record = {
        "rank": distributed.rank(),
        "rss_after_imports_kib": rss_imports,
        "rss_after_init_kib": rss_init,
        "rss_end_kib": status_kib("VmRSS"),
        "peak_rss_kib": status_kib("VmHWM"),
        "init_s": init_s,
        "step_s": step_s,
    }
    Path(out_dir, f"rank-{distributed.rank()}.json").write_text(json.dumps(record))


def _spawned(cfg_json: str, steps: int, out_dir: str) -> None:
    _measure_rank(cfg_json, steps, out_dir)


def child_main(cfg_json: str, steps: int, out_dir: str) -> None:
    from orchestrator.config import TrialConfig

    workers = TrialConfig.model_validate_json(cfg_json).resources.num_workers
    if workers == 1:
        _measure_rank(cfg_json, steps, out_dir)
    else:
        from orchestrator import distributed

        distributed.spawn(_spawned, workers, args=(cfg_json, steps, out_dir))


# ---------------------------------------------------------------------------------------------- parent


def trial_config(family: str, d: int, stage: int, workers: int, args: argparse.Namespace, out: Path) -> Any:
    from orchestrator.config import parse_trial_config

    layers, heads = PAPER_SHAPES.get(d, (4, max(1, d // 64)))
    micro = args.micro_batch or DEFAULT_MICRO_BATCH.get(d, 2)
    return parse_trial_config(
        {
            "name": f"mem-{family}-d{d}-z{stage}-w{workers}",
            "model": {
                "family": family,
                "d_model": d,
                "n_layers": layers,
                "n_heads": heads,
                "vocab_size": args.vocab,
                "context_length": args.context,
            },
            "data": {"source": "stdlib", "tokenizer": "bpe", "vocab_size": args.vocab},
            "train": {
                "tokens": micro * workers * args.context * 100,
                "global_batch_size": micro * workers,
                "micro_batch_size": micro,
                "eval_every": 10**6,
                "checkpoint_every": 10**6,
            },
            "deepspeed": {"zero_stage": stage, "precision": "fp32"},
            "resources": {"num_workers": workers, "cpus_per_worker": 1},
            "output_dir": str(out),
        }
    )


def plan_memory(cfg: Any) -> dict[str, float]:
    from model.flops import count_params
    from orchestrator import plan

    n = count_params(cfg.model)["total"]
    states = plan.model_state_bytes(
        n, cfg.deepspeed.zero_stage, cfg.resources.num_workers, plan.precision(cfg)
    )
    activations = plan.activation_bytes(cfg)
    return {
        "params": n,
        "states_bytes": states,
        "activation_bytes": activations,
        "runtime_bytes": plan.RUNTIME_OVERHEAD_BYTES,
        "total_bytes": plan.memory_per_worker(cfg, n),
    }


def measure_memory(cfg: Any, steps: int, root: Path) -> dict[str, Any]:
    out = root / cfg.name
    out.mkdir(parents=True)
    cmd = [
        sys.executable,
        __file__,
        "--child",
        cfg.model_dump_json(),
        "--steps",
        str(steps),
        "--out",
        str(out),
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_PORT")}
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob("rank-*.json"))]
    if proc.returncode != 0 or len(ranks) != cfg.resources.num_workers:
        return {"error": (proc.stderr or proc.stdout)[-2000:], "returncode": proc.returncode}
    worst = max(ranks, key=lambda r: r["peak_rss_kib"])
    planned = plan_memory(cfg)
    peak = worst["peak_rss_kib"] * 1024
    model_part = (worst["peak_rss_kib"] - worst["rss_after_imports_kib"]) * 1024
    planned_model = planned["states_bytes"] + planned["activation_bytes"]
    return {
        "config": {
            "family": cfg.model.family,
            "d_model": cfg.model.d_model,
            "n_layers": cfg.model.n_layers,
            "micro_batch": cfg.train.micro_batch_size,
            "context_length": cfg.model.context_length,
            "zero_stage": cfg.deepspeed.zero_stage,
            "num_workers": cfg.resources.num_workers,
        },
        "ranks": ranks,
        "wall_s": time.perf_counter() - start,
        "plan": planned,
        "peak_rss_bytes": peak,
        "rss_after_imports_bytes": worst["rss_after_imports_kib"] * 1024,
        "model_part_bytes": model_part,
        "total_ratio": peak / planned["total_bytes"],
        "model_part_ratio": model_part / planned_model,
    }


def saved_tensors(cfg: Any) -> dict[str, Any]:
    """What autograd keeps for the backward of one micro-batch forward of the plain model (no DeepSpeed),
    by kind: attention matrices (4-D, last two dims >= context), vocabulary-sized tensors (last dim V) and
    the rest (hidden-size activations), each storage counted once, parameters excluded. Normalised like
    the planner: hidden bytes per token x d_model x layer, vocabulary bytes per token x V."""
    import torch

    from model import build_model

    m = cfg.model
    torch.manual_seed(0)
    model = build_model(m)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set[int] = set()
    kinds = {"attention": 0, "vocabulary": 0, "hidden": 0}

    def pack(t: Any) -> Any:
        storage = t.untyped_storage()
        if storage.data_ptr() in seen or storage.data_ptr() in params:
            return t
        seen.add(storage.data_ptr())
        shape = tuple(t.shape)
        if len(shape) == 4 and min(shape[-2:]) >= m.context_length:
            kinds["attention"] += storage.nbytes()
        elif shape and shape[-1] == m.vocab_size:
            kinds["vocabulary"] += storage.nbytes()
        else:
            kinds["hidden"] += storage.nbytes()
        return t

    B, S = cfg.train.micro_batch_size, m.context_length
    x = torch.randint(0, m.vocab_size, (B, S))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x, x, sample_ids=torch.arange(B), step_seed=0)
    planned = plan_memory(cfg)
    return {
        "family": m.family,
        "d_model": m.d_model,
        "micro_batch": B,
        "bytes": kinds,
        "total_bytes": sum(kinds.values()),
        "plan_activation_bytes": planned["activation_bytes"],
        "hidden_bytes_per_token_d_layer": kinds["hidden"] / (B * S * m.d_model * m.n_layers),
        "vocabulary_bytes_per_token_v": kinds["vocabulary"] / (B * S * m.vocab_size),
    }


def smoke_time(spec_path: Path, root: Path, max_steps: int | None) -> dict[str, Any]:
    """Plan the spec (calibrated) and train every distinct trial here, one after another: its first
    `max_steps` steps (the plan's seconds scaled to the steps run), or all of it."""
    import torch

    from orchestrator.plan import plan
    from orchestrator.spec import expand, load_spec
    from orchestrator.trainer import train_trial

    torch.set_num_threads(1)
    spec = load_spec(spec_path)
    trials = expand(spec)
    p = plan(trials)
    rows = []
    for r in p.unique_rows:
        cfg = r.trial.config.model_copy(update={"output_dir": str(root / "smoke")})
        clock = Clock()
        result = train_trial(
            cfg, root / "smoke" / r.trial.name, None, progress=False, stop_after_steps=max_steps
        )
        wall, cpu = clock.read()
        planned = r.seconds * result.steps / r.steps
        rows.append(
            {
                "trial": r.trial.name,
                "family": r.trial.family,
                "steps": result.steps,
                "total_steps": r.steps,
                "flops": r.flops * result.steps / r.steps,
                "planned_s": planned,
                "train_time_s": result.train_time_s,
                "trial_wall_s": wall,
                "trial_cpu_s": cpu,
                "ratio": result.train_time_s / planned if planned else float("nan"),
                "status": result.status,
            }
        )
    planned = sum(r["planned_s"] for r in rows)
    measured = sum(r["train_time_s"] for r in rows)
    return {
        "spec": str(spec_path),
        "throughput_flops_per_worker": p.throughput_flops,
        "throughput_source": p.throughput_source,
        "rows": rows,
        "planned_total_s": planned,
        "measured_total_s": measured,
        "total_ratio": measured / planned,
        "rows_within_target": sum(abs(r["ratio"] - 1) <= TARGET_TIME_ERROR for r in rows),
        "met": abs(measured / planned - 1) <= TARGET_TIME_ERROR,
    }


def render(result: dict[str, Any]) -> None:
    from rich.table import Table

    out = console()
    t = Table(title="peak RSS per worker vs the planner's estimate (MiB)")
    for col in (
        "family",
        "d",
        "L",
        "batch",
        "ZeRO",
        "workers",
        "params",
        "peak RSS",
        "plan",
        "ratio",
        "after imports",
        "model part",
        "plan model part",
        "ratio",
    ):
        t.add_column(col, justify="left" if col == "family" else "right")
    for m in result["memory"]:
        if "error" in m:
            last = [line for line in m["error"].splitlines() if line.strip()][-1:] or ["?"]
            t.add_row("error", "", "", "", "", "", "", last[0][:60])
            continue
        c, p = m["config"], m["plan"]
        t.add_row(
            c["family"],
            str(c["d_model"]),
            str(c["n_layers"]),
            f"{c['micro_batch']}x{c['context_length']}",
            str(c["zero_stage"]),
            str(c["num_workers"]),
            f"{p['params'] / 1e6:.2f} M",
            f"{m['peak_rss_bytes'] / MIB:.0f}",
            f"{p['total_bytes'] / MIB:.0f}",
            f"{m['total_ratio']:.2f}",
            f"{m['rss_after_imports_bytes'] / MIB:.0f}",
            f"{m['model_part_bytes'] / MIB:.0f}",
            f"{(p['states_bytes'] + p['activation_bytes']) / MIB:.0f}",
            f"{m['model_part_ratio']:.2f}",
        )
    out.print(t)
    a = Table(
        title="autograd saved tensors of one micro-batch (plain model) vs the plan's activation term (MiB)"
    )
    for col in (
        "family",
        "d",
        "batch",
        "hidden",
        "attention TxT",
        "vocabulary",
        "total",
        "plan",
        "hidden B/tok/d/L",
    ):
        a.add_column(col, justify="left" if col == "family" else "right")
    a.add_column("vocab B/tok/V", justify="right")
    for r in result.get("saved_tensors", []):
        b = r["bytes"]
        a.add_row(
            r["family"],
            str(r["d_model"]),
            str(r["micro_batch"]),
            f"{b['hidden'] / MIB:.0f}",
            f"{b['attention'] / MIB:.0f}",
            f"{b['vocabulary'] / MIB:.0f}",
            f"{r['total_bytes'] / MIB:.0f}",
            f"{r['plan_activation_bytes'] / MIB:.0f}",
            f"{r['hidden_bytes_per_token_d_layer']:.0f}",
            f"{r['vocabulary_bytes_per_token_v']:.0f}",
        )
    out.print(a)
    out.print(
        "plan coefficients: hidden 68 B/token/d/layer (fp32), x 2 x steps for the EBT; "
        "vocabulary 8 B/token/V, x steps for the EBT; attention matrices: none"
    )
    smoke = result.get("smoke")
    if smoke:
        s = Table(
            title=f"planner time vs measured train_time_s: {Path(smoke['spec']).name} "
            f"({smoke['throughput_flops_per_worker']:.3g} FLOP/s per worker, {smoke['throughput_source']})"
        )
        for col in (
            "trial",
            "steps",
            "FLOPs",
            "planned s",
            "train_time_s",
            "measured/planned",
            "trial wall s",
        ):
            s.add_column(col, justify="left" if col == "trial" else "right")
        for r in smoke["rows"]:
            s.add_row(
                r["trial"],
                f"{r['steps']}/{r['total_steps']}",
                f"{r['flops']:.3g}",
                f"{r['planned_s']:.1f}",
                f"{r['train_time_s']:.1f}",
                f"{r['ratio']:.2f}",
                f"{r['trial_wall_s']:.1f}",
            )
        s.add_section()
        s.add_row(
            "total",
            "",
            "",
            f"{smoke['planned_total_s']:.1f}",
            f"{smoke['measured_total_s']:.1f}",
            f"{smoke['total_ratio']:.2f}",
            "",
            style="bold",
        )
        out.print(s)
    print_targets(out, result)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--json-out", type=Path, default=RESULTS / "memory.json")
    parser.add_argument("--sizes", default="128,256", help="d_model values (paper shapes: 128, 256, 384)")
    parser.add_argument("--families", default="transformer_pp,ebt")
    parser.add_argument("--stages", default="0,3", help="ZeRO stages")
    parser.add_argument("--workers", default="1", help="workers per trial, e.g. 1,2")
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--micro-batch", type=int, default=None, help="default: 8, 4, 2 for 128, 256, 384")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2, help="memory runs at once (each its own process)")
    parser.add_argument("--smoke-spec", type=Path, default=REPO / "sweeps" / "smoke-params.yaml")
    parser.add_argument(
        "--smoke-steps",
        type=int,
        default=50,
        help="steps trained per smoke trial (0: all; smoke-params: 125)",
    )
    parser.add_argument("--no-smoke", action="store_true", help="skip the planner time check")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args.child, args.steps, args.out)
        return
    assert args.steps >= 2, "--steps must be >= 2 (the second step's activations meet the optimizer states)"

    use_thread_cpu_clock(True)
    load = LoadMonitor()
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        root = Path(tmp)
        configs = [
            trial_config(family, int(d), int(stage), int(w), args, root)
            for family in args.families.split(",")
            for d in args.sizes.split(",")
            for stage in args.stages.split(",")
            for w in args.workers.split(",")
        ]
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            memory = list(pool.map(lambda c: measure_memory(c, args.steps, root), configs))
        seen: set[tuple[str, int]] = set()
        saved = []
        for c in configs:
            if (c.model.family, c.model.d_model) not in seen:
                seen.add((c.model.family, c.model.d_model))
                saved.append(saved_tensors(c))
        smoke = None if args.no_smoke else smoke_time(args.smoke_spec, root, args.smoke_steps or None)
    ok = [m for m in memory if "error" not in m]
    result: dict[str, Any] = {
        "benchmark": "memory",
        "machine": machine_info(),
        "args": {k: str(v) for k, v in vars(args).items() if k not in ("child", "out", "json_out")},
        "memory": memory,
        "saved_tensors": saved,
        "smoke": smoke,
        "load": load.summary(),
    }
    targets = []
    if ok:
        ratios = [m["total_ratio"] for m in ok]
        model_ratios = [m["model_part_ratio"] for m in ok]
        targets.append(
            {
                "name": "planner memory per worker >= measured peak RSS (the plan must not under-estimate)",
                "value": f"measured/plan {min(ratios):.2f}-{max(ratios):.2f}; "
                f"model part measured/plan {min(model_ratios):.2f}-{max(model_ratios):.2f}",
                "met": max(ratios) <= 1.0,
            }
        )
    if smoke:
        targets.append(
            {
                "name": f"planner time within {TARGET_TIME_ERROR:.0%} of train_time_s (smoke sweep total)",
                "value": f"measured/planned {smoke['total_ratio']:.2f}; rows within 25%: "
                f"{smoke['rows_within_target']}/{len(smoke['rows'])}",
                "met": smoke["met"],
            }
        )
    result["targets"] = targets
    render(result)
    write_json(args.json_out, result)
    console().print(f"wrote {args.json_out}")
    if len(ok) != len(memory):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
