"""Shared fixtures: a session-wide data cache and tiny trial configs that train in seconds on CPU."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def data_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tokenizer/token-array cache for the whole session (tests share the tiny stdlib corpus)."""
    cache = tmp_path_factory.mktemp("data-cache")
    os.environ["EBTSCALE_CACHE_DIR"] = str(cache)
    return cache


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and the test machine's cores are shared
    (use with `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_trial(output_dir: Path, family: str = "transformer_pp", **sections: Any) -> Any:
    """A resolved TrialConfig small enough for a few seconds per trial: sections deep-merge over it."""
    from orchestrator.config import deep_merge, parse_trial_config

    base = {
        "name": f"tiny-{family}",
        "model": {
            "family": family,
            "d_model": 32,
            "n_layers": 2,
            "n_heads": 2,
            "vocab_size": 320,
            "context_length": 32,
        },
        "data": {"source": "stdlib", "tokenizer": "bpe", "vocab_size": 320, "max_documents": 150},
        "optim": {"lr": 3e-3, "warmup_fraction": 0.2},
        "train": {
            "tokens": 8 * 32 * 12,
            "global_batch_size": 8,
            "micro_batch_size": 4,
            "eval_every": 6,
            "eval_batches": 2,
            "checkpoint_every": 6,
        },
        "deepspeed": {"zero_stage": 1, "precision": "fp32"},
        "output_dir": str(output_dir),
    }
    return parse_trial_config(deep_merge(base, sections))
