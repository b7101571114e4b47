"""Helpers shared by the benchmarks: CPU set-up, the machine's fp32 GEMM peak, machine-load accounting,
tables and JSON output. Imported by the bench_*.py scripts (run as scripts, so this folder is on sys.path).

Load accounting. The machine may be shared (here: 2 cores shared with test runs and Ray clusters), so every
benchmark reports, besides the load average, how many cores *other* processes kept busy during the run:
(machine busy time from /proc/stat - this process tree's CPU time) / wall time. Ratios measured side by side
in one run are robust to that load; absolute times are not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


PAPER_SHAPES = {128: (2, 2), 256: (4, 4), 384: (6, 6)}  # d_model -> n_layers, n_heads (4xs, 3xs, xxs)


def bench_trial_config(
    name: str,
    family: str,
    d: int,
    *,
    vocab: int,
    context: int,
    micro_batch: int,
    steps: int,
    output_dir: Path,
    zero_stage: int = 1,
    workers: int = 1,
    layers: int | None = None,
    ebt: dict[str, Any] | None = None,
) -> Any:
    """A benchmark trial: the paper's shape for d (else `layers` or 4 layers, d/64 heads), the stdlib corpus,
    fp32, one micro-batch per worker per step, `steps` steps, no evaluation or checkpoint on the way."""
    from orchestrator.config import parse_trial_config

    default_layers, heads = PAPER_SHAPES.get(d, (4, max(1, d // 64)))
    model: dict[str, Any] = {
        "family": family,
        "d_model": d,
        "n_layers": layers or default_layers,
        "n_heads": heads,
        "vocab_size": vocab,
        "context_length": context,
    }
    if ebt is not None:
        model["ebt"] = ebt
    return parse_trial_config(
        {
            "name": name,
            "model": model,
            "data": {"source": "stdlib", "tokenizer": "bpe", "vocab_size": vocab},
            "train": {
                "tokens": micro_batch * workers * context * steps,
                "global_batch_size": micro_batch * workers,
                "micro_batch_size": micro_batch,
                "eval_every": 10**6,
                "checkpoint_every": 10**6,
            },
            "deepspeed": {"zero_stage": zero_stage, "precision": "fp32"},
            "resources": {"num_workers": workers, "cpus_per_worker": 1},
            "output_dir": str(output_dir),
        }
    )


def bench_parser(doc: str | None, results_name: str) -> argparse.ArgumentParser:
    """A benchmark's command line: its module docstring as help, --json-out (default
    benchmarks/results/<results_name>) and --smoke (see parse_bench_args)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json-out", type=Path, default=RESULTS / results_name)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, seconds: checks that every part of the script still runs (its numbers mean "
        "nothing); JSON to a temp folder unless --json-out is given",
    )
    return parser


def parse_bench_args(parser: argparse.ArgumentParser, smoke: dict[str, Any]) -> argparse.Namespace:
    """Parse the command line. With --smoke, `smoke` (dest -> value) replaces the defaults, so that flags
    given explicitly still win, and the JSON goes to a fresh temp folder unless --json-out names a file:
    `make test` runs every benchmark this way (tests/benchmarks/test_smoke.py) so that none rots unseen,
    and a smoke run must never overwrite the measured results in benchmarks/results/."""
    args = parser.parse_args()
    if not args.smoke:
        return args
    unknown = set(smoke) - {action.dest for action in parser._actions}
    assert not unknown, f"smoke settings for options the script does not have: {sorted(unknown)}"
    name = Path(parser.get_default("json_out")).name
    parser.set_defaults(**smoke, json_out=None)
    args = parser.parse_args()
    if args.json_out is None:
        args.json_out = Path(tempfile.mkdtemp(prefix="bench-smoke-")) / name
    return args


def cpu_environment() -> None:
    """Environment every benchmark runs in: DeepSpeed on its CPU accelerator, quiet tokenizers and logs."""
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def quiet_deepspeed() -> None:
    """DeepSpeed logs an accelerator warning and per-engine info lines at import/initialize: noise here."""
    import logging

    for name in ("DeepSpeed", "deepspeed"):
        logging.getLogger(name).setLevel(logging.ERROR)


def gemm_peak(
    threads: int, n: int = 2048, repeats: int = 5, device: str = "cpu", dtype: Any = None
) -> dict[str, float]:
    """Dense GEMM FLOP/s of this machine (fp32 unless `dtype`, on `device`; CUDA timed with synchronisation):
    best of `repeats` torch.mm of two n x n matrices on `threads` threads, per wall-clock second and per
    CPU-second (see use_thread_cpu_clock). The best (not the mean) is the speed with the least interference
    from other load."""
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
        c = torch.empty(n, n, device=device, dtype=dtype)
        torch.mm(a, b, out=c)  # warm-up: thread pool, page faults
        sync()
        best = {"wall": 0.0, "cpu": 0.0}
        for _ in range(repeats):
            clock = Clock()
            torch.mm(a, b, out=c)
            sync()
            wall, cpu = clock.read()
            best["wall"] = max(best["wall"], 2 * n**3 / wall)
            best["cpu"] = max(best["cpu"], 2 * n**3 / max(cpu, 1e-9))  # FLOP per CPU-second
        return best
    finally:
        torch.set_num_threads(saved)


def _proc_stat_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    return (sum(fields) - idle) / hz, sum(fields) / hz


