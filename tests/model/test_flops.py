"""FLOP and parameter arithmetic (model/flops.py) against what torch runs: FlopCounterMode's matmul count of
the real modules (math SDPA kernel: the counter skips CPU's fused one), the models' own parameters, and
known answers of the convention (docs/ebt.md §5)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from model.config import EBTConfig, ModelConfig
from model.ebt import system2_recipe
from model.flops import ebt_reuse_train_flops_per_token
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
