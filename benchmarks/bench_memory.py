"""Peak memory per worker against the planner's estimate (`orchestrator.sweep.plan.memory_terms`), and what
autograd keeps for the backward against the planner's activation terms. (The planner's time estimate:
bench_planner.py.)

    .venv/bin/python benchmarks/bench_memory.py [--json-out benchmarks/results/memory.json]
    .venv/bin/python benchmarks/bench_memory.py --sizes 128 --stages 1 --ebt-extra ""      # quick, ~40 s
    .venv/bin/python benchmarks/bench_memory.py --sizes 128,256,384 --stages 0,1,2,3 --workers 1,2
    .venv/bin/python benchmarks/bench_memory.py --smoke     # every part at tiny sizes (make test)

Memory. Each configuration (family x d_model x ZeRO stage x workers, and for the EBT x --ebt-variants:
reuse_observed_kv false ("full") and true ("reuse"); --ebt-extra adds descent variations at the first size
and stage: 3 steps, 3 steps with truncate_to_last_step) trains --steps optimizer steps in a fresh process
(`--workers 2`: two gloo processes, as `launch_trial` runs them), through the trainer's own `Trial`
(DeepSpeed engine, fp32). Each process reports its peak resident set (VmHWM from /proc/self/status) and its
resident set after the imports (torch, DeepSpeed, the project) and one step of a throwaway 4x4 DeepSpeed
engine (the first deepspeed.initialize imports torch._dynamo and more), before the model exists: the
runtime baseline. Two steps at least: the second step's activations coexist with the optimizer states
created by the first. Compared with the plan (what `ebtscale sweep plan` prints per worker):
- total: measured peak RSS vs the plan's total (target: within 25%);
- model part: measured peak - runtime baseline vs the plan without its runtime constant;
- runtime baseline vs the plan's runtime constant.

Saved tensors. For each (family, d_model, EBT variant), one micro-batch forward of the plain model (no
DeepSpeed): the autograd graph is walked from the loss and the distinct storages its nodes keep are summed
(parameters excluded), by kind: vocabulary-sized (last dim V), the EBT's attention matrices (a storage of
exactly B x H x queries x keys values for the sequence's row counts) and hidden-size (the rest). The
weight clones of SecondOrderSafe are not in the plain model (the plan's "weights" term is left out here).
Compared with `orchestrator.sweep.plan.activation_terms` (whose coefficients were counted this way).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _bench import (
    LoadMonitor,
    bench_parser,
    bench_trial_config,
    console,
    cpu_environment,
    machine_info,
    parse_bench_args,
    print_targets,
    run_child,
    table,
    write_json,
)

cpu_environment()

DEFAULT_MICRO_BATCH = {128: 8, 256: 4, 384: 2}
TARGET_ERROR = 0.25  # issue: planner estimates within 25%
MIB = 1 << 20
# --smoke: two runs (a process each) at d_model 32, context 32, one sequence, the fewest steps the
# measurement allows, one ZeRO stage, one worker: the Transformer++ and, through --ebt-extra, the EBT variant
# that sets every EBT field the variants touch. Left out: two-worker runs (--workers 2, the gloo path)
SMOKE = {
    "sizes": "32",
    "stages": "1",
    "workers": "1",
    "ebt_variants": "",
    "ebt_extra": "reuse-k3-trunc",
    "context": 32,
    "micro_batch": 1,
    "steps": 2,
}


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

    from orchestrator.config import TrialConfig
    from orchestrator.train import distributed
    from orchestrator.train.trainer import Trial

    cfg = TrialConfig.model_validate_json(cfg_json)
    distributed.init_process_group()
    _warm_runtime(cfg.deepspeed.zero_stage)
    rss_imports = status_kib("VmRSS")
    start = time.perf_counter()
    folder = Path(out_dir) / f"trial-{distributed.rank()}"
    trial = Trial(cfg.model_copy(update={"trial_dir": str(folder)}), None, progress=False)
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
        from orchestrator.train import distributed

        distributed.spawn(_spawned, workers, args=(cfg_json, steps, out_dir))


# ---------------------------------------------------------------------------------------------- parent


EBT_VARIANTS = {  # name -> EBTConfig fields (others: the config's defaults)
    "full": {"reuse_observed_kv": False},
    "reuse": {"reuse_observed_kv": True},
    "full-k3": {"reuse_observed_kv": False, "mcmc_steps": 3},
    "reuse-k3": {"reuse_observed_kv": True, "mcmc_steps": 3},
    "full-k3-trunc": {"reuse_observed_kv": False, "mcmc_steps": 3, "truncate_to_last_step": True},
    "reuse-k3-trunc": {"reuse_observed_kv": True, "mcmc_steps": 3, "truncate_to_last_step": True},
}


def trial_config(
    family: str, d: int, stage: int, workers: int, args: argparse.Namespace, out: Path, variant: str = ""
) -> Any:
    return bench_trial_config(
        f"mem-{family}{'-' + variant if variant else ''}-d{d}-z{stage}-w{workers}",
        family,
        d,
        vocab=args.vocab,
        context=args.context,
        micro_batch=args.micro_batch or DEFAULT_MICRO_BATCH.get(d, 2),
        steps=100,
        output_dir=out,
        zero_stage=stage,
        workers=workers,
        ebt=EBT_VARIANTS[variant] if family == "ebt" else None,
    )


def variant_of(cfg: Any) -> str:
    """The EBT_VARIANTS name of a config ('' for the Transformer++)."""
    return cfg.name.split("-d")[0].removeprefix(f"mem-{cfg.model.family}").lstrip("-")


def plan_memory(cfg: Any) -> dict[str, Any]:
    from model.family import count_params
    from orchestrator.sweep import plan

    n = count_params(cfg.model)["total"]
    terms = plan.memory_terms(cfg, n)
    return {
        "params": n,
        "terms": terms,
        "activation_terms": plan.activation_terms(cfg),
        "model_bytes": terms["total"] - terms["runtime"],
        "total_bytes": terms["total"],
    }


def measure_memory(cfg: Any, steps: int, root: Path) -> dict[str, Any]:
    out = root / cfg.name
    start = time.perf_counter()
    proc = run_child(__file__, cfg, steps, out)
    ranks = [json.loads(p.read_text()) for p in sorted(out.glob("rank-*.json"))]
    if proc.returncode != 0 or len(ranks) != cfg.resources.num_workers:
        return {"error": (proc.stderr or proc.stdout)[-2000:], "returncode": proc.returncode}
    worst = max(ranks, key=lambda r: r["peak_rss_kib"])
    planned = plan_memory(cfg)
    peak = worst["peak_rss_kib"] * 1024
    model_part = (worst["peak_rss_kib"] - worst["rss_after_imports_kib"]) * 1024
    planned_model = planned["model_bytes"]
    return {
        "config": {
            "family": cfg.model.family,
            "variant": variant_of(cfg),
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


def reachable_saved(loss: Any, exclude: set[int]) -> dict[int, tuple[tuple[int, ...], int]]:
    """Distinct storages kept by the autograd graph behind `loss` (each node's `_saved_*` tensors), except
    those in `exclude` (parameters): storage pointer -> (a shape it is saved with, bytes)."""
    import torch

    kept: dict[int, tuple[tuple[int, ...], int]] = {}
    stack, visited = [loss.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in visited:
            continue
        visited.add(node)
        for attr in dir(node):
            if not attr.startswith("_saved_"):
                continue
            try:
                value = getattr(node, attr)
            except Exception:  # some saved slots cannot be read back (freed, or not tensors)
                continue
            for t in value if isinstance(value, tuple | list) else [value]:
                if isinstance(t, torch.Tensor) and t.numel() > 1:
                    storage = t.untyped_storage()
                    ptr = storage.data_ptr()
                    if ptr not in exclude and storage.nbytes() > kept.get(ptr, ((), 0))[1]:
                        kept[ptr] = (tuple(t.shape), storage.nbytes())
        stack.extend(nxt for nxt, _ in node.next_functions)
    return kept


def saved_tensors(cfg: Any) -> dict[str, Any]:
    """What autograd keeps for the backward of one micro-batch forward of the plain model (no DeepSpeed),
    by kind, against the plan's activation terms (see the module docstring)."""
    import torch

    from model import build_model
    from model.flops import candidate_blocks

    m = cfg.model
    torch.manual_seed(0)
    model = build_model(m)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    B, S, H = cfg.train.micro_batch_size, m.context_length, m.n_heads
    P = m.ebt.n_step_tokens if m.family == "ebt" else 0
    queries, keys = {S, P + S, P + 2 * S}, {P + S, P + 2 * S}
    attention_sizes = {B * H * q * k * 4 for q in queries for k in keys}
    if m.family == "ebt":  # the candidate attention's blocks: rows x (their observed keys + itself)
        attention_sizes |= {B * H * (end - start) * (k + 1) * 4 for start, end, k in candidate_blocks(S, P)}
    x = torch.randint(0, m.vocab_size, (B, S))
    loss = model(x, x, sample_ids=torch.arange(B), step_seed=0)
    kinds = {"hidden": 0, "attention": 0, "vocabulary": 0}
    for shape, nbytes in reachable_saved(loss, params).values():
        if shape and shape[-1] == m.vocab_size:
            kinds["vocabulary"] += nbytes
        elif m.family == "ebt" and nbytes in attention_sizes:  # the Transformer++'s fused kernel keeps none
            kinds["attention"] += nbytes
        else:
            kinds["hidden"] += nbytes
    del loss
    planned = plan_memory(cfg)["activation_terms"]
    return {
        "family": m.family,
        "variant": variant_of(cfg),
        "d_model": m.d_model,
        "micro_batch": B,
        "bytes": kinds,
        "total_bytes": sum(kinds.values()),
        "plan": {k: planned[k] for k in ("hidden", "attention", "vocabulary")},
        "plan_total_bytes": planned["hidden"] + planned["attention"] + planned["vocabulary"],
        "ratio": sum(kinds.values()) / (planned["hidden"] + planned["attention"] + planned["vocabulary"]),
    }


def render(result: dict[str, Any]) -> None:
    out = console()
    t = table(
        "peak RSS per worker vs the planner's estimate (MiB)",
        (
            "family",
            "variant",
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
        ),
        left=("family", "variant"),
    )
    for m in result["memory"]:
        if "error" in m:
            last = [line for line in m["error"].splitlines() if line.strip()][-1:] or ["?"]
            t.add_row("error", "", "", "", "", "", "", "", last[0][:60])
            continue
        c, p = m["config"], m["plan"]
        t.add_row(
            "TPP" if c["family"] == "transformer_pp" else "EBT",
            c["variant"],
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
            f"{p['model_bytes'] / MIB:.0f}",
            f"{m['model_part_ratio']:.2f}",
        )
    out.print(t)
    a = table(
        "autograd saved tensors of one micro-batch (plain model) vs the plan's saved terms (MiB)",
        (
            "family",
            "variant",
            "d",
            "batch",
            "hidden",
            "plan",
            "attention",
            "plan",
            "vocabulary",
            "plan",
            "total / plan",
        ),
        left=("family", "variant"),
    )
    for r in result.get("saved_tensors", []):
        b, p = r["bytes"], r["plan"]
        a.add_row(
            "TPP" if r["family"] == "transformer_pp" else "EBT",
            r["variant"],
            str(r["d_model"]),
            str(r["micro_batch"]),
            *(f"{x / MIB:.0f}" for k in ("hidden", "attention", "vocabulary") for x in (b[k], p[k])),
            f"{r['ratio']:.3f}",
        )
    out.print(a)
    print_targets(out, result)


def main() -> None:
    parser = bench_parser(__doc__, "memory.json")
    parser.add_argument("--sizes", default="128,256", help="d_model values (paper shapes: 128, 256, 384)")
    parser.add_argument("--families", default="transformer_pp,ebt")
    parser.add_argument("--stages", default="0,1,3", help="ZeRO stages")
    parser.add_argument("--workers", default="1", help="workers per trial, e.g. 1,2")
    parser.add_argument(
        "--ebt-variants",
        default="full,reuse",
        help=f"EBT variants of every size/stage: {', '.join(EBT_VARIANTS)}",
    )
    parser.add_argument(
        "--ebt-extra",
        default="full-k3,reuse-k3,full-k3-trunc,reuse-k3-trunc",
        help="EBT variants at the first size and stage only ('' for none)",
    )
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--micro-batch", type=int, default=None, help="default: 8, 4, 2 for 128, 256, 384")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2, help="memory runs at once (each its own process)")
    parser.add_argument("--no-saved", action="store_true", help="skip the saved-tensor count")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parse_bench_args(parser, SMOKE)
    if args.child:
        child_main(args.child, args.steps, args.out)
        return
    assert args.steps >= 2, "--steps must be >= 2 (the second step's activations meet the optimizer states)"

    load = LoadMonitor()
    sizes = [int(d) for d in args.sizes.split(",")]
    stages = [int(z) for z in args.stages.split(",")]
    workers = [int(w) for w in args.workers.split(",")]
    variants = [v for v in args.ebt_variants.split(",") if v]
    extra = [v for v in args.ebt_extra.split(",") if v]
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        root = Path(tmp)
        configs = []
        for family in args.families.split(","):
            for d in sizes:
                for stage in stages:
                    for w in workers:
                        for v in variants if family == "ebt" else [""]:
                            configs.append(trial_config(family, d, stage, w, args, root, v))
        if "ebt" in args.families.split(","):
            configs += [trial_config("ebt", sizes[0], stages[0], workers[0], args, root, v) for v in extra]
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            memory = list(pool.map(lambda c: measure_memory(c, args.steps, root), configs))
    saved = []
    if not args.no_saved:
        seen: set[tuple[str, str, int]] = set()
        for c in configs:
            key = (c.model.family, variant_of(c), c.model.d_model)
            if key not in seen:
                seen.add(key)
                saved.append(saved_tensors(c))
    ok = [m for m in memory if "error" not in m]
    result: dict[str, Any] = {
        "benchmark": "memory",
        "machine": machine_info(),
        "args": {k: str(v) for k, v in vars(args).items() if k not in ("child", "out", "json_out")},
        "memory": memory,
        "saved_tensors": saved,
        "load": load.summary(),
    }
    targets = []
    if ok:
        ratios = [m["total_ratio"] for m in ok]
        model_ratios = [m["model_part_ratio"] for m in ok]
        within = sum(abs(r - 1) <= TARGET_ERROR for r in ratios)
        targets.append(
            {
                "name": f"planner memory per worker within {TARGET_ERROR:.0%} of the peak RSS (every row)",
                "value": f"measured/plan {min(ratios):.2f}-{max(ratios):.2f}, "
                f"{within}/{len(ratios)} rows within; model part measured/plan "
                f"{min(model_ratios):.2f}-{max(model_ratios):.2f}",
                "met": within == len(ratios),
            }
        )
    if saved:
        ratios = [r["ratio"] for r in saved]
        targets.append(
            {
                "name": "plan's saved-tensor terms vs autograd's saved storages (one micro-batch)",
                "value": f"measured/plan {min(ratios):.3f}-{max(ratios):.3f}",
                "met": all(abs(r - 1) <= 0.05 for r in ratios),
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
