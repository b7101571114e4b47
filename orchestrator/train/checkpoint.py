"""Atomic, verified DeepSpeed checkpoints: a checkpoint is valid only once its manifest exists.

DeepSpeed writes every rank's shards into `<dir>/<tag>/`. We let it write into a temporary tag, then rank 0
records a SHA-256 manifest of every file and renames the folder to its final tag. A crash mid-write leaves
only a `tmp-*` folder, which is never loaded; a corrupted file fails its checksum and the previous good
checkpoint is used instead. A save that fails (disk full, file size limit, I/O error) removes its partial
folder and raises `CheckpointError`, naming the folder and the free space left.

`required_bytes` estimates the most space a trial's folder will need (the checkpoints kept, the one being
written and the final weights), so that `trainer.ensure_writable` can refuse a trial that could never
checkpoint before it trains at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.config import ConfigError
from orchestrator.train import distributed
from orchestrator.trial_dir import atomic_write_json

if TYPE_CHECKING:
    from orchestrator.config import TrialConfig

MANIFEST = "manifest.json"
_TAG = re.compile(r"^step-(\d+)$")
KEEP = 2  # valid checkpoints kept (the newest ones)
# Measured on DeepSpeed's ZeRO checkpoints: fp32 weights (4 B/param, bf16 2 B) + fp32 master copy and the two
# Adam moments (12 B/param), plus pickling overhead; and a fixed overhead per checkpoint folder.
BYTES_PER_PARAM = 17
BYTES_PER_CHECKPOINT = 64 << 10


class CheckpointError(OSError):
    """A checkpoint could not be written; the previous valid checkpoint is untouched."""


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def required_bytes(cfg: TrialConfig, keep: int = KEEP) -> int:
    """Free space the trial still needs at its peak: `keep` checkpoints plus the one being written (fewer if
    the trial checkpoints less often), less what its existing checkpoints (in its folder) already occupy,
    plus model.pt."""
    from model.family import count_params

    n = count_params(cfg.model)["total"]
    per_checkpoint = n * BYTES_PER_PARAM + BYTES_PER_CHECKPOINT
    count = min(keep + 1, (cfg.total_steps - 1) // cfg.train.checkpoint_every)
    ckpt_dir = cfg.folder.checkpoints
    existing = sum(_folder_bytes(ckpt_dir / tag) for _, tag in valid_checkpoints(ckpt_dir))
    return max(0, count * per_checkpoint - existing) + n * 4


def ensure_free_space(folder: Path, needed: int) -> None:
    """ConfigError naming the folder if its filesystem has less than `needed` bytes free."""
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise ConfigError(
            f"output folder {folder} has {_mib(free)} free but this trial needs about {_mib(needed)} "
            "for its checkpoints and final weights; free some space or choose another output_dir"
        )


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_manifest(folder: Path, step: int) -> None:
    files = {str(p.relative_to(folder)): _sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}
    atomic_write_json(folder / MANIFEST, {"step": step, "files": files}, indent=1)


def is_valid(folder: Path) -> bool:
    """True if the manifest exists and every file it lists has its recorded checksum."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return False
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError):
        return False
    return all(
        (folder / name).is_file() and _sha256(folder / name) == digest for name, digest in files.items()
    )


def valid_checkpoints(ckpt_dir: Path) -> list[tuple[int, str]]:
    """(step, tag) of every valid checkpoint, newest first."""
    if not ckpt_dir.is_dir():
        return []
    found = []
    for p in ckpt_dir.iterdir():
        m = _TAG.match(p.name)
        if m and p.is_dir() and is_valid(p):
            found.append((int(m.group(1)), p.name))
    return sorted(found, reverse=True)


def save(engine: Any, ckpt_dir: Path, step: int, client_state: dict[str, Any], keep: int = KEEP) -> Path:
    """Collective: every rank calls it. Returns the final folder. Raises CheckpointError if the write fails
    (after removing the partial folder); earlier checkpoints are untouched."""
    tmp_tag, tag = f"tmp-step-{step}", f"step-{step}"
    if distributed.rank() == 0:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(ckpt_dir / tmp_tag, ignore_errors=True)
    distributed.barrier()
    try:
        engine.save_checkpoint(str(ckpt_dir), tag=tmp_tag, client_state=client_state, save_latest=False)
        distributed.barrier()
        if distributed.rank() == 0:
            _write_manifest(ckpt_dir / tmp_tag, step)
    except (OSError, RuntimeError) as err:  # torch.save reports a failed write as a RuntimeError
        shutil.rmtree(ckpt_dir / tmp_tag, ignore_errors=True)  # never loaded, and frees what it took
        previous = valid_checkpoints(ckpt_dir)
        kept = f"the last good one ({previous[0][1]}) is kept" if previous else "there is no earlier one"
        free = shutil.disk_usage(ckpt_dir).free
        raise CheckpointError(
            f"checkpoint {tag} could not be written to {ckpt_dir} ({_mib(free)} free): "
            f"{type(err).__name__}: {err}; {kept}"
        ) from err
    final = ckpt_dir / tag
    if distributed.rank() == 0:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(ckpt_dir / tmp_tag, final)
        for _, old in valid_checkpoints(ckpt_dir)[keep:]:
            shutil.rmtree(ckpt_dir / old, ignore_errors=True)
    distributed.barrier()
    return final


def load_latest(engine: Any, ckpt_dir: Path) -> dict[str, Any] | None:
    """Load the newest valid checkpoint into `engine`; returns its client state, or None if there is none.
    Collective: all ranks agree on the tag chosen by rank 0's view of the (shared) folder."""
    candidates = valid_checkpoints(ckpt_dir)
    if not candidates:
        return None
    _, tag = candidates[0]
    _, client_state = engine.load_checkpoint(
        str(ckpt_dir), tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True
    )
    return client_state
