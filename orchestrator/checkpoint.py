"""Atomic, verified DeepSpeed checkpoints: a checkpoint is valid only once its manifest exists.

DeepSpeed writes every rank's shards into `<dir>/<tag>/`. We let it write into a temporary tag, then rank 0
records a SHA-256 manifest of every file and renames the folder to its final tag. A crash mid-write leaves
only a `tmp-*` folder, which is never loaded; a corrupted file fails its checksum and the previous good
checkpoint is used instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from orchestrator import distributed

MANIFEST = "manifest.json"
_TAG = re.compile(r"^step-(\d+)$")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_manifest(folder: Path, step: int) -> None:
    files = {str(p.relative_to(folder)): _sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"step": step, "files": files}, indent=1))
    os.replace(tmp, folder / MANIFEST)


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


def save(engine: Any, ckpt_dir: Path, step: int, client_state: dict[str, Any], keep: int = 2) -> Path:
    """Collective: every rank calls it. Returns the final folder."""
    tmp_tag, tag = f"tmp-step-{step}", f"step-{step}"
    if distributed.rank() == 0:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(ckpt_dir / tmp_tag, ignore_errors=True)
    distributed.barrier()
    engine.save_checkpoint(str(ckpt_dir), tag=tmp_tag, client_state=client_state, save_latest=False)
    distributed.barrier()
    final = ckpt_dir / tag
    if distributed.rank() == 0:
        _write_manifest(ckpt_dir / tmp_tag, step)
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
