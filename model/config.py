"""Typed model configuration, shared by Transformer++ and the Energy-Based Transformer.

Validated once at the edge (YAML -> pydantic); the model code receives a frozen object and trusts it.
Defaults follow the EBT paper's System-1 recipe (docs/ebt.md, "Recipes").
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from model.family_ids import FAMILY_NAMES, TRANSFORMER_PP

ModelFamily = Literal[FAMILY_NAMES]  # the registry's names (model/family_ids.py), checked by pydantic


class FrozenModel(BaseModel):
    """Base for every config: immutable, unknown keys rejected (typos fail loudly, naming the field)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class EBTConfig(FrozenModel):
    """Energy-minimisation hyper-parameters. Defaults: the authors' System-1 pretraining recipe."""

    variant: Literal["time_embed", "default"] = "time_embed"
    mcmc_steps: int = Field(2, ge=1, description="optimisation steps K during training")
    mcmc_steps_random_max: int | None = Field(
        None,
        ge=1,
        description="if set, each training step draws its step count K uniformly from "
        "[mcmc_steps_random_min (default mcmc_steps), mcmc_steps_random_max]; steps beyond mcmc_steps repeat "
        "the last step index, the final landscape (System-2 recipe: one landscape, K in {2, 3})",
    )
    mcmc_steps_random_min: int | None = Field(
        None, ge=1, description="smallest random step count (needs mcmc_steps_random_max); default mcmc_steps"
    )
    step_size: float = Field(500.0, gt=0, description="initial step size alpha")
    step_size_learnable: bool = True
    step_size_lr_multiplier: float = Field(1500.0, gt=0)
    step_size_min: float = Field(1e-4, gt=0, description="alpha is clamped to at least this")
    step_size_random_scale: float = Field(
        1.0, ge=1.0, description="per-position alpha drawn from [alpha/s, alpha*s] in training; 1 = off"
    )
    langevin_noise_std: float = Field(0.0, ge=0.0)
    detach_between_steps: bool = True
    truncate_to_last_step: bool = False
    candidate_init: Literal["noise", "zeros"] = "noise"
    candidate_init_std: float = Field(1.0, gt=0)
    candidate_embedding: Literal["linear", "token_embedding"] = "linear"
    reuse_observed_kv: bool = Field(
        True,
        description="compute the observed stream once per step index and run only the candidate stream per "
        "step (same energies and gradients as the authors' full recompute, 1.5-1.8x faster training steps "
        "measured; false: the full recompute, kept as the reference)",
    )
    replay_buffer_size: int = Field(
        0,
        ge=0,
        description="System-2 replay buffer: sequences kept (the latest, with their final candidates) whose "
        "candidates restart the descent in later training batches; 0 = off (authors' System-2: 192)",
    )
    replay_fraction: float = Field(
        0.5,
        gt=0,
        le=1,
        description="replayed sequences added to each training micro-batch, as a fraction of it",
    )

    @property
    def n_step_tokens(self) -> int:
        """P: 1 step-index token at the start of the observed stream ('time_embed'), else 0."""
        return 1 if self.variant == "time_embed" else 0

    @property
    def train_step_counts(self) -> tuple[int, int]:
        """(smallest, largest) descent step count K of a training batch (equal unless randomised)."""
        if self.mcmc_steps_random_max is None:
            return self.mcmc_steps, self.mcmc_steps
        return self.mcmc_steps_random_min or self.mcmc_steps, self.mcmc_steps_random_max

    @model_validator(mode="after")
    def _check_random_steps(self) -> EBTConfig:
        if self.mcmc_steps_random_min is not None and self.mcmc_steps_random_max is None:
            raise ValueError("mcmc_steps_random_min needs mcmc_steps_random_max")
        low, high = self.train_step_counts
        if low < self.mcmc_steps:
            raise ValueError("mcmc_steps_random_min must be >= mcmc_steps (every step landscape is visited)")
        if high < low:
            raise ValueError("mcmc_steps_random_max must be >= mcmc_steps_random_min (default mcmc_steps)")
        return self


CHUNKED_CE_MIN_VOCAB = 16384  # 'auto' turns the chunked cross-entropy on on CUDA from this vocabulary size


class KernelsConfig(FrozenModel):
    """How the model computes, not what: options for speed and memory whose results equal the plain code's to
    float rounding (docs/ebt.md §6). None is 'auto', resolved for the accelerator the trial trains on in one
    place, `TrialConfig.kernels` (orchestrator/config.py, beside `TrialConfig.precision`): on CUDA compile
    on and the chunked CE on from CHUNKED_CE_MIN_VOCAB, everything off elsewhere. A model built from a config
    that is not resolved (None) runs the plain code, as on CPU."""

    compile: bool | None = Field(
        None,
        description="torch.compile the parts of the model outside any second-order graph: the Transformer++ "
        "trunk (embedding to final norm), the EBT's observed stream (reuse_observed_kv); the EBT's candidate "
        "stream and full recompute stay eager (inductor has no double backward). auto: on on CUDA",
    )
    chunked_ce: bool | None = Field(
        None,
        description="the training cross-entropy over chunks of ce_chunk_rows positions, recomputed in the "
        "backward, so no float32 (B, S, V) tensor is materialised (Transformer++: nor the logits). auto: on "
        f"on CUDA when vocab_size >= {CHUNKED_CE_MIN_VOCAB}",
    )
    ce_chunk_rows: int = Field(1024, ge=1, description="positions per chunk of the chunked cross-entropy")


class ModelConfig(FrozenModel):
    """Architecture of one model. Both families share d_model/n_layers/n_heads/d_ff and the blocks."""

    family: ModelFamily = TRANSFORMER_PP.name
    d_model: int = Field(128, ge=8)
    n_layers: int = Field(2, ge=1)
    n_heads: int = Field(2, ge=1)
    d_ff: int | None = Field(
        None, ge=1, description="SwiGLU hidden width; default: 8/3*d_model rounded up to 32"
    )
    vocab_size: int = Field(4096, ge=2)
    context_length: int = Field(256, ge=2)
    tie_embeddings: bool = False
    rope_theta: float = Field(10000.0, gt=0)
    norm_eps: float = Field(1e-5, gt=0)
    init_std: float = Field(0.02, gt=0)
    ebt: EBTConfig = EBTConfig()
    kernels: KernelsConfig = KernelsConfig()

    @model_validator(mode="after")
    def _check_heads(self) -> ModelConfig:
        if self.d_model % self.n_heads != 0:
            raise ValueError(f"n_heads ({self.n_heads}) must divide d_model ({self.d_model})")
        if (self.d_model // self.n_heads) % 2 != 0:
            raise ValueError("head dimension d_model/n_heads must be even (rotary embeddings)")
        return self

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def ff_dim(self) -> int:
        """SwiGLU hidden width: explicit d_ff, else 8/3*d_model rounded up to a multiple of 32 (LLaMA)."""
        if self.d_ff is not None:
            return self.d_ff
        return 32 * -(-(8 * self.d_model) // (3 * 32))
