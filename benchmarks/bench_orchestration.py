"""Orchestration efficiency of a CPU sweep: how much of the machine's time goes into training steps, and where
the rest of each trial's time goes (Ray start-up, imports, DeepSpeed init, MLflow I/O, evaluation, ...).

    .venv/bin/python benchmarks/bench_orchestration.py [--trials 16] [--json-out ...]
    .venv/bin/python benchmarks/bench_orchestration.py --trials 4            # quick run, ~1-2 min
    .venv/bin/python benchmarks/bench_orchestration.py --steps 640           # longer trials
    .venv/bin/python benchmarks/bench_orchestration.py --smoke               # 2 trials x 4 steps (make test)

What runs: the real CLI, `python -m orchestrator.cli sweep run SPEC`, on a generated spec of --trials tiny
trials (both families, d_model 32/48, seeds to make up the count, 1 CPU each), exactly as a user runs it.
  efficiency = sum of the trials' train_time_s (from their result.json: time inside training steps)
               / (sweep wall time x concurrent slots)
Sweep wall time runs from launching the CLI to its exit (plus, with --ray head, starting the Ray head).

Ray: `--ray embedded` (default) lets the CLI start its own Ray, as `sweep run` does without a cluster;
`--ray head` starts a private Ray head (`ray start --head --block`, its own temp dir) with RAY_ADDRESS
exported to its workers and runs the sweep with `--address`. Head mode was the way round a hang seen here
before commit 84dd374: with other Ray instances on the machine (tests, other users), Ray Train's
placement-group cleaner in an embedded sweep could not pick its cluster ("Found multiple active Ray
instances"), died, and finished trials never released their CPUs (NOTES.md). Only processes this script
started are stopped.

Per-trial fixed costs come from a timeline recorded by benchmark-only hooks (benchmarks/_hooks, put on the
sweep processes' PYTHONPATH; see ebtscale_timeline.py): timestamps of the Tune trial, the Ray Train worker
function, imports, init_process_group, prepare_dataset, build_model, deepspeed.initialize, every MLflow call,
evaluation, checkpoints and final weights. No project file is modified.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from _bench import (
    REPO,
    LoadMonitor,
    bench_parser,
    console,
    machine_info,
    median,
    parse_bench_args,
    print_targets,
    sample_busy_cores,
    table,
    write_json,
)

from orchestrator.ports import free_port

HOOKS = Path(__file__).resolve().parent / "_hooks"
TARGET_EFFICIENCY = 0.85  # issue: >= 85% of slot time inside training steps on the 16-trial sweep
TARGET_FIXED_COST_S = 10.0  # issue: per-trial fixed cost < 10 s on CPU
# --smoke: one trial per family, 4 steps (an evaluation and a checkpoint on the way), short load samples
SMOKE = {"trials": 2, "steps": 4, "load_sample": 0.5, "timeout": 300}


# ---------------------------------------------------------------------------------------------- sweep


def sweep_spec(trials: int, steps: int, output_dir: Path) -> dict[str, Any]:
    """`trials` tiny trials: both families x d_model {32, 48} (or {32}) x enough seeds."""
    per_family = max(1, trials // 2)
    d_models = [32, 48] if per_family % 2 == 0 else [32]
    seeds = list(range(per_family // len(d_models)))
    batch, context = 8, 64
    return {
        "name": "bench-orchestration",
        "description": "bench_orchestration.py: tiny trials, both families",
        "families": ["transformer_pp", "ebt"],
        "seeds": seeds,
        "base": {
            "model": {
                "d_model": 32,
                "n_layers": 1,
                "n_heads": 2,
                "vocab_size": 512,
                "context_length": context,
            },
            "data": {"source": "stdlib", "tokenizer": "bpe", "vocab_size": 512},
            "optim": {"lr": 0.003},
            "train": {
                "tokens": batch * context * steps,
                "global_batch_size": batch,
                "micro_batch_size": batch,
                "eval_every": max(1, steps // 2),
                "eval_batches": 4,
                "checkpoint_every": max(1, steps // 2),
            },
            "deepspeed": {"zero_stage": 1, "precision": "fp32"},
            "resources": {"num_workers": 1, "cpus_per_worker": 1},
        },
        "axes": {"params": {"d_model": d_models, "head_dim": 16}},
        "output_dir": str(output_dir),
    }


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def session_pids(sid: int) -> list[int]:
    """Processes of session `sid` (a session this script created with start_new_session)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:
            pids.append(int(stat.parent.name))
    return pids


