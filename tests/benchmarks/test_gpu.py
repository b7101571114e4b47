"""The GPU path of the throughput benchmark, tested as far as a CPU allows: device/precision choice, the SDPA
double-backward probe, benchmarks/gpu.sh's arguments and its --dry-run (the benchmark on CPU, the sweep's
plan). GPU figures themselves are measured only where a GPU is (benchmarks/NOTES.md)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import REPO, benchmark_module


@pytest.fixture(scope="module")
def bench() -> Iterator[Any]:
    with benchmark_module("bench_throughput") as module:
        yield module


def test_picks_cuda_in_bf16_when_a_gpu_is_visible(bench: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert bench.pick_device("auto") == ("cuda", torch.bfloat16)
    assert bench.pick_device("cpu") == ("cpu", torch.float32)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.pick_device("auto") == ("cpu", torch.float32)
    with pytest.raises(SystemExit):
        bench.pick_device("cuda")


def test_sdpa_double_backward_probe_on_cpu(bench: Any) -> None:
    """What the EBT's kernels choice rests on: on CPU the math kernel has a double backward, flash only a
    first-order one (which is all the observed stream needs)."""
    found = bench.sdpa_double_backward("cpu", torch.float32)
    assert found["math"] == "double backward"
    assert found["flash_attention"] == "first order only"


def run_gpu_sh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu.sh"), *args], cwd=REPO, capture_output=True, text=True
    )


def test_gpu_sh_rejects_unknown_arguments() -> None:
    result = run_gpu_sh("--bogus")
    assert result.returncode == 2 and "unknown argument" in result.stderr
    assert "--dry-run" in run_gpu_sh("--help").stdout


def test_gpu_sh_dry_run_runs_the_cpu_side_into_one_folder(tmp_path: Path, bench: Any) -> None:
    """The dry run: the GPU commands printed, then the benchmark on CPU with compile and the chunked CE forced
    on and the eager twins beside, the summary from its JSON (every column, the three targets), the plan."""
    out = tmp_path / "gpu"
    result = run_gpu_sh("--dry-run", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    for arg in ("--device cuda", "--sizes 1024x24,768x12,384x6", "--compile auto", "--chunked-ce auto"):
        assert arg in result.stdout  # what a GPU run would do
    assert "sweep run" in result.stdout and "--summary" in result.stdout

    plain = json.loads((out / "throughput-plain.json").read_text())
    assert plain["device"] == "cpu" and plain["dtype"] == "float32" and plain["complete"]
    (size,) = plain["sizes"]
    assert (size["d_model"], size["n_layers"], size["errors"]) == (64, 1, {})
    ours, twins = ("transformer_pp", "ebt_reuse"), ("transformer_pp_eager", "ebt_reuse_eager")
    assert {*ours, *twins, "ebt"} == set(size["step_s_best"]) == set(size["first_step_s"])
    for v in ours:  # forced on, and a chunk of 16 positions: the chunked CE really chunks the 2 x 32
        assert size["kernels"][v] == {"compile": True, "chunked_ce": True, "ce_chunk_rows": 16}
    for v in twins:
        assert (size["kernels"][v]["compile"], size["kernels"][v]["chunked_ce"]) == (False, False)
    assert size["kernels"]["ebt"]["compile"] is True  # as asked (the full recompute compiles nothing of it)
    assert size["peak_rss_bytes"] > 0 and size["micro_batch_rule"] == "fixed"
    counted = size["counted_flops_per_token"]  # eager code only: the compiled ones take their twin's count
    assert set(counted) == {*twins, "ebt"}
    assert counted["transformer_pp_eager"] < counted["ebt_reuse_eager"] < counted["ebt"]
    r = size["ratios"]
    assert r["ebt_reuse overhead"] == pytest.approx(
        r["ebt_reuse/transformer_pp"] / r["ebt_reuse/transformer_pp FLOP ratio"]
    )
    assert r["ebt_reuse/ebt counted FLOPs"] == counted["ebt_reuse_eager"] / counted["ebt"]

    summary = (out / "summary.txt").read_text()
    header = next(line for line in summary.splitlines() if line.startswith("| V"))
    assert [c.strip() for c in header.strip("|").split("|")] == list(bench.SUMMARY_COLUMNS)
    row = next(line for line in summary.splitlines() if line.startswith("| 64"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == len(bench.SUMMARY_COLUMNS) and cells[1] == "64/1" and cells[2] == "2/2"
    assert cells[bench.SUMMARY_COLUMNS.index("authors s")] == "-"  # no --authors-repo
    assert all(
        cells[bench.SUMMARY_COLUMNS.index(c)] != "-" for c in ("T++ MFU", "EBT MFU", "eager EBT s (x)")
    )
    targets = [line for line in summary.splitlines() if line.startswith("target: ")]
    assert len(targets) == 3 and all(t.endswith("-> not measurable") for t in targets)
    assert all("768/12: not run" in t and "cpu run" in t for t in targets)  # tiny shape only

    spec = (out / "gpu-sweep.yaml").read_text()
    assert "gpus_per_worker: 0.5" in spec and f"output_dir: {out}/sweep" in spec
    plan = (out / "sweep-plan.txt").read_text()
    assert "total: 2 trials" in plan


def test_size_spec(bench: Any) -> None:
    assert bench.parse_sizes("1024x24,768X12, 384") == [(1024, 24), (768, 12), (384, 6)]
    assert bench.parse_sizes("128,512") == [(128, 2), (512, 4)]  # the paper's depth, else 4
    assert bench.parse_sizes("128,512x2", layers=3) == [(128, 3), (512, 2)]  # --layers for a bare d_model
    for bad in ("768x", "x12", "big", "0x4", "768x0", "768,"):
        with pytest.raises(ValueError, match="size"):
            bench.parse_sizes(bad)


def plain_args(bench: Any, **kw: Any) -> Any:
    import argparse

    defaults = dict(
        context=256, zero_stage=1, compile="auto", chunked_ce="auto", ce_chunk_rows=1024, micro_batch="auto"
    )
    defaults |= dict(max_micro_batch=64, memory_fraction=0.85, eager_too=True, authors_repo=Path("theirs"))
    defaults |= dict(variants=bench.PLAIN_VARIANTS)
    return argparse.Namespace(**(defaults | kw))


@pytest.mark.parametrize(
    ("device", "vocab", "flags", "expected"),
    [
        ("cuda", 50277, {}, (True, True)),  # auto on CUDA: compile, and the chunked CE from V 16,384
        ("cuda", 512, {}, (True, False)),
        ("cpu", 50277, {}, (False, False)),  # auto elsewhere: the plain code
        ("cpu", 512, {"compile": "on", "chunked_ce": "on"}, (True, True)),
        ("cuda", 50277, {"compile": "off"}, (False, True)),
    ],
)
def test_kernels_resolved_as_the_trainer_resolves_them(
    bench: Any, device: str, vocab: int, flags: dict[str, str], expected: tuple[bool, bool]
) -> None:
    args = plain_args(bench, **flags)
    for v in ("transformer_pp", "ebt_reuse"):
        cfg = bench.plain_trial(v, 256, 4, vocab, 8, args, device)
        assert (cfg.model.kernels.compile, cfg.model.kernels.chunked_ce) == expected
        assert cfg.model.kernels == cfg.kernels(device)  # TrialConfig.kernels: already resolved, kept
        twin = bench.plain_trial(v + bench.EAGER, 256, 4, vocab, 8, args, device).model.kernels
        assert (twin.compile, twin.chunked_ce) == (False, False)
    assert cfg.precision() == ("bf16" if device == "cuda" else "fp32")  # what the memory model counts in


def test_auto_micro_batch_from_the_planner_memory_model(bench: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """--micro-batch auto at 1024/24 on an 80 GB GPU: per family the largest power of two whose planned bytes
    fit; the EBTs share one, the authors' counted as our full recompute (it keeps the same graph)."""
    monkeypatch.setattr(bench, "memory_budget", lambda device, fraction: fraction * 80e9)
    args = plain_args(bench, variants=("transformer_pp", "ebt_reuse", "authors"))
    variants = bench.plain_variants(args)
    assert variants == ["transformer_pp", "ebt_reuse", "authors", "transformer_pp_eager", "ebt_reuse_eager"]
    micro, planned = bench.micro_batches(variants, 1024, 24, 50277, args, "cuda")
    assert micro["transformer_pp"] == micro["transformer_pp_eager"] > micro["ebt_reuse"]
    assert micro["ebt_reuse"] == micro["ebt_reuse_eager"] == micro["authors"]
    assert max(planned.values()) <= 0.85 * 80e9
    assert planned["authors"] > planned["ebt_reuse"]
    bigger = bench.micro_batches(["ebt_reuse", "authors"], 1024, 24, 50277, args, "cuda")[1]
    monkeypatch.setattr(bench, "memory_budget", lambda device, fraction: 1e30)
    assert bench.micro_batches(variants, 1024, 24, 50277, args, "cuda")[0]["authors"] == 64  # the cap
    assert (
        bench.largest_fitting(lambda mb: mb <= 20, 64) == 16
        and bench.largest_fitting(lambda mb: False, 48) == 1
    )
    assert bigger["authors"] == planned["authors"]
    fixed = bench.micro_batches(variants, 1024, 24, 50277, plain_args(bench, micro_batch=4), "cuda")[0]
    assert set(fixed.values()) == {4}


