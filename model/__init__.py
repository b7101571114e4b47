"""Models of the study: Transformer++ and the Energy-Based Transformer. Knows nothing of Ray or MLflow."""

from __future__ import annotations

from model.config import EBTConfig, ModelConfig
from model.family import ModelInterface, family


def build_model(cfg: ModelConfig) -> ModelInterface:
    """The model for cfg.family (its `Family` in model/family.py): a torch module with the interface the
    trainer uses (`ModelInterface`: forward -> training loss, eval_loss, lr_multipliers, second_order)."""
    return family(cfg).build(cfg)


__all__ = ["EBTConfig", "ModelConfig", "ModelInterface", "build_model", "family"]
