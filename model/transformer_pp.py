"""Transformer++: the LLaMA-style decoder-only baseline of the EBT paper."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.blocks import Block, RMSNorm, init_weights, rotary_cos_sin, table_dtype
from model.config import ModelConfig
from model.kernels import compiled
from model.loss import ce_chunk_rows, training_ce_linear


class VocabHead(nn.Linear):
    """The bias-free d -> V head, which can also return the training CE of its logits without making them
    whole (`kernels.chunked_ce`). The loss is computed in the module's own call, so whatever hooks a module
    call (DeepSpeed ZeRO-3 gathers the weight around it and around its backward) applies to it too."""

    def __init__(self, d_model: int, vocab_size: int) -> None:
        super().__init__(d_model, vocab_size, bias=False)

    def forward(self, x: Tensor, targets: Tensor | None = None, chunk_rows: int | None = None) -> Tensor:
        """x (B, T, d) -> logits (B, T, V); with targets (B, T), `training_ce_linear` of them."""
        if targets is None:
            return F.linear(x, self.weight)
        return training_ce_linear(x, self.weight, targets, chunk_rows)


class TransformerPP(nn.Module):
    """tokens (B, T) -> next-token logits (B, T, V); `forward(tokens, targets)` returns the mean CE loss."""

    second_order = False  # a plain first-order loss (model.family.ModelInterface)

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.head = VocabHead(cfg.d_model, cfg.vocab_size)
        init_weights(self, cfg.init_std, cfg.n_layers)
        if cfg.tie_embeddings:
            self.head.weight = self.embed.weight

    def features(self, tokens: Tensor) -> Tensor:
        """tokens (B, T) -> the final norm's output (B, T, d), which the vocabulary head reads."""
        T = tokens.shape[1]
        cos, sin = rotary_cos_sin(
            torch.arange(T, device=tokens.device),
            self.cfg.head_dim,
            self.cfg.rope_theta,
            table_dtype(self.embed.weight),
        )
        x = self.embed(tokens)  # (B, T, d)
        for block in self.blocks:
            x = block(x, cos, sin)  # causal: the fused SDPA kernel (flash on CUDA in bf16)
        return self.norm(x)

    def trunk(self, tokens: Tensor) -> Tensor:
        """`features`, compiled with `kernels.compile` (model/kernels.py: one graph, its backward too)."""
        return compiled(self, "features")(tokens) if self.cfg.kernels.compile else self.features(tokens)

    def logits(self, tokens: Tensor) -> Tensor:
        return self.head(self.trunk(tokens))  # (B, T, V)

    def forward(
        self, tokens: Tensor, targets: Tensor, sample_ids: Tensor | None = None, step_seed: int | None = None
    ) -> Tensor:
        """tokens, targets: (B, T) with targets[:, t] = tokens[:, t+1] -> scalar mean cross-entropy
        (model/loss.py: IGNORE_INDEX targets count zero; chunked, never making the (B, T, V) logits, with
        `kernels.chunked_ce`).
        sample_ids/step_seed: part of the uniform model interface (they seed the EBT's noise); unused here."""
        return self.head(self.trunk(tokens), targets, ce_chunk_rows(self.cfg))

    @torch.no_grad()
    def eval_loss(self, tokens: Tensor, targets: Tensor, sample_ids: Tensor | None = None) -> Tensor:
        """Mean next-token CE over the counted targets."""
        return F.cross_entropy(self.logits(tokens).float().flatten(0, 1), targets.flatten())

    def lr_multipliers(self) -> dict[str, float]:
        """Parameter name -> learning-rate multiplier: none here (the EBT's step size has one)."""
        return {}
