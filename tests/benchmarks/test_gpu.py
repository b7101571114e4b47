"""The GPU path of the throughput benchmark, tested as far as a CPU allows: device/precision choice, the SDPA
double-backward probe, benchmarks/gpu.sh's arguments and its --dry-run (the benchmark on CPU, the sweep's
plan). GPU figures themselves are measured only where a GPU is (benchmarks/NOTES.md)."""

from __future__ import annotations

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


def test_gpu_sh_dry_run_runs_the_cpu_side_into_one_folder(tmp_path: Path) -> None:
    out = tmp_path / "gpu"
    result = run_gpu_sh("--dry-run", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--device cuda" in result.stdout and "sweep run" in result.stdout  # what a GPU run would do
    import json

    plain = json.loads((out / "throughput-plain.json").read_text())
    assert plain["device"] == "cpu" and plain["dtype"] == "float32"
    assert {"transformer_pp", "ebt_reuse", "ebt"} <= set(plain["sizes"][0]["step_s_best"])
    counted = plain["sizes"][0]["counted_flops_per_token"]  # the side-by-side's FLOP yardstick
    assert counted["transformer_pp"] < counted["ebt_reuse"] < counted["ebt"]
    assert plain["sizes"][0]["ratios"]["ebt_reuse/ebt counted FLOPs"] == counted["ebt_reuse"] / counted["ebt"]
    spec = (out / "gpu-sweep.yaml").read_text()
    assert "gpus_per_worker: 0.5" in spec and f"output_dir: {out}/sweep" in spec
    plan = (out / "sweep-plan.txt").read_text()
    assert "total: 2 trials" in plan