def synthetic(device: str = "cuda", authors: bool = True, **per_shape: dict[str, Any]) -> dict[str, Any]:
    """A plain result at the target shapes that meets every target, with per-shape overrides."""
    sizes = []
    for d, layers in ((768, 12), (1024, 24)):
        s = {"d_model": d, "n_layers": layers, "vocab": 50277, "errors": {}}
        s |= {"mfu": {"transformer_pp": 0.5}, "ratios": {"ebt_reuse overhead": 1.0, "ebt_reuse/authors": 0.4}}
        over = per_shape.get(f"d{d}", {})
        if over.get("skip"):
            continue
        s["mfu"] |= over.get("mfu", {})
        s["ratios"] |= over.get("ratios", {})
        s["errors"] |= over.get("errors", {})
        for key in over.get("drop", ()):
            s["ratios"].pop(key)
        sizes.append(s)
    args = {"authors_repo": "theirs" if authors else "None"}
    return {"device": device, "args": args, "sizes": sizes}


@pytest.mark.parametrize(
    ("result", "verdicts", "says"),
    [
        (synthetic(), ("met", "met", "met"), "1024/24: 50.0%"),
        (synthetic(d1024={"mfu": {"transformer_pp": 0.44}}), ("NOT met", "met", "met"), "1024/24: 44.0%"),
        (synthetic(d768={"ratios": {"ebt_reuse overhead": 1.06}}), ("met", "NOT met", "met"), "1.06x"),
        (synthetic(d1024={"skip": True}), ("not measurable",) * 3, "1024/24: not run"),
        (
            synthetic(d1024={"drop": ["ebt_reuse/authors"], "errors": {"authors": "OOM at micro-batch 8"}}),
            ("met", "met", "not measurable"),
            "1024/24: OOM at micro-batch 8",
        ),
        (  # a miss at one shape is a miss, whatever the other could not measure
            synthetic(
                d768={"ratios": {"ebt_reuse/authors": 0.7}},
                d1024={"drop": ["ebt_reuse/authors"], "errors": {"authors": "OOM at micro-batch 8"}},
            ),
            ("met", "met", "NOT met"),
            "768/12: 0.70",
        ),
        (
            synthetic(
                authors=False, d768={"drop": ["ebt_reuse/authors"]}, d1024={"drop": ["ebt_reuse/authors"]}
            ),
            ("met", "met", "not measurable"),
            "no --authors-repo",
        ),
        (synthetic(device="cpu"), ("not measurable",) * 3, "cpu run"),
    ],
)
def test_target_verdicts(bench: Any, result: dict[str, Any], verdicts: tuple[str, ...], says: str) -> None:
    targets = bench.plain_targets(result)
    assert tuple(t["verdict"] for t in targets) == verdicts
    assert [t["met"] for t in targets] == [v == "met" for v in verdicts]
    assert any(says in t["value"] for t in targets)