def stop_session(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM the session leader we started (`ray start --block` stops its cluster on it), then SIGKILL
    whatever is left of that session (only processes this script started)."""
    sid = proc.pid  # start_new_session=True: the leader's pid is the session id
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    for pid in session_pids(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


class RayHead:
    """A private single-node Ray head for the sweep (see the module docstring): its own temp dir, ports and
    auth token (as tests/orchestrator/cluster/test_jobs.py starts its cluster), RAY_ADDRESS exported to its
    processes."""

    def __init__(self, root: Path, cpus: int, env: dict[str, str]) -> None:
        gcs, dashboard, *ports = (free_port() for _ in range(7))
        self.address = f"127.0.0.1:{gcs}"
        token = root / "auth_token"
        token.write_text(secrets.token_hex(32))
        # what the head and every client (the sweep's CLI) need
        self.env = env | {
            "RAY_ADDRESS": self.address,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(token),
        }
        cmd = [
            str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={gcs}",
            f"--num-cpus={cpus}", f"--temp-dir={root / 'ray'}", "--disable-usage-stats",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
            f"--ray-client-server-port={ports[0]}",
            f"--dashboard-agent-listen-port={ports[1]}", f"--dashboard-agent-grpc-port={ports[2]}",
            f"--metrics-export-port={ports[3]}", f"--runtime-env-agent-port={ports[4]}",
        ]  # fmt: skip
        self.log_path = root / "ray-head.log"
        self.log = self.log_path.open("w")
        start = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.time() + 180
        # `ray start --block` logs "...will now block forever..." once every process of the node is up
        while not (port_open(gcs) and port_open(dashboard) and "block forever" in self._log_text()):
            if self.proc.poll() is not None or time.time() > deadline:
                self.stop()
                raise RuntimeError(f"the Ray head did not start: see {self.log_path}")
            time.sleep(0.2)
        self.start_s = time.perf_counter() - start

    def _log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def died(self) -> str | None:
        """Why the head died before we stopped it (e.g. its processes killed from outside), else None."""
        text = self._log_text()
        if self.proc.poll() is None and "exited unexpectedly" not in text:
            return None
        start = text.find("exited unexpectedly")
        return text[start : start + 300] if start >= 0 else f"ray start exited with {self.proc.returncode}"

    def stop(self) -> None:
        stop_session(self.proc)
        self.log.close()


CPU_GROUPS = ("driver", "trial processes", "ray system")


def _cpu_seconds(pid: int) -> tuple[float, str] | None:
    """(user + system CPU seconds, process title) of one process, from /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (float(fields[11]) + float(fields[12])) / os.sysconf("SC_CLK_TCK"), cmdline


class CpuByGroup:
    """CPU seconds used by the sweep's processes, grouped: the CLI driver (Tune's controller, MLflow run
    creation), trial processes (Ray workers: Tune trial actors, Train workers; their training included) and
    Ray's own system processes (GCS, raylet, dashboard, agents, log monitor). Sampled every 0.25 s over the
    CLI's session; a process's last sample counts, so the CPU of its final <0.25 s is missed."""

    def __init__(self, sid: int) -> None:
        self.sid = sid
        self.cpu: dict[int, float] = {}
        self.title: dict[int, str] = {}  # a Ray worker's title once it names itself (ray::ImplicitFunc...)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.25):
            for pid in session_pids(self.sid):
                if (got := _cpu_seconds(pid)) is not None:
                    self.cpu[pid] = got[0]
                    if got[1].startswith("ray::") or pid not in self.title:
                        self.title[pid] = got[1]

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self.thread.join()
        out = dict.fromkeys(CPU_GROUPS, 0.0)
        for pid, cpu in self.cpu.items():
            title = self.title[pid]
            if pid == self.sid:
                group = "driver"
            elif title.startswith("ray::") and not title.startswith(("ray::IDLE", "ray::DashboardAgent")):
                group = "trial processes"
            else:
                group = "ray system"
            out[group] += cpu
        return out


def run_cli(
    spec_path: Path, env: dict[str, str], address: str | None, timeout: float, log: Path
) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "orchestrator.cli", "sweep", "run", str(spec_path), "--max-failures", "0"]
    if address:
        cmd += ["--address", address]
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        cpu = CpuByGroup(proc.pid)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            wall = time.perf_counter() - start
            cpu_s = cpu.stop()
            stop_session(proc, grace_s=20)
    return {"returncode": rc, "wall_s": wall, "timed_out": rc is None, "cpu_s": cpu_s}


