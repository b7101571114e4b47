"""The next-token loss both families train on, and the target id that it skips.

The one owner of the training cross-entropy: `training_ce` on logits (the EBT's candidates) and
`training_ce_linear` on hidden states and a vocabulary head (the Transformer++), each either plain or, with
`chunk_rows` (`ce_chunk_rows(cfg)`: the `kernels.chunked_ce` option), chunked: computed over `chunk_rows`
positions at a time and recomputed in the backward, so that no float32 (N, V) tensor (N = B*S positions) is
materialised, and for the Transformer++ not even its logits. Same value and gradient as the plain loss, to
float rounding (tests/model/test_loss.py). The chunked losses are differentiated once: a loss is never
inside a second-order graph (the EBT's second order is the descent's, whose CE is the outer loss)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from model.config import ModelConfig

IGNORE_INDEX = (
    -100
)  # a target no loss counts (torch's default ignore_index): a document's end, see model/data.py


def loss_dtype(dtype: torch.dtype) -> torch.dtype:
    """The loss's precision for logits of `dtype`: float32 (bf16 logits are cast), float64 stays."""
    return torch.promote_types(dtype, torch.float32)


def ce_chunk_rows(cfg: ModelConfig) -> int | None:
    """Positions per chunk of the training CE for this model config: None (the plain CE) unless
    `kernels.chunked_ce` is on (resolved by TrialConfig.kernels; unresolved 'auto' is off)."""
    return cfg.kernels.ce_chunk_rows if cfg.kernels.chunked_ce is True else None


def training_ce(logits: Tensor, targets: Tensor, chunk_rows: int | None = None) -> Tensor:
    """Next-token cross-entropy summed over the counted targets and divided by all B*S positions.

    logits (B, S, V), targets (B, S). Dividing by the fixed B*S rather than the number of counted targets
    keeps a global batch's loss (and gradient) exactly the mean of its micro-batches' and processes' losses
    however it is split; with no ignored target it is the ordinary mean. Evaluation reports the exact
    per-token mean instead (the trainer weights each batch by its counted targets).
    chunk_rows: the chunked CE (module doc): it keeps the logits themselves for the backward instead of a
    float32 log-softmax of them, and allocates only (chunk_rows, V) temporaries beyond its gradient."""
    if chunk_rows is not None:
        return _ChunkedCE.apply(logits.flatten(0, 1), targets.flatten(), chunk_rows) / targets.numel()
    logits = logits.to(loss_dtype(logits.dtype))  # bf16 -> fp32; fp64 stays
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
    return ce / targets.numel()


def training_ce_linear(
    hidden: Tensor, weight: Tensor, targets: Tensor, chunk_rows: int | None = None
) -> Tensor:
    """`training_ce` of the logits hidden @ weight.T: hidden (B, S, d), weight (V, d) (a bias-free head).
    Plain: the logits (B, S, V) are computed whole. chunk_rows: they never are (module doc)."""
    if chunk_rows is None:
        return training_ce(F.linear(hidden, weight), targets)
    flat = hidden.flatten(0, 1)
    return _LinearChunkedCE.apply(flat, weight, targets.flatten(), chunk_rows) / targets.numel()


def _chunk_ce_sum(logits: Tensor, targets: Tensor) -> Tensor:
    """Summed CE of one chunk's counted rows: logits (n, V) in the loss dtype, targets (n,). The same
    log-softmax kernel as the plain CE (fast where the EBT's candidates make exp underflow)."""
    picked = logits.log_softmax(-1).gather(1, targets.clamp(min=0)[:, None]).squeeze(1)
    return -torch.where(targets != IGNORE_INDEX, picked, 0).sum()


def _chunk_ce_grad(logits: Tensor, targets: Tensor, grad: Tensor) -> Tensor:
    """d(summed CE)/d logits of one chunk (n, V), times grad: softmax minus the one-hot target, zero on
    ignored rows (a new (n, V) tensor in the loss dtype)."""
    g = logits.softmax(-1)
    counted = targets != IGNORE_INDEX
    rows = counted.nonzero().squeeze(1)
    g[rows, targets[rows]] -= 1
    return g.mul_((counted.to(g.dtype) * grad)[:, None])


class _ChunkedCE(torch.autograd.Function):
    """Summed CE of logits (N, V) against targets (N,), over chunks of rows. Saves only the logits (the
    input, no new storage); the backward recomputes each chunk's softmax."""

    @staticmethod
    def forward(ctx: FunctionCtx, logits: Tensor, targets: Tensor, chunk: int) -> Tensor:
        dtype = loss_dtype(logits.dtype)
        total = torch.zeros((), dtype=dtype, device=logits.device)
        for start in range(0, logits.shape[0], chunk):
            part = slice(start, start + chunk)
            total += _chunk_ce_sum(logits[part].to(dtype), targets[part])
        ctx.save_for_backward(logits, targets)
        ctx.chunk = chunk
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor, None, None]:
        logits, targets = ctx.saved_tensors
        out = torch.empty_like(logits)
        for start in range(0, logits.shape[0], ctx.chunk):
            part = slice(start, start + ctx.chunk)
            out[part] = _chunk_ce_grad(logits[part].to(grad.dtype), targets[part], grad)
        return out, None, None


class _LinearChunkedCE(torch.autograd.Function):
    """Summed CE of the logits hidden @ weight.T against targets (N,), over chunks of rows: each chunk's
    logits (in hidden's dtype, as the head computes them, then in the loss dtype) are made, reduced and
    dropped, and made again in the backward. Saves hidden (N, d) and the weight."""

    @staticmethod
    def forward(ctx: FunctionCtx, hidden: Tensor, weight: Tensor, targets: Tensor, chunk: int) -> Tensor:
        dtype = loss_dtype(hidden.dtype)
        total = torch.zeros((), dtype=dtype, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            part = slice(start, start + chunk)
            total += _chunk_ce_sum(F.linear(hidden[part], weight).to(dtype), targets[part])
        ctx.save_for_backward(hidden, weight, targets)
        ctx.chunk = chunk
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        hidden, weight, targets = ctx.saved_tensors
        d_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        # the weight's gradient summed over chunks in the loss dtype (float32 for bf16 weights)
        d_weight = torch.zeros_like(weight, dtype=grad.dtype) if ctx.needs_input_grad[1] else None
        for start in range(0, hidden.shape[0], ctx.chunk):
            part = slice(start, start + ctx.chunk)
            logits = F.linear(hidden[part], weight).to(grad.dtype)
            g = _chunk_ce_grad(logits, targets[part], grad).to(hidden.dtype)  # (n, V)
            if d_hidden is not None:
                d_hidden[part] = g @ weight
            if d_weight is not None:
                d_weight += (g.T @ hidden[part]).to(grad.dtype)
        return d_hidden, None if d_weight is None else d_weight.to(weight.dtype), None, None


__all__ = ["IGNORE_INDEX", "ce_chunk_rows", "training_ce", "training_ce_linear"]
