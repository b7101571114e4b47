"""Guarantee: storage that cannot be written is reported clearly, and a write that fails mid-checkpoint never
leaves a checkpoint that a resume would load.

Real faults, no mocks (the tests run as root, so permission bits deny nothing): a folder under sysfs, a path
through a regular file and a read-only tmpfs for "not writable"; a tmpfs too small for the trial's
checkpoints for "no space"; and, while `ebtscale train` runs, a file size limit set on its process
(RLIMIT_FSIZE via prlimit: writes past it fail with EFBIG) or its tmpfs filled up by another file (ENOSPC),
injected right after the first checkpoint so that the second one fails halfway through its files. The tmpfs
cases need mount rights and are skipped without. Trials train in `ebtscale train` processes, the way users
run them (and so that a file size limit or a filled disk hits that process only)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.config import ConfigError, TrialConfig
from orchestrator.train import checkpoint
from orchestrator.train.trainer import TrialResult, train_trial
from tests.helpers import EBTSCALE, cli, record_fault, tiny_trial

STEPS, EVERY = 600, 200  # checkpoints at 200 and 400: a second or more apart, so a fault lands between them


@contextlib.contextmanager
def tmpfs(path: Path, size: str, readonly: bool = False) -> Iterator[Path]:
    """A real tmpfs of `size` mounted at `path` (skips the test where mounting is not allowed)."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if readonly else "")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def run(cfg: TrialConfig) -> TrialResult:
    """In this process: only for trials refused before any training (no process group is created)."""
    return train_trial(cfg, progress=False)


def train_cli(cfg: TrialConfig, background: bool = False) -> Any:
    """`ebtscale train` of `cfg` in a process of its own (one thread); a Popen if `background`."""
    config = Path(cfg.output_dir).parent / f"{cfg.name}.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    cmd = [*EBTSCALE, "train", str(config), "--no-track"]
    if background:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


def result_of(cfg: TrialConfig) -> dict[str, Any]:
    return json.loads(cfg.folder.result.read_text())


# ------------------------------------------------------------------------------ refused before training


@pytest.mark.parametrize("where", ["sysfs", "through-a-file", "read-only-mount"])
def test_unwritable_output_folder_is_refused_before_training(tmp_path: Path, where: str) -> None:
    with contextlib.ExitStack() as stack:
        if where == "sysfs":
            out = Path("/sys/ebtscale-reliability/out")
        elif where == "through-a-file":
            (tmp_path / "file").write_text("not a folder")
            out = tmp_path / "file" / "out"
        else:
            out = stack.enter_context(tmpfs(tmp_path / "ro", "1m", readonly=True)) / "out"
        cfg = tiny_trial(out)
        t0 = time.monotonic()
        with pytest.raises(ConfigError) as err:
            run(cfg)
        message = str(err.value)
        assert f"output folder {out / 'trials' / cfg.name} is not writable" in message
        assert time.monotonic() - t0 < 5, "the error came after the trial was set up"
        assert not out.exists()


def test_cli_names_the_unwritable_folder_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "trial.yaml"
    config.write_text(yaml.safe_dump(tiny_trial(tmp_path).model_dump(mode="json")))
    out = "/sys/ebtscale-reliability/out"
    done = cli("train", str(config), "-o", out, "--no-track", timeout=300)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    (line,) = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert (
        line.startswith("error: output folder /sys/ebtscale-reliability/out/trials/")
        and "not writable" in line
    )


def test_too_little_free_space_is_refused_before_training(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "1m") as small:
        cfg = tiny_trial(small, train={"checkpoint_every": 3})
        needed = checkpoint.required_bytes(cfg)
        assert needed > 1 << 20  # three checkpoints of ~0.8 MB each and the final weights
        with pytest.raises(ConfigError) as err:
            run(cfg)
        assert f"output folder {small / 'trials' / cfg.name} has 1.0 MiB free" in str(err.value)
        assert cfg.folder.path == small / "trials" / cfg.name
        assert not cfg.folder.checkpoints.exists()
    with tmpfs(tmp_path / "roomy", "16m") as roomy:  # the estimate is not so large that it refuses a fit
        cfg = tiny_trial(roomy / "out", train={"checkpoint_every": 3})
        done = train_cli(cfg)
        assert done.returncode == 0, done.stderr[-2000:]
        assert result_of(cfg)["status"] == "finished"


# ------------------------------------------------------------------------------ failures mid-checkpoint