# ---------------------------------------------------------------------------------------------- analysis


def load_events(folder: Path) -> list[dict[str, Any]]:
    events = []
    for path in folder.glob("*.jsonl"):
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                events.append(json.loads(line))
    return sorted(events, key=lambda e: e["t"])


def trial_results(sweep_root: Path) -> dict[str, dict[str, Any]]:
    """{trial id: result.json + family} of every trial folder (<name>-<id>)."""
    out = {}
    for folder in sorted((sweep_root / "trials").iterdir()):
        tid = folder.name[-12:]
        result = folder / "result.json"
        record: dict[str, Any] = {"name": folder.name[:-13], "status": "missing"}
        if result.is_file():
            data = json.loads(result.read_text())
            record.update(status=data["status"], train_time_s=data["train_time_s"], steps=data["steps"])
        out[tid] = record
    return out


def tune_window(events: list[dict[str, Any]]) -> tuple[float, float] | None:
    fit = next((e for e in events if e["event"] == "tune_fit:end"), None)
    return (fit["t"] - fit["seconds"], fit["t"]) if fit else None


def trial_span(events: list[dict[str, Any]], tid: str) -> tuple[float, float, bool] | None:
    """(start, end, end_seen) of one trial: from the start of its Tune trainable's process (when that
    process was started for it, after Tune began; else the trainable's start in a reused actor) to the end
    of the trainable, or, where the trainable was
    stopped before it could record its end (Tune stops it once the final result is in), the end of the
    Train worker function."""
    mine = [e for e in events if e.get("trial") == tid]
    tune_start = next((e for e in mine if e["event"] == "tune_trial:start"), None)
    fn_end = next((e for e in mine if e["event"] == "worker_fn:end"), None)
    tune_end = next((e for e in mine if e["event"] == "tune_trial:end"), None)
    window = tune_window(events)
    if tune_start is None or (fn_end is None and tune_end is None):
        return None
    process = next((e for e in events if e["pid"] == tune_start["pid"] and e["event"] == "process"), None)
    first_in_process = min(
        e["t"] for e in events if e["pid"] == tune_start["pid"] and e["event"] == "tune_trial:start"
    )
    start = tune_start["t"]
    # A Tune actor started for this trial counts from its process start; a reused actor (reuse_actors) was
    # started for an earlier trial, so a later trial counts from its own start in it.
    if process and window and process["started"] >= window[0] and tune_start["t"] == first_in_process:
        start = process["started"]
    end = tune_end["t"] if tune_end else fn_end["t"]  # type: ignore[index]
    return start, end, tune_end is not None


