"""System-2 curves (model/thinking.py, docs/ebt.md §4) on an untrained tiny EBT: what each row holds and that
its numbers are the model's own `think`/`eval_loss` results, token-weighted over batches of unequal size.
(tests/model/test_ebt.py checks the same curves on a trained model, through its slow `trained` fixture.)"""

from __future__ import annotations

import math

import pytest
import torch

from model.config import EBTConfig, ModelConfig
from model.ebt import EBT
from model.loss import IGNORE_INDEX
from model.thinking import thinking_curves
from model.transformer_pp import TransformerPP
from tests.helpers import seeded_model, token_batch

V, S = 16, 6
ROW_KEYS = {"family", "mode", "steps", "candidates", "forward_passes", "val_loss", "val_perplexity"}
WINDOW_KEYS = {"window_nll", "window_tokens"}

pytestmark = pytest.mark.usefixtures("one_thread")


def cfg(family: str, **ebt: object) -> ModelConfig:
    shape = dict(d_model=16, n_layers=1, n_heads=2, vocab_size=V, context_length=S)
    return ModelConfig(family=family, **shape, ebt=EBTConfig(**ebt))


@pytest.fixture(scope="module")
def curves() -> tuple[EBT, TransformerPP, list[tuple[torch.Tensor, torch.Tensor]], list[dict]]:
    """A 2-step EBT (alpha 20, so the descent moves), a Transformer++, and two batches of 3 and 2 windows
    with 4 of the first batch's targets ignored: batches that count 14 and 12 tokens."""
    ebt = seeded_model(cfg("ebt", step_size=20.0), seed=0)
    baseline = seeded_model(cfg("transformer_pp"), seed=1)
    batches = [token_batch(B, seed=B, vocab=V, length=S) for B in (3, 2)]
    batches = [(t, y.clone()) for t, y in batches]  # the targets are a view of the tokens' data
    batches[0][1][0, 2:] = IGNORE_INDEX
    rows = thinking_curves(ebt, batches, max_steps=3, candidates=(1, 2), baseline=baseline)
    return ebt, baseline, batches, rows


def weighted(values: list[float], counts: list[int]) -> float:
    return sum(v * n for v, n in zip(values, counts, strict=True)) / sum(counts)


def test_rows_name_the_curve_and_its_cost(curves: tuple) -> None:
    """EBT rows: the steps curve 1..max_steps (one candidate), then self-verification at the evaluation step
    count, each with forward passes = steps x candidates; the baseline's rows carry no per-window data."""
    ebt, _, _, rows = curves
    K = ebt.eval_steps
    assert K == 2
    described = [(r["family"], r["mode"], r["steps"], r["candidates"], r["forward_passes"]) for r in rows]
    assert described == [
        ("ebt", "steps", 1, 1, 1),
        ("ebt", "steps", 2, 1, 2),
        ("ebt", "steps", 3, 1, 3),
        ("ebt", "verify", K, 1, K),
        ("ebt", "verify", K, 2, 2 * K),
        *[("transformer_pp", "steps", 1, 1, fp) for fp in (1, 2, 3, 4)],
    ]
    for r in rows:
        assert set(r) == ROW_KEYS | (WINDOW_KEYS if r["family"] == "ebt" else set())
        assert r["val_perplexity"] == pytest.approx(math.exp(r["val_loss"]), rel=1e-12)


def test_losses_are_token_weighted_think_results(curves: tuple) -> None:
    """Each EBT row's loss is `think`'s per-batch CE weighted by the tokens each batch counts (14 and 12, not
    the 3 and 2 windows), its window data the per-window NLL sums and counts; the baseline's loss is its
    token-weighted `eval_loss` at every budget."""
    ebt, baseline, batches, rows = curves
    counts = [int((y != IGNORE_INDEX).sum()) for _, y in batches]
    assert counts == [14, 12]
    steps = [r for r in rows if r["mode"] == "steps" and r["family"] == "ebt"]
    curve = [ebt.think(t, y, steps=3).ce for t, y in batches]  # (3,) per batch
    for k, r in enumerate(steps):
        assert r["val_loss"] == pytest.approx(weighted([float(c[k]) for c in curve], counts), rel=1e-6)
    verify = {r["candidates"]: r for r in rows if r["mode"] == "verify"}
    losses = [float(ebt.eval_loss(t, y)) for t, y in batches]
    assert verify[1]["val_loss"] == pytest.approx(weighted(losses, counts), rel=1e-6)  # M=1 is eval_loss
    two = [float(ebt.think(t, y, steps=2, candidates=2).ce[-1]) for t, y in batches]
    assert verify[2]["val_loss"] == pytest.approx(weighted(two, counts), rel=1e-6)
    per_window = [n for _, y in batches for n in (y != IGNORE_INDEX).sum(1).tolist()]
    assert per_window == [2, 6, 6, 6, 6]
    for r in [*steps, *verify.values()]:
        assert r["window_tokens"] == per_window and len(r["window_nll"]) == 5
        assert sum(r["window_nll"]) / sum(per_window) == pytest.approx(r["val_loss"], rel=1e-9)
    base = [float(baseline.eval_loss(t, y)) for t, y in batches]
    for r in rows[5:]:
        assert r["val_loss"] == pytest.approx(weighted(base, counts), rel=1e-6)
