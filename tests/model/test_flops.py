"""FLOP and parameter arithmetic (model/flops.py) against what torch runs: FlopCounterMode's matmul count of
the real modules (math SDPA kernel: the counter skips CPU's fused one), the models' own parameters, and
known answers of the convention (docs/ebt.md §5)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from model.config import EBTConfig, ModelConfig
from model.ebt import EBT, system2_recipe
from model.family import count_params
from model.flops import (
    ebt_inference_flops_per_token,
    ebt_reuse_train_flops_per_token,
    ebt_train_flops_per_token,
    energy_eval_flops,
    expected_train_steps,
    forward_flops_per_token,
)
from model.transformer_pp import TransformerPP
from tests.helpers import seeded_model, token_batch

V, S, B = 24, 8, 2

pytestmark = pytest.mark.usefixtures("one_thread")


def config(family: str = "ebt", context: int = S, **ebt: object) -> ModelConfig:
    """Two layers, d 16, d_ff 32 (not the 8/3 default: a wrong d_ff term shows)."""
    shape = dict(d_model=16, n_layers=2, n_heads=2, d_ff=32, vocab_size=V, context_length=context)
    return ModelConfig(family=family, **shape, ebt=EBTConfig(**ebt))


def counted(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize("length", [S, 5])
def test_transformer_pp_forward_is_the_flop_counters(length: int) -> None:
    """Exact: the linears, QK^T and AV over the full square, the head; at the context or a shorter length."""
    cfg = config("transformer_pp")
    model = seeded_model(cfg)
    tokens, _ = token_batch(B, vocab=V, length=length)
    seq_len = None if length == S else length
    assert counted(lambda: model.logits(tokens)) == forward_flops_per_token(cfg, seq_len) * B * length


@pytest.mark.parametrize("variant", ["time_embed", "default"])
@pytest.mark.parametrize("length", [S, 5])
def test_an_energy_evaluation_is_the_flop_counters(variant: str, length: int) -> None:
    """Exact, forward and candidate gradient, of the full recompute over [step token | observed | candidates]
    (what the study's count is made of), with and without the step token, at the context or shorter."""
    cfg = config(variant=variant)
    model = seeded_model(cfg)
    tokens, _ = token_batch(B, vocab=V, length=length)
    probs = torch.rand(B, length, V).softmax(-1).requires_grad_()
    with sdpa_kernel(SDPBackend.MATH):
        energy = model.energy(tokens, probs, 0)
    forward = counted(lambda: model.energy(tokens, probs, 0))
    gradient = counted(lambda: torch.autograd.grad(energy.sum(), probs))
    seq_len = None if length == S else length
    assert (forward, gradient) == tuple(B * n for n in energy_eval_flops(cfg, seq_len))


@pytest.mark.parametrize(
    "ebt",
    [
        EBTConfig(),  # System-1: alpha learnable, detached, every step kept
        EBTConfig(variant="default", candidate_embedding="token_embedding", mcmc_steps=3),
        EBTConfig(mcmc_steps=3, detach_between_steps=False),
        # System-2 (alpha fixed, no detach, truncated), K = 3 on one landscape: one observed stream
        system2_recipe(mcmc_steps_random_min=3, replay_buffer_size=0),
        system2_recipe(mcmc_steps=2, mcmc_steps_random_max=2, step_size_learnable=True, replay_buffer_size=0),
    ],
    ids=["system1", "default-token-embedding-k3", "no-detach", "system2-k3", "system2-alpha-learnt"],
)
def test_the_reuse_training_step_is_the_flop_counters(ebt: EBTConfig) -> None:
    """Exact, a whole training step (forward and backward, second order) of the default path: the count is
    the counter's plus the 3 energy-head products per kept step that the convention's "a backward costs
    twice its forward" counts and autograd skips (the energy never reaches the loss, only its gradient)."""
    cfg = config(**ebt.model_dump())
    assert ebt.reuse_observed_kv
    model = seeded_model(cfg)
    tokens, targets = token_batch(B, vocab=V, length=S)
    measured = counted(lambda: model(tokens, targets).backward())
    kept = 1 if ebt.truncate_to_last_step else ebt.train_step_counts[0]
    convention = 3 * 2 * S * cfg.d_model * kept * B
    assert ebt_reuse_train_flops_per_token(cfg) * B * S == measured + convention


@pytest.mark.parametrize(
    "ebt, evaluations",
    [
        (EBTConfig(), 2 + 2 * 2),  # K = 2 steps, each backpropagated
        (EBTConfig(mcmc_steps=3), 3 + 2 * 3),
        (EBTConfig(mcmc_steps=3, truncate_to_last_step=True), 3 + 2 * 1),  # only the last step's graph
        (system2_recipe(replay_buffer_size=0), 2.5 + 2 * 1),  # K uniform in {2, 3}, truncated
        (system2_recipe(), 1.5 * (2.5 + 2 * 1)),  # half a batch more rows replayed
    ],
    ids=["system1", "k3", "truncated", "system2", "system2-replay"],
)
def test_training_costs_energy_evaluations(ebt: EBTConfig, evaluations: float) -> None:
    """The study's count (the authors' full recompute) in units of one energy evaluation with its candidate
    gradient (one thinking step): E[K] for the descent, twice the kept steps for the outer backward."""
    cfg = config(**ebt.model_dump())
    one_step = ebt_inference_flops_per_token(cfg, steps=1)
    assert ebt_train_flops_per_token(cfg) == pytest.approx(evaluations * one_step, rel=1e-12)


def test_counts_at_a_shorter_length_are_those_of_a_shorter_context() -> None:
    cfg, short = config(), config(context=5)
    assert ebt_train_flops_per_token(cfg, 5) == ebt_train_flops_per_token(short)
    assert ebt_inference_flops_per_token(cfg, 3, 2, seq_len=5) == ebt_inference_flops_per_token(short, 3, 2)
    assert forward_flops_per_token(cfg, 5) == forward_flops_per_token(config("transformer_pp", context=5))
    assert ebt_inference_flops_per_token(cfg, 3, 2) == 6 * ebt_inference_flops_per_token(cfg, 1)


def test_a_random_step_count_costs_the_mean_over_its_range() -> None:
    """K uniform in {2, 3, 4} on one landscape: the mean of the three fixed-K counts (the average over the
    batches of a long run)."""

    def cfg(low: int, high: int) -> ModelConfig:
        return config(**system2_recipe(mcmc_steps_random_min=low, mcmc_steps_random_max=high).model_dump())

    fixed = [ebt_reuse_train_flops_per_token(cfg(k, k)) for k in (2, 3, 4)]
    assert ebt_reuse_train_flops_per_token(cfg(2, 4)) == pytest.approx(sum(fixed) / 3, rel=1e-12)
    assert expected_train_steps(cfg(2, 4)) == (3, 1)
    assert expected_train_steps(config(mcmc_steps=3)) == (3, 3)


@pytest.mark.parametrize("tie", [False, True])
def test_the_token_embedding_candidate_map_is_the_token_embedding(tie: bool) -> None:
    """candidate_embedding="token_embedding" (or tie_embeddings) maps p to p @ embed.weight: a one-hot p is
    its token's embedding, and the model has (and the count counts) no V x d map of its own."""
    cfg = config(candidate_embedding="token_embedding").model_copy(update={"tie_embeddings": tie})
    model = seeded_model(cfg)
    assert isinstance(model, EBT) and model.cand_embed is None
    one_hot = torch.eye(V)[None]  # (1, V, V): candidate t is token t
    torch.testing.assert_close(model.candidate_input(one_hot)[0], model.embed.weight, rtol=0, atol=0)
    linear = count_params(config())["total"]
    assert count_params(cfg)["total"] == sum(p.numel() for p in model.parameters()) == linear - V * 16


def test_transformer_pp_parameters() -> None:
    """Shared weights counted once: tying removes the head's V x d."""
    for tie in (False, True):
        cfg = config("transformer_pp").model_copy(update={"tie_embeddings": tie})
        assert count_params(cfg)["total"] == sum(p.numel() for p in TransformerPP(cfg).parameters())
