"""What the study knows of each model family, torch-free: the model interface the trainer relies on, and
each family's costs (parameters, FLOPs, activation memory, per-step work) that the planner and the trainer
ask for. A family owns its costs: `count_params`, `train_flops_per_token`, `executed_train_flops_per_token`
and `activation_terms` here are the entry points, each asking the config's family, which computes them
with model/flops.py's arithmetic (torchtitan's `get_nparams_and_flops` per model is the same idea).
Adding a family: its model module, its names (a `FamilyId` in model/family_ids.py, which the config, the
sweeps and the reports derive theirs from) and its `Family` here, listed in `FAMILIES`; the planner and the
trainer do not change.

Activation and step-work coefficients were counted on this project's code and are checked by
benchmarks/bench_memory.py and benchmarks/bench_planner.py (tables in benchmarks/NOTES.md §4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

import model.flops as flops
from model.config import ModelConfig
from model.family_ids import EBT, TRANSFORMER_PP, FamilyId

if TYPE_CHECKING:
    from collections.abc import Iterator

    from torch import Tensor
    from torch.nn import Parameter

# SecondOrderSafe (orchestrator/train/second_order.py) runs the EBT on clones of its weights, made per
# forward: the clones and, in the outer backward, their accumulated gradients: 2 values per parameter in the
# parameter dtype. Measured in fp32: the EBT's peak above the Transformer++'s of the same parameters, less
# its activations, 7-10.5 B/param (d_model 512).
EBT_WEIGHT_CLONE_VALUES_PER_PARAM = 2

# Saved-for-backward values per row and layer, as (x d_model, x d_ff), counted by walking the autograd graph
# of one micro-batch from its loss and summing the distinct storages the nodes keep (torch 2.13; the same
# count is `bench_memory.py`'s "saved" table). Hidden-size tensors are in the activation dtype.
# Transformer++ block, fused causal attention (no T x T): the norms' inputs and normalised outputs, q/k/v,
# attention output and log-sum-exp, the projection's input; the MLP's gate, up, silu and down inputs.
TPP_SAVED_PER_LAYER = (13, 4)
TPP_SAVED_ENDS = 3  # x d_model per token: final norm, the head's input
# EBT block in a kept descent step: its forward under the MATH attention kernel (required for the double
# backward) saves (10, 4) and one (H, rows, keys) probability matrix; the candidate gradient's graph
# (autograd.grad with create_graph=True) saves (14, 8) and two more (H, rows, keys) matrices.
EBT_SAVED_PER_LAYER = (10 + 14, 4 + 8)
EBT_ATTENTION_MATRICES = 1 + 2
# reuse_observed_kv (counted 2026-11-28 the same way, fitted over L in {2, 4} and d_ff in {2d, 3d}): a
# candidate row keeps (26, 12) per layer, and the candidate attention three score matrices per layer (each
# candidate sees the observed keys its block may see and itself: Block.forward_candidates); the observed
# stream, differentiated once under the fused causal kernel, keeps (14, 4) per observed row and layer (its
# keys/values also in the layout the candidates' matmuls read) and no (n, n) matrix, and of its last layer
# only the keys/values path (5 x d per row).
EBT_REUSE_CANDIDATE_PER_LAYER = (26, 12)
EBT_REUSE_ATTENTION_MATRICES = 3
EBT_OBSERVED_PER_LAYER = (14, 4)
EBT_OBSERVED_LAST_LAYER = 5
EBT_SAVED_ENDS = {False: 8, True: 7}  # x d_model per observed token per kept step: candidate map, final norm
# Vocabulary-sized tensors, fp32 whatever the precision (the EBT's candidate logits are fp32; the
# Transformer++ loss runs on .float() logits), per token: Transformer++ the log-softmax (1 value); EBT per
# kept step the candidate's softmax p and the CE's log-softmax, and with the full recompute one more of the
# candidate gradient's graph (bench_memory's saved-tensor walk, 2026-11-28: the reuse path takes the
# candidate gradient at p M, so its graph keeps no (B, S, V) tensor). With the chunked CE
# (kernels.chunked_ce, model/loss.py) the Transformer++ keeps none, and the EBT's CE keeps the candidate
# logits in place of their log-softmax: the same count (tests/model/test_family.py).
TPP_VOCAB_VALUES = 1
EBT_VOCAB_VALUES_PER_STEP = {False: 3, True: 2}  # by reuse_observed_kv
# Peak / saved: the backward creates gradient buffers before it frees what it consumed. Measured (peak RSS -
# runtime - parameter bytes) / saved: Transformer++ 1.2-1.6 (the transient scales with the graph); EBT:
# saved + 1.2 x one kept step's saved bytes (the double backward's buffers belong to the step in flight:
# one kept step 2.0-2.2x, two 1.5-1.7x, three 1.5x).
TPP_TRANSIENT = 0.4
EBT_TRANSIENT_STEPS = 1.2


@runtime_checkable
class ModelInterface(Protocol):
    """What the trainer calls on a model: a torch module (both families' `build` returns one) with these.

    `sample_ids` seed per-sample randomness (the EBT's noise) and `step_seed` per-step randomness, so a
    global batch split across processes trains identically. `second_order`: the loss differentiates through
    the model's own gradients (the trainer then wraps it for DeepSpeed, train/second_order.py)."""

    second_order: bool

    def named_parameters(self) -> Iterator[tuple[str, Parameter]]: ...

    def forward(
        self, tokens: Tensor, targets: Tensor, sample_ids: Tensor | None = None, step_seed: int | None = None
    ) -> Tensor:
        """The training loss (a scalar)."""
        ...

    def eval_loss(self, tokens: Tensor, targets: Tensor, sample_ids: Tensor | None = None) -> Tensor:
        """Next-token cross-entropy of the model's final prediction."""
        ...

    def lr_multipliers(self) -> dict[str, float]:
        """Parameter name -> learning-rate multiplier (e.g. the EBT's step size)."""
        ...


class StepWork(NamedTuple):
    """The FLOP-independent work of one micro-batch's training step, as the planner's time model counts it:
    `passes` through the layers (forward + backward, a Transformer++ micro-batch is 1) and the
    `attention_elements` (B, H, query, key) a MATH-kernel attention materialises (fused attention: 0)."""

    passes: float
    attention_elements: float


class Family(Protocol):
    """One model family: its names (model/family_ids.py), how to build it, and its costs from its config
    alone (no torch)."""

    id: FamilyId

    def build(self, cfg: ModelConfig) -> ModelInterface: ...

    def count_params(self, cfg: ModelConfig) -> dict[str, int]:
        """{'total', 'non_embedding'} (Kaplan et al.'s N excludes the vocabulary-sized matrices)."""
        ...

    def train_flops_per_token(self, cfg: ModelConfig) -> float:
        """Training FLOPs per token in the study's convention (model/flops.py)."""
        ...

    def executed_train_flops_per_token(self, cfg: ModelConfig) -> float:
        """Training FLOPs per token the implementation actually computes (time estimates, MFU)."""
        ...

    def activation_terms(self, cfg: ModelConfig, micro_batch: int, value_bytes: int) -> dict[str, float]:
        """Activation memory of one micro-batch by kind (see `activation_terms`)."""
        ...

    def step_work(self, cfg: ModelConfig, micro_batch: int) -> StepWork: ...


def _values(coef: tuple[int, int], m: ModelConfig) -> int:
    """(a, b) -> a x d_model + b x d_ff: saved values per row of one layer."""
    return coef[0] * m.d_model + coef[1] * m.ff_dim


class TransformerPPFamily:
    """Transformer++ (model/transformer_pp.py): one graph, fused causal attention (no T x T matrix)."""

    id = TRANSFORMER_PP

    def build(self, cfg: ModelConfig) -> ModelInterface:
        from model.transformer_pp import TransformerPP

        return TransformerPP(cfg)

    def count_params(self, cfg: ModelConfig) -> dict[str, int]:
        return flops.transformer_pp_params(cfg)

    def train_flops_per_token(self, cfg: ModelConfig) -> float:
        return 3 * flops.forward_flops_per_token(cfg)

    def executed_train_flops_per_token(self, cfg: ModelConfig) -> float:
        return self.train_flops_per_token(cfg)

    def activation_terms(self, cfg: ModelConfig, micro_batch: int, value_bytes: int) -> dict[str, float]:
        m, B, e = cfg, micro_batch, value_bytes
        S, L, V = m.context_length, m.n_layers, m.vocab_size
        hidden = B * S * (L * _values(TPP_SAVED_PER_LAYER, m) + TPP_SAVED_ENDS * m.d_model) * e
        # the chunked CE (kernels.chunked_ce) keeps only the head's input, counted in hidden
        vocabulary = 0 if m.kernels.chunked_ce else B * S * V * 4 * TPP_VOCAB_VALUES
        saved = hidden + vocabulary
        return _terms(hidden, 0.0, vocabulary, 0.0, TPP_TRANSIENT * saved)

    def step_work(self, cfg: ModelConfig, micro_batch: int) -> StepWork:
        return StepWork(1.0, 0.0)


class EBTFamily:
    """The Energy-Based Transformer (model/ebt.py): K descent steps per forward, each an energy evaluation
    and a candidate gradient, with the graph of the kept steps backpropagated (second order)."""

    id = EBT

    def build(self, cfg: ModelConfig) -> ModelInterface:
        from model.ebt import EBT

        return EBT(cfg)

    def count_params(self, cfg: ModelConfig) -> dict[str, int]:
        return flops.ebt_params(cfg)

    def train_flops_per_token(self, cfg: ModelConfig) -> float:
        return flops.ebt_train_flops_per_token(cfg)

    def executed_train_flops_per_token(self, cfg: ModelConfig) -> float:
        if cfg.ebt.reuse_observed_kv:
            return flops.ebt_reuse_train_flops_per_token(cfg)
        return self.train_flops_per_token(cfg)

    def activation_terms(self, cfg: ModelConfig, micro_batch: int, value_bytes: int) -> dict[str, float]:
        m, B, e = cfg, micro_batch, value_bytes
        S, L, H, V = m.context_length, m.n_layers, m.n_heads, m.vocab_size
        x = m.ebt
        if x.replay_buffer_size:  # replayed rows join each micro-batch; the buffer keeps (S, V) candidates
            B += int(x.replay_fraction * B)
        replay_store = x.replay_buffer_size * S * V * 4
        P = x.n_step_tokens
        n, T = P + S, P + 2 * S
        K = x.train_step_counts[1]  # the largest draw: memory must fit the worst step
        kept = 1 if x.truncate_to_last_step else K
        ends = EBT_SAVED_ENDS[x.reuse_observed_kv] * S * m.d_model
        if x.reuse_observed_kv:
            step_hidden = B * (S * L * _values(EBT_REUSE_CANDIDATE_PER_LAYER, m) + ends) * e
            scores = flops.candidate_score_elements(S, P)  # per head and layer
            step_attention = EBT_REUSE_ATTENTION_MATRICES * B * H * L * scores * e
            # observed streams: one per step index (steps past mcmc_steps reuse the last), alive while the
            # descent runs; the backward keeps those of the kept steps (one with truncate_to_last_step)
            streams = min(K, x.mcmc_steps)
            indices = 1 if x.truncate_to_last_step else streams
            observed_hidden = (
                B
                * n
                * ((L - 1) * _values(EBT_OBSERVED_PER_LAYER, m) + EBT_OBSERVED_LAST_LAYER * m.d_model)
                * e
            )
            observed_attention = 0  # the fused causal kernel keeps a log-sum-exp per row and head only
        else:
            step_hidden = B * (T * L * _values(EBT_SAVED_PER_LAYER, m) + ends) * e
            step_attention = EBT_ATTENTION_MATRICES * B * H * L * T * T * e
            streams = indices = 0
            observed_hidden = observed_attention = 0
        step_vocabulary = B * S * V * 4 * EBT_VOCAB_VALUES_PER_STEP[x.reuse_observed_kv]
        one_step = step_hidden + step_attention + step_vocabulary
        forward_only_streams = (streams - indices) * (observed_hidden + observed_attention)
        return _terms(
            kept * step_hidden + indices * observed_hidden,
            kept * step_attention + indices * observed_attention,
            kept * step_vocabulary + replay_store,
            self.count_params(m)["total"] * EBT_WEIGHT_CLONE_VALUES_PER_PARAM * e,
            EBT_TRANSIENT_STEPS * one_step + forward_only_streams,
        )

    def step_work(self, cfg: ModelConfig, micro_batch: int) -> StepWork:
        """K + 2 x kept passes (each descent step's energy and candidate gradient, twice again for the outer
        backward of a kept step: the weighting of its FLOP count, with the expected K); attention elements
        weighted the same way: T^2 per layer per pass (full recompute, T = P + 2S), or the candidate scores
        (`flops.candidate_score_elements`: each block of rows x its observed keys + 1) plus n^2 per observed
        stream (forward once per step index, backward for the kept ones) with reuse_observed_kv."""
        x, B, S, L, H = cfg.ebt, micro_batch, cfg.context_length, cfg.n_layers, cfg.n_heads
        K, kept = flops.expected_train_steps(cfg)
        passes = K + 2 * kept
        n = x.n_step_tokens + S
        if x.reuse_observed_kv:
            streams = min(K, x.mcmc_steps)
            kept_streams = 1 if x.truncate_to_last_step else streams
            candidates = flops.candidate_score_elements(S, x.n_step_tokens)
            return StepWork(passes, B * H * L * (candidates * passes + n * n * (streams + 2 * kept_streams)))
        return StepWork(passes, B * H * L * (n + S) ** 2 * passes)


def _terms(
    hidden: float, attention: float, vocabulary: float, weights: float, transient: float
) -> dict[str, float]:
    saved = hidden + attention + vocabulary + weights
    return {
        "hidden": hidden,
        "attention": attention,
        "vocabulary": vocabulary,
        "weights": weights,
        "saved": saved,
        "transient": transient,
        "peak": saved + transient,
    }


# One per FamilyId, in FAMILY_NAMES' order (tests/model/test_family.py): every family the config accepts
# can be built and costed.
FAMILIES: dict[str, Family] = {f.id.name: f for f in (TransformerPPFamily(), EBTFamily())}


def family(cfg: ModelConfig) -> Family:
    """The family of a model config (the registry's one look-up)."""
    return FAMILIES[cfg.family]


def count_params(cfg: ModelConfig) -> dict[str, int]:
    """{'total', 'non_embedding'} for the family in cfg. Non-embedding excludes the token embedding and the
    vocabulary head (Kaplan et al.'s N), so it measures the network's own capacity."""
    return family(cfg).count_params(cfg)


def train_flops_per_token(cfg: ModelConfig) -> float:
    """Training FLOPs per token (forward + backward) for the family in cfg, in model/flops.py's convention.
    For the EBT: every descent step's forward and candidate gradient, and the outer backward through them
    (model.ebt, docs/ebt.md)."""
    return family(cfg).train_flops_per_token(cfg)


def executed_train_flops_per_token(cfg: ModelConfig) -> float:
    """Training FLOPs per token the configured model actually computes: `train_flops_per_token` (the study's
    convention, the authors' full recompute), except an EBT with `reuse_observed_kv`, which computes less.
    What time estimates and hardware utilisation need."""
    return family(cfg).executed_train_flops_per_token(cfg)


def activation_terms(cfg: ModelConfig, micro_batch: int, value_bytes: int) -> dict[str, float]:
    """Activation memory of one micro-batch, in bytes: what autograd keeps for the backward, by kind, and
    the peak it causes. Keys: hidden, attention, vocabulary, weights, saved (their sum), transient, peak.

    B = micro-batch, S = context, L layers, H heads, d = d_model, f = d_ff, V = vocabulary, e = bytes per
    activation value (`value_bytes`: 4 fp32, 2 bf16; vocabulary-sized tensors are fp32). Values per row and
    layer are counted from what the code saves (coefficients and where they were counted: the constants
    above).

    Transformer++ (one graph; fused attention keeps no T x T matrix):
        hidden = B S (L (13d + 4f) + 3d) e,  vocabulary = B S V 4 (0 with kernels.chunked_ce),
        transient = TPP_TRANSIENT x saved.

    EBT (model/ebt.py: K = the largest training step count; B grows by the replayed rows and vocabulary by
    the replay buffer's stored (S, V) fp32 candidates when it is on; the graph of every step is kept
    for the second-order backward, only the last one's with truncate_to_last_step: k kept steps; P = 1 step
    token for variant time_embed, else 0; n = P + S observed rows). Per kept step:
    - full recompute (reuse_observed_kv false): every energy evaluation runs all T = P + 2S rows through L
      blocks, keeping their forward and candidate-gradient graphs: hidden B (T L (24d + 12f) + 8Sd) e and
      three (B, H, T, T) attention matrices per layer (MATH kernel): 3 B H L T^2 e;
    - reuse_observed_kv: only the S candidate rows run per step, each attending to the n observed keys it
      may see and to itself: hidden B S (L (26d + 12f) + 7d) e, attention 3 B H L C e with C the candidate
      scores per head (`flops.candidate_score_elements`: at most S (n + 1), less where the rows are split
      into blocks that score a prefix of the keys). The observed stream is computed once per distinct step
      index (min(k, mcmc_steps - 1)) under the fused causal kernel, and only its keys and values are used:
      B n ((L-1)(14d + 4f) + 5d) e hidden per index and no attention matrix (the backward keeps the kept
      steps' indices; with truncate_to_last_step the others live during the descent only: counted as
      transient);
    - vocabulary: 3 B S V 4 (candidate softmax p, CE log-softmax, one of the candidate gradient's graph),
      2 B S V 4 with reuse_observed_kv (no (B, S, V) tensor in the candidate gradient's graph).
    weights: SecondOrderSafe runs the EBT on clones of its weights, made by every forward and kept by the
    graph until the backward has summed their gradients: N x EBT_WEIGHT_CLONE_VALUES_PER_PARAM x e.
    transient = EBT_TRANSIENT_STEPS x one kept step's saved bytes (the outer backward's buffers belong to the
    step it is in) + the descent-only observed streams.
    """
    return family(cfg).activation_terms(cfg, micro_batch, value_bytes)
