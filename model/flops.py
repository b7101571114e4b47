"""Exact parameter counts and analytic FLOPs per token: arithmetic on a config, torch-free.

Convention (the one `torch.utils.flop_counter.FlopCounterMode` and the Chinchilla paper use): count matmul
FLOPs only (2 per multiply-add), attention scores over the full T x T square (causal masking is not
subtracted), a backward pass costs twice its forward. Norms, activations and the embedding lookup are ignored.

The per-config entry points (`count_params`, `train_flops_per_token`, `executed_train_flops_per_token`)
are model/family.py's: each family picks its formulas from here. This module imports no family code, so
the registry and the models (model/ebt.py) can both build on it without an import cycle.
"""

from __future__ import annotations

import itertools

from model.config import ModelConfig
from model.family_ids import EBT


def block_params(cfg: ModelConfig) -> int:
    d, f = cfg.d_model, cfg.ff_dim
    return 4 * d * d + 3 * d * f + 2 * d  # qkv + proj, gate/up/down, two RMSNorm gains


def trunk_params(cfg: ModelConfig) -> int:
    """The blocks and the final norm: what both families share."""
    return cfg.n_layers * block_params(cfg) + cfg.d_model


def transformer_pp_params(cfg: ModelConfig) -> dict[str, int]:
    d, V = cfg.d_model, cfg.vocab_size
    blocks = trunk_params(cfg)
    embedding = V * d + (0 if cfg.tie_embeddings else V * d)
    return {"total": blocks + embedding, "non_embedding": blocks}


def forward_flops_per_token(cfg: ModelConfig, seq_len: int | None = None) -> float:
    """Transformer++ forward matmul FLOPs per token at sequence length T (default: context length)."""
    T = seq_len or cfg.context_length
    d, f, V = cfg.d_model, cfg.ff_dim, cfg.vocab_size
    per_layer = 2 * (4 * d * d + 3 * d * f) + 2 * 2 * T * d  # linears + (QK^T, AV)
    return cfg.n_layers * per_layer + 2 * d * V


# ----------------------------------------------------------------------------------------------------------
# The EBT's parameter and FLOP counts (same conventions; derivation in docs/ebt.md). Arithmetic on the
# config only, here rather than in model/ebt.py so that planning never imports torch.


def tied_candidate_map(cfg: ModelConfig) -> bool:
    """Candidate embedding = probs @ token embedding ('token_embedding', or tie_embeddings=True)."""
    return cfg.tie_embeddings or cfg.ebt.candidate_embedding == "token_embedding"


CANDIDATE_BLOCK_MIN_ROWS = 64  # fewer rows per block: the blocks' extra ops cost more than the scores skipped
CANDIDATE_BLOCKS_MAX = 4  # measured best on CPU at context 256 (benchmarks/NOTES.md; 8 blocks were slower)