def _own_cpu_s() -> float:
    """CPU seconds of this process and its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class LoadMonitor:
    """Machine load during a benchmark: load averages and the cores other processes kept busy."""

    def __init__(self) -> None:
        self.loadavg_start = os.getloadavg()
        self.wall = time.perf_counter()
        self.busy, _ = _proc_stat_busy()
        self.own = _own_cpu_s()

    def summary(self, extra_own_cpu_s: float = 0.0) -> dict[str, Any]:
        """`extra_own_cpu_s`: CPU time of processes we started but cannot wait for (e.g. a Ray cluster)."""
        wall = time.perf_counter() - self.wall
        busy = _proc_stat_busy()[0] - self.busy
        own = _own_cpu_s() - self.own + extra_own_cpu_s
        return {
            "cpus": os.cpu_count(),
            "wall_s": wall,
            "loadavg_start": self.loadavg_start,
            "loadavg_end": os.getloadavg(),
            "machine_busy_cores": busy / wall,
            "own_busy_cores": own / wall,
            "other_busy_cores": max(0.0, (busy - own) / wall),
        }


def sample_busy_cores(seconds: float) -> float:
    """Cores kept busy by everything on the machine over the next `seconds` (sleeping meanwhile)."""
    busy, wall = _proc_stat_busy()[0], time.perf_counter()
    time.sleep(seconds)
    return (_proc_stat_busy()[0] - busy) / (time.perf_counter() - wall)


def load_text(load: dict[str, Any]) -> str:
    if "background_busy_cores_before" in load:  # runs whose own processes we cannot account (Ray)
        return (
            f"machine load: {load['machine_busy_cores']:.2f} of {load['cpus']} cores busy during the run; "
            f"without it {load['background_busy_cores_before']:.2f} cores busy before and "
            f"{load['background_busy_cores_after']:.2f} after (other users)"
            + (
                f", {load['other_busy_cores_during']:.2f} during it"
                if "other_busy_cores_during" in load
                else ""
            )
            + "; load average "
            f"{load['loadavg_start'][0]:.2f} -> {load['loadavg_end'][0]:.2f}; {load['wall_s']:.0f} s"
        )
    return (
        f"machine load during the run: {load['machine_busy_cores']:.2f} of {load['cpus']} cores busy, "
        f"{load['other_busy_cores']:.2f} of them by other processes; load average "
        f"{load['loadavg_start'][0]:.2f} -> {load['loadavg_end'][0]:.2f}; {load['wall_s']:.0f} s"
    )


def table(title: str, columns: Sequence[str], left: Sequence[str] = ()) -> Any:
    """A rich Table of these columns: numbers right-aligned, the label columns in `left` left-aligned."""
    from rich.table import Table

    t = Table(title=title)
    for col in columns:
        t.add_column(col, justify="left" if col in left else "right")
    return t


def print_targets(out: Any, result: dict[str, Any]) -> None:
    """The issue's targets, met or not, then the machine load the numbers were measured under."""
    for target in result["targets"]:
        out.print(f"target: {target['name']}: {target['value']} -> {'met' if target['met'] else 'NOT met'}")
    out.print(load_text(result["load"]))


def machine_info() -> dict[str, Any]:
    import torch

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        # the vector kernels torch dispatches to: "AVX512" and "AVX2" machines of one name differ 2-3x on
        # the tiny trials (benchmarks/NOTES.md, 2026-11-28)
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "git_commit": commit,
        "time": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


_CPU_CLOCK = time.process_time


def use_thread_cpu_clock(single_thread: bool) -> None:
    """CPU time of the calling thread (with one torch thread all compute runs in it; other threads' CPU,
    e.g. gloo's loops, is left out) or of the whole process (several torch threads)."""
    global _CPU_CLOCK
    _CPU_CLOCK = time.thread_time if single_thread else time.process_time


def cpu_time() -> float:
    return _CPU_CLOCK()


class Spans:
    """Accumulated wall-clock and CPU seconds per named span (CPU: see use_thread_cpu_clock). With one torch
    thread, CPU time is the time the code actually ran: robust to other processes taking the core, unlike
    wall time."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), cpu_time()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - wall, cpu_time() - cpu)

    def add(self, name: str, wall: float, cpu: float) -> None:
        self.wall[name] = self.wall.get(name, 0.0) + wall
        self.cpu[name] = self.cpu.get(name, 0.0) + cpu

    def get(self, name: str, clock: str = "cpu") -> float:
        return (self.cpu if clock == "cpu" else self.wall).get(name, 0.0)


class Clock:
    """Wall-clock and CPU seconds since construction (CPU: see use_thread_cpu_clock)."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), cpu_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall, cpu_time() - self.cpu


def median(values: Sequence[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def si(x: float, unit: str = "") -> str:
    """1.5e9 -> '1.5 G' (3 significant digits)."""
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}".rstrip()


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)


def console() -> Any:
    from rich.console import Console

    c = Console()
    return c if c.is_terminal else Console(width=160)


def run_child(script: str, cfg: Any, steps: int, out: Path) -> subprocess.CompletedProcess:
    """Run `script --child CONFIG --steps N --out DIR` in a fresh interpreter, so that each measurement (peak
    RSS, first-step costs) starts clean. A parent's own one-process world is not passed down."""
    out.mkdir(parents=True)
    cmd = [sys.executable, script, "--child", cfg.model_dump_json(), "--steps", str(steps), "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MASTER_PORT")}
    return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