def per_trial_phases(events: list[dict[str, Any]], tid: str) -> dict[str, float] | None:
    """Seconds of each phase of one trial, from its timeline (None if the timeline is incomplete).

    total = trial_span; fixed = total - time inside training steps. The parts of `fixed`:
    ray_start (the trial's start -> Ray Train worker function start, less imports meanwhile in the Tune
    trainable and the Train worker: Tune actor, TorchTrainer controller, placement group, worker actor and
    the other Ray Train actors, torch process group), imports (torch, deepspeed, ray.train in those two
    processes; mlflow's is inside mlflow_io), init_process_group,
    deepspeed_initialize, prepare_dataset, build_model, mlflow_io (every RunTracker call, the mlflow import
    included), evaluate, checkpoint_save, final_weights, teardown (worker function end -> Tune trainable
    end; nan where the trainable was stopped before recording it) and other (the rest: Ray Train's final
    report, config/result files, checkpoint lookup, Python between the spans)."""
    mine = [e for e in events if e.get("trial") == tid]

    def at(kind: str) -> dict[str, Any] | None:
        return next((e for e in mine if e["event"] == kind), None)

    span_ = trial_span(events, tid)
    tune_start, fn_start, fn_end = at("tune_trial:start"), at("worker_fn:start"), at("worker_fn:end")
    totals = at("trial_totals") or at("worker_totals")
    if not (span_ and tune_start and fn_start and fn_end and totals):
        return None
    start, end, end_seen = span_
    pids = {tune_start["pid"], fn_start["pid"]}

    def span(kind: str) -> float:
        done = at(f"{kind}:end")
        return done["seconds"] if done else 0.0

    pg_end = at("init_process_group:end")
    pg_window = (pg_end["t"] - pg_end["seconds"], pg_end["t"]) if pg_end else (0.0, 0.0)
    imports_before = imports_after = 0.0
    for e in events:
        if (
            e["event"] != "import"
            or e["pid"] not in pids
            or e["module"] not in ("torch", "deepspeed", "ray.train")
        ):
            continue
        if pg_window[0] <= e["t"] <= pg_window[1] or e["t"] < start:
            continue  # inside init_process_group: counted there
        if e["t"] <= fn_start["t"]:
            imports_before += e["seconds"]
        elif e["t"] <= fn_end["t"]:
            imports_after += e["seconds"]
    t, total = totals["totals"], end - start
    train = t.get("train_step", 0.0)
    phases = {
        "total": total,
        "train_steps": train,
        "fixed": total - train,
        "ray_start": fn_start["t"] - start - imports_before,
        "imports": imports_before + imports_after,
        "init_process_group": span("init_process_group"),
        "deepspeed_initialize": span("deepspeed_initialize"),
        "prepare_dataset": span("prepare_dataset"),
        "build_model": span("build_model"),
        "mlflow_io": sum(v for k, v in t.items() if k.startswith("mlflow.")),
        "evaluate": t.get("evaluate", 0.0),
        "checkpoint_save": t.get("checkpoint_save", 0.0),
        "final_weights": span("final_weights"),
        "teardown": end - fn_end["t"] if end_seen else float("nan"),
        "log_calls": t.get("log", 0.0),  # Trial._log: MLflow buffering (in mlflow_io) + progress file
    }
    parts = [c for c in PHASE_COLUMNS if c != "other"]
    phases["other"] = phases["fixed"] - sum(phases[c] for c in parts if phases[c] == phases[c])
    return phases


def driver_phases(events: list[dict[str, Any]], cli_start: float) -> dict[str, float]:
    """Driver-side seconds: interpreter start + imports before run_sweep, ensure_runs (MLflow runs), init_ray,
    Tune (tuner.fit), after Tune."""
    drv = [e for e in events if e["event"] == "run_sweep:start"]
    if not drv:
        return {}
    pid = drv[0]["pid"]
    mine = {e["event"]: e for e in events if e["pid"] == pid}
    out = {"before_run_sweep": mine["run_sweep:start"]["t"] - cli_start}
    for kind in ("ensure_runs", "init_ray", "tune_fit", "run_sweep"):
        if f"{kind}:end" in mine:
            out[kind] = mine[f"{kind}:end"]["seconds"]
    if "tune_fit:end" in mine and "run_sweep:end" in mine:
        out["after_tune"] = mine["run_sweep:end"]["t"] - mine["tune_fit:end"]["t"]
    return out