def test_judge(bench: Any) -> None:
    ok = lambda v: v <= 1.0  # noqa: E731
    assert bench.judge({"a": 0.5, "b": 1.0}, ok) == "met"
    assert bench.judge({"a": 0.5, "b": 1.5}, ok) == "NOT met"
    assert bench.judge({"a": 1.5, "b": "OOM"}, ok) == "NOT met"
    assert bench.judge({"a": 0.5, "b": "not run"}, ok) == "not measurable"
    assert bench.judge({}, ok) == "not measurable"


def test_a_variant_that_fails_is_recorded_and_the_others_run(
    bench: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The authors' model failing to build (a missing import, an OOM on a GPU) costs its column only: the
    others are timed, the error is kept, and each partial record is saved on the way."""
    real = bench.plain_step_fn

    def step_fn(variant: str, *a: Any) -> Any:
        if variant == "authors":
            raise ModuleNotFoundError("No module named 'pytorch_lightning'")
        return real(variant, *a)

    monkeypatch.setattr(bench, "plain_step_fn", step_fn)
    args = plain_args(
        bench, context=16, micro_batch=1, eager_too=False, variants=("transformer_pp", "authors")
    )
    args.rounds, args.warmup, args.no_flop_count = 1, 1, True
    saved: list[dict[str, Any]] = []
    out = bench.plain_size(32, 1, 64, args, "cpu", torch.float32, tmp_path, lambda s: saved.append(dict(s)))
    assert set(out["step_s_best"]) == {"transformer_pp"} and saved
    assert out["errors"] == {"authors": "ModuleNotFoundError: No module named 'pytorch_lightning'"}
