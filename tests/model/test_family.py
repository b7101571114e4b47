"""The family registry: every family builds a model with the trainer's interface, and its torch-free counts
describe the model it builds."""

from __future__ import annotations

import pytest

from model import ModelInterface, build_model
from model.config import EBTConfig, ModelConfig
from model.family import FAMILIES, family
from model.flops import count_params


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_family_builds_what_its_counts_describe(name: str) -> None:
    cfg = ModelConfig(family=name, d_model=16, n_layers=2, n_heads=2, vocab_size=40, context_length=8)
    model = build_model(cfg)
    assert family(cfg) is FAMILIES[name] and isinstance(model, ModelInterface)
    assert count_params(cfg)["total"] == sum(p.numel() for p in model.parameters())
    assert family(cfg).train_flops_per_token(cfg) > 0 and family(cfg).step_work(cfg, 2).passes >= 1


def test_the_step_token_count_is_the_variants() -> None:
    assert (
        EBTConfig(variant="time_embed").n_step_tokens == 1 and EBTConfig(variant="default").n_step_tokens == 0
    )