def candidate_blocks(S: int, P: int) -> list[tuple[int, int, int]]:
    """The S candidate rows in up to CANDIDATE_BLOCKS_MAX blocks of rows [start, end), each with the number
    of leading observed keys its rows may see, P + end (candidate t sees keys 0..P+t): a block of early
    candidates scores only a short prefix of the P + S observed keys, where one (S, P + S) score matrix would
    be about half -inf. -> [(start, end, keys)]"""
    count = max(1, min(CANDIDATE_BLOCKS_MAX, S // CANDIDATE_BLOCK_MIN_ROWS))
    bounds = [S * i // count for i in range(count + 1)]
    return [(start, end, P + end) for start, end in itertools.pairwise(bounds)]


def candidate_score_elements(S: int, P: int) -> int:
    """Scores per head of one candidate-stream attention: each block's rows x (its keys + the self score)."""
    return sum((end - start) * (keys + 1) for start, end, keys in candidate_blocks(S, P))


def ebt_params(cfg: ModelConfig) -> dict[str, int]:
    """The EBT's count: the trunk, a token embedding but no vocabulary head (tie_embeddings ties the EBT's
    candidate map instead), and `ebt_extra_params`."""
    blocks, extra = trunk_params(cfg), ebt_extra_params(cfg)
    return {
        "total": blocks + cfg.vocab_size * cfg.d_model + extra["total"],
        "non_embedding": blocks + extra["non_embedding"],
    }


def ebt_extra_params(cfg: ModelConfig) -> dict[str, int]:
    """Parameters of the EBT beyond the blocks, final norm and token embedding (which ebt_params adds):
    candidate map V*d ('linear', untied), step embeddings K*d ('time_embed'), energy head d, learnable alpha.
    Non-embedding counts the energy head and alpha (the vocabulary-sized map is excluded like the
    Transformer++ head, the step embeddings like position embeddings)."""
    e, d, V = cfg.ebt, cfg.d_model, cfg.vocab_size
    cand = 0 if tied_candidate_map(cfg) else V * d
    steps = e.mcmc_steps * d * e.n_step_tokens
    own = d + (1 if e.step_size_learnable else 0)  # energy head + alpha
    return {"total": cand + steps + own, "non_embedding": own}


def energy_eval_flops(cfg: ModelConfig, seq_len: int | None = None) -> tuple[float, float]:
    """(forward, candidate-gradient backward) matmul FLOPs of one energy evaluation of one sequence.

    Forward over T = P + 2S rows: per layer 2T(4d^2 + 3df) for the linears plus 4T^2 d for QK^T and AV;
    candidate map 2SVd; energy head 2Sd. The candidate gradient (autograd.grad w.r.t. the candidate only)
    skips weight gradients: each linear costs one matmul (its input gradient, over all T rows since the
    observed keys/values are on the path), attention backward costs twice its forward (dQ, dK, dV, dP).
    """
    S = seq_len or cfg.context_length
    P = cfg.ebt.n_step_tokens
    T, d, f, V, L = P + 2 * S, cfg.d_model, cfg.ff_dim, cfg.vocab_size, cfg.n_layers
    linears = L * 2 * T * (4 * d * d + 3 * d * f)
    attention = L * 2 * 2 * T * T * d
    ends = 2 * S * V * d + 2 * S * d  # candidate map + energy head
    return linears + attention + ends, linears + 2 * attention + ends


def expected_train_steps(cfg: ModelConfig) -> tuple[float, float]:
    """(E[K] steps, E[steps whose graph is kept]) of one training forward."""
    e = cfg.ebt
    low, high = e.train_step_counts
    K = low if low == high else (low + high) / 2
    return K, 1.0 if e.truncate_to_last_step else K


def replay_rows_factor(cfg: ModelConfig) -> float:
    """Sequences a training forward runs per fresh sequence: 1, or 1 + the replayed fraction with the
    System-2 replay buffer (its rows are extra compute on the same fresh tokens)."""
    e = cfg.ebt
    return 1.0 + e.replay_fraction if cfg.family == EBT.name and e.replay_buffer_size > 0 else 1.0


def ebt_train_flops_per_token(cfg: ModelConfig, seq_len: int | None = None) -> float:
    """Training FLOPs per observed token: every step costs its forward f and candidate gradient g; the outer
    backward through a kept step (forward + gradient graph) costs 2(f + g), as any backward is twice its
    forward. Steps outside the kept graph (truncate) are never backpropagated. Counts the authors' full
    recompute, also when reuse_observed_kv computes less."""
    S = seq_len or cfg.context_length
    fwd, grad = energy_eval_flops(cfg, S)
    K, K_graph = expected_train_steps(cfg)
    return replay_rows_factor(cfg) * (K + 2 * K_graph) * (fwd + grad) / S


def ebt_reuse_train_flops_per_token(cfg: ModelConfig) -> float:
    """Training matmul FLOPs per token of the EBT with `reuse_observed_kv=True` (model.flops conventions: 2
    per multiply-add, attention over the full rectangle, a backward costs twice its forward).

    With n = P + S observed rows (step token + tokens), per layer lin(r) = 2r(4d^2 + 3df) for r rows and
    attn(q, k) = 4qkd for q queries over k keys:
    - observed stream, once per distinct step index: F_o = (L - 1)(lin(n) + attn(n, n)) + 6nd^2. Only its
      keys/values are used, so the last block stops at its qkv projection;
    - candidate stream, every step: F_c = L(lin(S) + A) + 2SVd + 2Sd, A = sum over `candidate_blocks` of
      attn(rows, keys) (the candidates score the observed keys their block may see; each candidate's score
      with itself is elementwise; candidate map + energy head);
    - candidate gradient (autograd.grad w.r.t. the candidate embedding, then one GEMM to the vocabulary):
      G_c = L(lin(S) + A) + 2SVd + 2Sd (gradients on the way to the candidates only: the linears' inputs,
      the attention's queries and weights, not the observed keys/values);
    - outer backward: 2(F_c + G_c) per kept step, less 2SVd where the step's probabilities have no gradient
      (through the candidate map), and 2 F_o per distinct index the kept steps use. They have none at step
      0, after a detach, and with truncate_to_last_step unless alpha is learnable: the earlier steps ran
      without a graph, so the kept step's input depends on the parameters only through alpha's updates; with
      a learnable alpha each earlier step then adds 2SVd (the loss's gradient through its GEMM, to alpha).
    Step indices are min(k, mcmc_steps - 1); a random step count is averaged over its uniform range; replayed
    rows (System-2 replay buffer) scale the whole.
    Checked against torch's FlopCounterMode (tests/model/test_flops.py): the count is the counter's plus
    3 x 2Sd per kept step, energy-head products the convention's 2(F_c + G_c) counts but autograd skips (the
    energy itself never reaches the loss, only its gradient does)."""
    e, S = cfg.ebt, cfg.context_length
    P = e.n_step_tokens
    d, f, V, L = cfg.d_model, cfg.ff_dim, cfg.vocab_size, cfg.n_layers
    n = P + S

    def lin(rows: int) -> float:
        return 2 * rows * (4 * d * d + 3 * d * f)

    def attn(queries: int, keys: int) -> float:
        return 4 * queries * keys * d

    ends = 2 * S * V * d + 2 * S * d
    obs_fwd = (L - 1) * (lin(n) + attn(n, n)) + 6 * n * d * d
    obs_bwd = 2 * obs_fwd
    cand_attn = sum(attn(end - start, keys) for start, end, keys in candidate_blocks(S, P))
    cand_fwd = L * (lin(S) + cand_attn) + ends
    cand_grad = L * (lin(S) + cand_attn) + ends
    low, high = e.train_step_counts
    counts = range(low, high + 1)

    def probs_have_grad(k: int) -> bool:
        graph = not e.truncate_to_last_step or e.step_size_learnable  # a path back to the earlier steps
        return k > 0 and not e.detach_between_steps and graph

    total = 0.0
    for K in counts:
        index = [min(k, e.mcmc_steps - 1) for k in range(K)]
        kept = [K - 1] if e.truncate_to_last_step else list(range(K))
        total += len(set(index)) * obs_fwd + K * (cand_fwd + cand_grad)
        total += len({index[k] for k in kept}) * obs_bwd + len(kept) * 2 * (cand_fwd + cand_grad)
        total -= sum(2 * S * V * d for k in kept if not probs_have_grad(k))  # no ∂L/∂p
        if e.truncate_to_last_step and e.step_size_learnable and not e.detach_between_steps:
            total += (K - 1) * 2 * S * V * d  # ∂L/∂(α ∂E/∂c) of each step before the kept one
    return replay_rows_factor(cfg) * total / len(counts) / S


def ebt_inference_flops_per_token(
    cfg: ModelConfig, steps: int, candidates: int = 1, seq_len: int | None = None
) -> float:
    """FLOPs per token of `think(steps, candidates)`: steps * candidates energy evaluations, each a forward
    and a candidate gradient."""
    S = seq_len or cfg.context_length
    fwd, grad = energy_eval_flops(cfg, S)
    return steps * candidates * (fwd + grad) / S
