"""The EBT's System-2 replay buffer (docs/ebt.md, "Replay buffer"), after the authors' `CausalReplayBuffer`.

It keeps the latest `size` training sequences together with the final candidate (logits, (S, V)) that their
descent ended on. Each later training micro-batch of B sequences appends floor(fraction * B) of them, drawn
uniformly without replacement; their descent restarts from the stored candidate instead of fresh noise, so
the energy landscape is also trained on the regions a longer descent reaches. Only fresh sequences are added.

Like the authors' buffer it is state of one process (each data-parallel rank has its own), lives on the
model's device, and is not part of a checkpoint: a resumed trial starts with an empty buffer.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class Replayed:
    """One stored sequence."""

    tokens: Tensor  # (S,) observed tokens
    targets: Tensor  # (S,) next tokens
    candidate: Tensor  # (S, V) final candidate of its last training descent, detached
    key: int  # its sample id: seeds its noise (with the step seed) when it is replayed


class ReplayBuffer:
    def __init__(self, size: int, fraction: float) -> None:
        assert size > 0 and 0 < fraction <= 1, "replay buffer needs size > 0 and 0 < fraction <= 1"
        self.fraction = fraction
        self.records: deque[Replayed] = deque(maxlen=size)  # oldest dropped first

    def __len__(self) -> int:
        return len(self.records)

    def sample(self, batch: int, seed: int | None) -> list[Replayed]:
        """min(floor(fraction * batch), len) stored sequences, uniformly without replacement; seeded (a
        resumed or repeated step draws the same ones), or Python's global RNG with seed None."""
        n = min(int(self.fraction * batch), len(self.records))
        rng = random if seed is None else random.Random(seed)
        return rng.sample(list(self.records), n)

    def add(self, tokens: Tensor, targets: Tensor, candidates: Tensor, keys: list[int]) -> None:
        """Store each row of (B, S) tokens/targets with its (B, S, V) final candidate."""
        for row, key in enumerate(keys):
            self.records.append(Replayed(tokens[row], targets[row], candidates[row].detach(), key))


__all__ = ["ReplayBuffer", "Replayed"]