def exit_after_run_sweep(events: list[dict[str, Any]], cli_end: float) -> dict[str, float]:
    """Seconds from run_sweep's return to the CLI's exit (status table, Ray shutdown, interpreter exit)."""
    end = next((e for e in events if e["event"] == "run_sweep:end"), None)
    return {"cli_exit_after_run_sweep": cli_end - end["t"]} if end else {}


def occupancy(events: list[dict[str, Any]], trial_ids: list[str], slots: int) -> dict[str, Any]:
    """Trials running at once over Tune's lifetime, and the Ray worker processes started meanwhile."""
    window = tune_window(events)
    spans = [s for tid in trial_ids if (s := trial_span(events, tid))]
    if not spans or not window:
        return {}
    start, end = window
    busy = sum(b - a for a, b, _ in spans)
    workers = [
        e
        for e in events
        if e["event"] == "process" and "default_worker" in e.get("argv", "") and start <= e["t"] <= end
    ]
    ray_imports = [e["seconds"] for e in events if e["event"] == "import" and e["module"] == "ray.train"]
    titles: dict[str, int] = {}
    for e in events:
        if e["event"] == "title" and start <= e["t"] <= end + 10:
            name = e["title"].split()[0] if e["title"].startswith("ray::") else "python (not yet named)"
            titles[name] = titles.get(name, 0) + 1
    return {
        "tune_s": end - start,
        "trial_slot_seconds": busy,
        "mean_concurrency": busy / (end - start),
        "idle_slot_seconds": slots * (end - start) - busy,
        "first_trial_start_after_tune_start_s": min(a for a, _, _ in spans) - start,
        "tune_end_after_last_trial_s": end - max(b for _, b, _ in spans),
        "trials_with_recorded_tune_end": sum(seen for *_, seen in spans),
        "ray_python_processes_started": len(workers),
        "ray_python_processes_per_trial": len(workers) / max(1, len(trial_ids)),
        "ray_train_import_s_median": median(ray_imports) if ray_imports else float("nan"),
        "ray_process_names": dict(sorted(titles.items(), key=lambda kv: -kv[1])),
    }


PHASE_COLUMNS = (
    "ray_start",
    "imports",
    "init_process_group",
    "deepspeed_initialize",
    "prepare_dataset",
    "build_model",
    "mlflow_io",
    "evaluate",
    "checkpoint_save",
    "final_weights",
    "teardown",
    "other",
)


