"""System-2 evaluation of an EBT (docs/ebt.md §4): the thinking-steps and self-verification curves.

Forward passes are counted as energy evaluations per position: one descent step of one candidate is one
forward pass (with its candidate-gradient backward), so `think(steps=K, candidates=M)` costs K * M forward
passes. The Transformer++ baseline predicts in one forward pass and cannot think: its loss is the same at
any budget. It is recorded at forward_passes=1 (the measurement) and repeated, as a flat reference, at every
forward-pass count of the EBT's rows (steps=1, candidates=1 in all of them).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

import model.family_ids as family_ids
from model.ebt import EBT
from model.loss import IGNORE_INDEX


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _row(
    family: str,
    mode: str,
    steps: int,
    candidates: int,
    forward_passes: int,
    loss: float,
    window_nll: list[float] | None = None,
    window_tokens: list[int] | None = None,
) -> dict:
    row = {
        "family": family,
        "mode": mode,
        "steps": steps,
        "candidates": candidates,
        "forward_passes": forward_passes,
        "val_loss": loss,
        "val_perplexity": math.exp(loss),
    }
    if window_nll is not None:
        row |= {"window_nll": window_nll, "window_tokens": window_tokens}
    return row


@torch.no_grad()
def thinking_curves(
    ebt: EBT,
    batches: Iterable[tuple[Tensor, Tensor]],
    max_steps: int,
    candidates: Sequence[int] = (1, 2, 4),
    baseline: nn.Module | None = None,
) -> list[dict]:
    """Rows {family, mode, steps, candidates, forward_passes, val_loss, val_perplexity}, losses token-weighted
    over all batches (tokens, targets), perplexity = exp(loss):
    - mode "steps": the thinking-steps curve, steps 1..max_steps with one candidate (one `think` call per
      batch gives the whole curve);
    - mode "verify": self-verification, M in `candidates` at the trained (evaluation) step count
      `ebt.eval_steps`, so M=1 is the model's ordinary evaluation loss;
    - family "transformer_pp" rows if a baseline is given (see the module docstring).
    EBT rows also carry `window_nll` (summed NLL per window, in batch order) and `window_tokens` (the tokens
    each window's loss counts), the same windows in every row: what a bootstrap over windows resamples."""
    device = _device(ebt)
    curve: list[Tensor] = []  # per batch, (max_steps, B) summed NLL per window
    verify: dict[int, list[Tensor]] = {M: [] for M in candidates}  # per batch, (B,)
    counts: list[Tensor] = []  # per batch, (B,) tokens counted per window
    base, n_tokens = 0.0, 0
    for tokens, targets in batches:
        tokens, targets = tokens.to(device), targets.to(device)
        per_window = (targets != IGNORE_INDEX).sum(1)
        n = int(per_window.sum())  # the tokens each batch's mean CE averages over
        counts.append(per_window.cpu())
        curve.append(ebt.think(tokens, targets, max_steps).row_nll.double().cpu())
        for M in candidates:
            verify[M].append(
                ebt.think(tokens, targets, ebt.eval_steps, candidates=M).row_nll[-1].double().cpu()
            )
        if baseline is not None:
            base += float(baseline.eval_loss(tokens.to(_device(baseline)), targets.to(_device(baseline)))) * n
        n_tokens += n
    assert n_tokens > 0, "thinking_curves needs at least one batch"

    window_tokens = torch.cat(counts).tolist()
    steps_nll = torch.cat(curve, dim=1)  # (max_steps, windows)

    def ebt_row(mode: str, steps: int, M: int, nll: Tensor) -> dict:
        nll_per_token = float(nll.sum()) / n_tokens
        return _row(
            family_ids.EBT.name, mode, steps, M, steps * M, nll_per_token, nll.tolist(), window_tokens
        )

    K = ebt.eval_steps
    rows = [ebt_row("steps", k + 1, 1, steps_nll[k]) for k in range(max_steps)]
    rows += [ebt_row("verify", K, M, torch.cat(verify[M])) for M in candidates]
    if baseline is not None:
        budgets = sorted({1} | {r["forward_passes"] for r in rows})
        rows += [_row(family_ids.TRANSFORMER_PP.name, "steps", 1, 1, fp, base / n_tokens) for fp in budgets]
    return rows
