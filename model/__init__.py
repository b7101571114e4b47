"""Models of the study: Transformer++ and the Energy-Based Transformer. Knows nothing of Ray or MLflow."""

from __future__ import annotations

from typing import TYPE_CHECKING

from model.config import EBTConfig, ModelConfig

if TYPE_CHECKING:  # torch is imported where a model is built, not by every config reader (the CLI's start)
    from torch import nn


def build_model(cfg: ModelConfig) -> nn.Module:
    """The model for cfg.family. Every model has
    - `forward(tokens, targets, sample_ids=None, step_seed=None) -> training loss`; the ids seed per-sample
      randomness (the EBT's noise), so a global batch split across processes trains identically;
    - `eval_loss(tokens, targets, sample_ids=None) -> next-token cross-entropy of its final prediction`;
    - `lr_multipliers() -> {parameter name: learning-rate multiplier}`."""
    if cfg.family == "ebt":
        from model.ebt import EBT

        return EBT(cfg)
    from model.transformer_pp import TransformerPP

    return TransformerPP(cfg)


__all__ = ["EBTConfig", "ModelConfig", "build_model"]