def fault_trial(output_dir: Path) -> TrialConfig:
    return tiny_trial(
        output_dir,
        name="faulty",
        train={"tokens": 8 * 32 * STEPS, "checkpoint_every": EVERY, "eval_every": EVERY},
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cfg = fault_trial(tmp_path_factory.mktemp("reference") / "out")
    done = train_cli(cfg)
    assert done.returncode == 0, done.stderr[-2000:]
    return result_of(cfg)


def limit_file_size(pid: int, ckpt: Path) -> Callable[[], None]:
    """RLIMIT_FSIZE on the training process, between the sizes of a checkpoint's two shards: the model states
    fit, the optimizer states stop halfway (Python ignores SIGXFSZ, so the write fails with EFBIG)."""
    sizes = sorted(p.stat().st_size for p in ckpt.glob("*.pt"))
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, ((sizes[0] + sizes[-1]) // 2, hard))
    return lambda: None  # the limit dies with the process


def fill_disk(pid: int, ckpt: Path) -> Callable[[], None]:
    """Another file takes all the free space but a little more than the model-states shard: the next
    checkpoint's first file fits, its optimizer states do not (ENOSPC)."""
    room = min(p.stat().st_size for p in ckpt.glob("*.pt")) + (64 << 10)
    filler = ckpt.parents[3] / "filler"
    with filler.open("wb") as f:
        left = shutil.disk_usage(filler.parent).free - room
        while left > 0:
            left -= f.write(b"\0" * min(left, 1 << 20))
    assert shutil.disk_usage(filler.parent).free <= room
    return filler.unlink


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["file-size-limit", "disk-full"])
def test_a_failed_checkpoint_write_is_never_loaded(
    tmp_path: Path, fault: str, uninterrupted: dict[str, Any]
) -> None:
    with contextlib.ExitStack() as stack:
        root = stack.enter_context(tmpfs(tmp_path / "disk", "8m")) if fault == "disk-full" else tmp_path
        cfg = fault_trial(root / "out")
        folder = cfg.folder
        ckpt_dir = folder.checkpoints
        first = ckpt_dir / f"step-{EVERY}"
        inject = limit_file_size if fault == "file-size-limit" else fill_disk

        proc = train_cli(cfg, background=True)
        try:
            deadline = time.time() + 300
            while not (first / checkpoint.MANIFEST).is_file():
                assert proc.poll() is None and time.time() < deadline, "no first checkpoint"
                time.sleep(0.01)
            undo = inject(proc.pid, first)  # seconds before the next checkpoint
            output, _ = proc.communicate(timeout=600)
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        undo()  # the fault is gone: space freed (the limit went with the process)
        failed_state = {
            "valid": checkpoint.valid_checkpoints(ckpt_dir),
            "dirs": sorted(p.name for p in ckpt_dir.iterdir() if p.is_dir()),
            "result": folder.result.exists(),
            "failed": json.loads(folder.failed.read_text())["error"],
        }
        rerun = train_cli(cfg)  # resumes
        resumed = result_of(cfg) if rerun.returncode == 0 else {"status": "failed", "losses": []}
        record_fault(
            "storage fault mid-checkpoint",
            f"{fault} while checkpoint step-{2 * EVERY} was written",
            injected=1,
            survived=int(resumed["status"] == "finished"),
            lost=int(
                failed_state["valid"] != [(EVERY, f"step-{EVERY}")] or len(resumed["losses"]) != STEPS - EVERY
            ),
        )
        # the trial stopped with a clear error naming the checkpoint and the folder
        assert proc.returncode == 1, output[-3000:]
        found = re.search(r"orchestrator\.train\.checkpoint\.CheckpointError: (.*)", output)
        assert found, output[-3000:]
        message = found.group(1)
        assert f"checkpoint step-{2 * EVERY} could not be written to {ckpt_dir}" in message, message
        assert f"the last good one (step-{EVERY}) is kept" in message

        # the partial write was removed at once, the previous checkpoint intact; nothing claimed to finish
        assert failed_state["valid"] == [(EVERY, f"step-{EVERY}")]
        assert failed_state["dirs"] == [f"step-{EVERY}"] and not failed_state["result"]
        assert "CheckpointError" in failed_state["failed"]

        # the rerun resumed from the good checkpoint and ended exactly where an uninterrupted run does
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        assert resumed["status"] == "finished" and resumed["steps"] == STEPS
        assert len(resumed["losses"]) == STEPS - EVERY
        assert resumed["losses"] == pytest.approx(uninterrupted["losses"][EVERY:], abs=1e-6)
        assert resumed["final_val_loss"] == pytest.approx(uninterrupted["final_val_loss"], abs=1e-6)
        print(f"\n{fault}: {message[:400]}\n  -> resumed from step-{EVERY}, same result as uninterrupted")
