"""Shared fixtures: a session-wide data cache and one torch thread (helpers: tests/helpers.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One intra-op thread, here and in every process a test starts (CLI commands, in-process trials): the models
# are tiny, and two threads on the test machine's two shared cores make a step many times slower (a 400-step
# trial took 84-143 s instead of 6-13 s in-process while other processes held a core). Set before anything
# imports torch; a trial under Ray sets its own count (cpus_per_worker) either way.
os.environ.setdefault("OMP_NUM_THREADS", "1")


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked slow first (otherwise in collection order): `make test` runs two xdist workers, and the
    minute-long sweep tests then start early on both instead of leaving one worker alone with them at the
    end. The order is deterministic, as xdist needs every worker to collect the same one. The Makefile passes
    --no-loadscope-reorder: by default xdist's loadscope reorders modules by their number of tests."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
