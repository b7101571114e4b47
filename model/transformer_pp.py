"""Transformer++: the LLaMA-style decoder-only baseline of the EBT paper."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.blocks import Block, RMSNorm, init_weights, rotary_cos_sin, table_dtype
from model.config import ModelConfig
from model.loss import training_ce


class TransformerPP(nn.Module):
    """tokens (B, T) -> next-token logits (B, T, V); `forward(tokens, targets)` returns the mean CE loss."""

    second_order = False  # a plain first-order loss (model.family.ModelInterface)

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        init_weights(self, cfg.init_std, cfg.n_layers)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight

    def logits(self, tokens: Tensor) -> Tensor:
        T = tokens.shape[1]
        cos, sin = rotary_cos_sin(
            torch.arange(T, device=tokens.device),
            self.cfg.head_dim,
            self.cfg.rope_theta,
            table_dtype(self.embed.weight),
        )
        x = self.embed(tokens)  # (B, T, d)
        for block in self.blocks:
            x = block(x, cos, sin)  # causal
        return self.head(self.norm(x))  # (B, T, V)

    def forward(
        self, tokens: Tensor, targets: Tensor, sample_ids: Tensor | None = None, step_seed: int | None = None
    ) -> Tensor:
        """tokens, targets: (B, T) with targets[:, t] = tokens[:, t+1] -> scalar mean cross-entropy
        (model/loss.py: IGNORE_INDEX targets count zero).
        sample_ids/step_seed: part of the uniform model interface (they seed the EBT's noise); unused here."""
        return training_ce(self.logits(tokens), targets)

    @torch.no_grad()
    def eval_loss(self, tokens: Tensor, targets: Tensor, sample_ids: Tensor | None = None) -> Tensor:
        """Mean next-token CE over the counted targets."""
        return F.cross_entropy(self.logits(tokens).float().flatten(0, 1), targets.flatten())

    def lr_multipliers(self) -> dict[str, float]:
        """Parameter name -> learning-rate multiplier: none here (the EBT's step size has one)."""
        return {}