def render(result: dict[str, Any]) -> None:
    out = console()
    t = table(
        f"per-trial seconds: {result['trials']} trials, {result['slots']} slots, Ray {result['ray']}",
        [col.replace("_", " ") for col in ("trial", "status", "train", "fixed", *PHASE_COLUMNS)],
        left=("trial", "status"),
    )
    for r in result["per_trial"].values():
        p = r.get("phases")
        cells = [f"{p[c]:.2f}" for c in ("train_steps", "fixed", *PHASE_COLUMNS)] if p else ["-"] * 14
        cells = [c.replace("nan", "-") for c in cells]
        t.add_row(r["name"][:28], r["status"], *cells)
    med = result.get("median_phases")
    if med:
        t.add_section()
        t.add_row(
            "median", "", *(f"{med[c]:.2f}" for c in ("train_steps", "fixed", *PHASE_COLUMNS)), style="bold"
        )
    out.print(t)
    s = result["summary"]
    out.print(
        f"sweep wall {s['sweep_wall_s']:.1f} s (CLI {s['cli_wall_s']:.1f} s"
        f" + Ray head start {s['ray_head_start_s']:.1f} s)"
        f"; sum of train_time_s {s['sum_train_time_s']:.1f} s over {s['slots']} slots -> "
        f"orchestration efficiency {s['efficiency']:.1%} (target >= {TARGET_EFFICIENCY:.0%})"
    )
    if med:
        out.print(
            f"per-trial fixed cost: median {med['fixed']:.1f} s (target < {TARGET_FIXED_COST_S:.0f} s); "
            f"steps needed per trial for {TARGET_EFFICIENCY:.0%} at this fixed cost: "
            f"{s['train_s_per_trial_for_target']:.0f} s of training"
        )
    if cpu := result["cli"].get("cpu_s"):
        out.print(
            f"CPU seconds by process group over the sweep ({s['sweep_wall_s'] * s['slots']:.0f} slot-s): "
            + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
            + f" (training steps {s['sum_train_time_s']:.1f} s)"
        )
    if result.get("driver"):
        out.print("driver: " + ", ".join(f"{k} {v:.1f} s" for k, v in result["driver"].items() if v == v))
    if result.get("occupancy"):
        o = result["occupancy"]
        out.print(
            f"Tune: {o['tune_s']:.1f} s, mean trials running {o['mean_concurrency']:.2f}/{result['slots']}, "
            f"first trial after {o['first_trial_start_after_tune_start_s']:.1f} s, "
            f"Tune ended {o['tune_end_after_last_trial_s']:.1f} s after the last trial; "
            f"Ray started {o['ray_python_processes_started']} Python worker processes "
            f"({o['ray_python_processes_per_trial']:.1f} per trial, ray.train import median "
            f"{o['ray_train_import_s_median']:.1f} s each)"
        )
        out.print(
            "Ray worker processes by name, 8 s after start: "
            + ", ".join(f"{k} x{v}" for k, v in o.get("ray_process_names", {}).items())
        )
    print_targets(out, result)


