"""Exact parameter counts and analytic FLOPs per token.

Convention (the one `torch.utils.flop_counter.FlopCounterMode` and the Chinchilla paper use): count matmul
FLOPs only (2 per multiply-add), attention scores over the full T x T square (causal masking is not
subtracted), a backward pass costs twice its forward. Norms, activations and the embedding lookup are ignored.
"""

from __future__ import annotations

from model.config import ModelConfig


def block_params(cfg: ModelConfig) -> int:
    d, f = cfg.d_model, cfg.ff_dim
    return 4 * d * d + 3 * d * f + 2 * d  # qkv + proj, gate/up/down, two RMSNorm gains


def count_params(cfg: ModelConfig) -> dict[str, int]:
    """{'total', 'non_embedding'} for the family in cfg. Non-embedding excludes the token embedding and the
    vocabulary head (Kaplan et al.'s N), so it measures the network's own capacity."""
    d, V = cfg.d_model, cfg.vocab_size
    blocks = cfg.n_layers * block_params(cfg) + d  # + final norm
    if cfg.family == "ebt":
        from model.ebt import ebt_extra_params  # candidate map, step embeddings, energy head, alpha

        extra = ebt_extra_params(cfg)
        # a token embedding but no vocabulary head (tie_embeddings ties the EBT's candidate map instead)
        return {"total": blocks + V * d + extra["total"], "non_embedding": blocks + extra["non_embedding"]}
    embedding = V * d + (0 if cfg.tie_embeddings else V * d)
    return {"total": blocks + embedding, "non_embedding": blocks}


def forward_flops_per_token(cfg: ModelConfig, seq_len: int | None = None) -> float:
    """Transformer++ forward matmul FLOPs per token at sequence length T (default: context length)."""
    T = seq_len or cfg.context_length
    d, f, V = cfg.d_model, cfg.ff_dim, cfg.vocab_size
    per_layer = 2 * (4 * d * d + 3 * d * f) + 2 * 2 * T * d  # linears + (QK^T, AV)
    return cfg.n_layers * per_layer + 2 * d * V


def train_flops_per_token(cfg: ModelConfig) -> float:
    """Training FLOPs per token (forward + backward) for the family in cfg. For the EBT: every descent step's
    forward and candidate gradient, and the outer backward through them (model.ebt, docs/ebt.md)."""
    if cfg.family == "ebt":
        from model.ebt import ebt_train_flops_per_token

        return ebt_train_flops_per_token(cfg)
    return 3 * forward_flops_per_token(cfg)


def executed_train_flops_per_token(cfg: ModelConfig) -> float:
    """Training FLOPs per token the configured model actually computes: `train_flops_per_token` (the study's
    convention, the authors' full recompute), except an EBT with `reuse_observed_kv`, which computes less.
    What time estimates and hardware utilisation need."""
    if cfg.family == "ebt" and cfg.ebt.reuse_observed_kv:
        from model.ebt import ebt_reuse_train_flops_per_token

        return ebt_reuse_train_flops_per_token(cfg)
    return train_flops_per_token(cfg)
