"""The next-token loss both families train on, and the target id that it skips."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = (
    -100
)  # a target no loss counts (torch's default ignore_index): a document's end, see model/data.py


def training_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """Next-token cross-entropy summed over the counted targets and divided by all B*S positions.

    logits (B, S, V), targets (B, S). Dividing by the fixed B*S rather than the number of counted targets
    keeps a global batch's loss (and gradient) exactly the mean of its micro-batches' and processes' losses
    however it is split; with no ignored target it is the ordinary mean. Evaluation reports the exact
    per-token mean instead (the trainer weights each batch by its counted targets)."""
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 -> fp32; fp64 stays
    ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
    return ce / targets.numel()


__all__ = ["IGNORE_INDEX", "training_ce"]