def main() -> None:
    parser = bench_parser(__doc__, "orchestration.json")
    parser.add_argument("--trials", type=int, default=16, help="trials in the sweep (both families)")
    parser.add_argument(
        "--steps", type=int, default=64, help="optimizer steps per trial (8 x 64 tokens each)"
    )
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="Ray CPUs = concurrent trials")
    parser.add_argument("--ray", choices=("embedded", "head"), default="embedded")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds before the sweep is stopped")
    parser.add_argument("--keep", action="store_true", help="keep the sweep's output folder (path printed)")
    parser.add_argument(
        "--load-sample", type=float, default=5.0, help="seconds of load sampling before/after"
    )
    args = parse_bench_args(parser, SMOKE)

    root = Path(tempfile.mkdtemp(prefix="ebo-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    timeline = root / "timeline"
    timeline.mkdir()
    spec = sweep_spec(args.trials, args.steps, root / "out")
    spec_path = root / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(
        DS_ACCELERATOR="cpu",
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=os.pathsep.join(p for p in (str(HOOKS), env.get("PYTHONPATH", "")) if p),
        EBTSCALE_BENCH_TIMELINE=str(timeline),
        RAY_USAGE_STATS_ENABLED="0",
    )
    background_before = sample_busy_cores(args.load_sample)
    load = LoadMonitor()
    head, head_start_s = None, 0.0
    try:
        if args.ray == "head":
            head = RayHead(root, args.cpus, env)
            head_start_s = head.start_s
        cli_start = time.time()
        cli_env = head.env if head else env
        cli = run_cli(spec_path, cli_env, head.address if head else None, args.timeout, root / "sweep.log")
        if head is not None and (why := head.died()):
            cli["ray_head_died"] = why
            console().print(f"[bold red]the Ray head died during the sweep:[/] {why}")
    finally:
        if head is not None:
            head.stop()
    load_summary = load.summary()
    # the sweep's Ray processes are not our waited-for children: measure the others' load beside the run
    del load_summary["own_busy_cores"], load_summary["other_busy_cores"]
    load_summary["background_busy_cores_before"] = background_before
    load_summary["background_busy_cores_after"] = sample_busy_cores(args.load_sample)
    # during the run: the machine's busy CPU less the sweep's own (sampled per process) = everyone else's,
    # the benchmark's sampler included
    busy_s = load_summary["machine_busy_cores"] * load_summary["wall_s"]
    session_s = sum(cli.get("cpu_s", {}).values())
    load_summary["other_busy_cores_during"] = max(0.0, busy_s - session_s) / load_summary["wall_s"]

    sweep_root = Path(spec["output_dir"]) / spec["name"]
    results = trial_results(sweep_root)
    events = load_events(timeline)
    # a hook that no longer fits the code it wraps is skipped (the sweep must not break): its phases are
    # then missing, so say so (once, not once per process) and fail rather than report them as measured
    failed = {(e["module"], e["error"]) for e in events if e["event"] == "patch_failed"}
    hook_failures = [{"module": module, "error": error} for module, error in sorted(failed)]
    slots = args.cpus  # 1 CPU per trial
    per_trial: dict[str, Any] = {}
    for tid, r in results.items():
        per_trial[tid] = r | {"phases": per_trial_phases(events, tid)}
    phased = [r["phases"] for r in per_trial.values() if r["phases"]]
    med = (
        {k: median([p[k] for p in phased if p[k] == p[k]] or [float("nan")]) for k in phased[0]}
        if phased
        else None
    )
    train_sum = sum(r.get("train_time_s", 0.0) for r in results.values())
    wall = cli["wall_s"] + head_start_s
    efficiency = train_sum / (wall * slots)
    n = max(1, len(results))
    sweep_overhead_per_trial = (wall * slots - sum(p["total"] for p in phased)) / n if phased else 0.0
    fixed = (med["fixed"] if med else 0.0) + max(0.0, sweep_overhead_per_trial)
    result: dict[str, Any] = {
        "benchmark": "orchestration",
        "machine": machine_info(),
        "trials": args.trials,
        "steps_per_trial": args.steps,
        "slots": slots,
        "ray": args.ray,
        "spec": spec,
        "cli": cli,
        "summary": {
            "sweep_wall_s": wall,
            "cli_wall_s": cli["wall_s"],
            "ray_head_start_s": head_start_s,
            "slots": slots,
            "sum_train_time_s": train_sum,
            "efficiency": efficiency,
            "finished": sum(r["status"] == "finished" for r in results.values()),
            "sweep_overhead_slot_s_per_trial": sweep_overhead_per_trial,
            # efficiency(t) = t / (t + fixed + sweep overhead per trial): solve for TARGET_EFFICIENCY
            "train_s_per_trial_for_target": TARGET_EFFICIENCY / (1 - TARGET_EFFICIENCY) * fixed,
        },
        "median_phases": med,
        "per_trial": per_trial,
        "driver": driver_phases(events, cli_start) | exit_after_run_sweep(events, cli_start + cli["wall_s"]),
        "occupancy": occupancy(events, list(results), slots),
        "hook_failures": hook_failures,
        "load": load_summary,
    }
    result["targets"] = [
        {
            "name": f"efficiency >= {TARGET_EFFICIENCY:.0%} ({args.trials} trials x {args.steps} steps)",
            "value": f"{efficiency:.1%}",
            "met": efficiency >= TARGET_EFFICIENCY,
        },
        {
            "name": f"per-trial fixed cost < {TARGET_FIXED_COST_S:.0f} s (median)",
            "value": f"{med['fixed']:.1f} s" if med else "n/a",
            "met": bool(med) and med["fixed"] < TARGET_FIXED_COST_S,
        },
    ]
    render(result)
    write_json(args.json_out, result)
    console().print(f"wrote {args.json_out}; sweep log: {root / 'sweep.log'}")
    if not args.keep and cli["returncode"] == 0:
        shutil.rmtree(root, ignore_errors=True)
    elif cli["returncode"] != 0:
        console().print(f"the sweep failed or timed out (rc {cli['returncode']}): files kept in {root}")
    for failure in hook_failures:
        console().print(f"[bold red]timeline hook not applied to {failure['module']}:[/] {failure['error']}")
    if cli["returncode"] != 0 or hook_failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
