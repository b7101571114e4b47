"""The family registry: one `Family` per named family, every family builds a model with the trainer's
interface, and its torch-free counts describe the model it builds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch

from model import ModelInterface, build_model
from model.config import EBTConfig, KernelsConfig, ModelConfig
from model.family import FAMILIES, count_params, family
from model.family_ids import FAMILY_IDS, FAMILY_NAMES
from tests.helpers import benchmark_module


def test_every_named_family_has_its_family_and_no_other() -> None:
    """Every value the config accepts (model/family_ids.py) can be built and costed."""
    assert tuple(FAMILIES) == FAMILY_NAMES
    assert all(FAMILIES[name].id is FAMILY_IDS[name] for name in FAMILY_NAMES)


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


@pytest.fixture(scope="module")
def reachable_saved() -> Iterator[Any]:
    """bench_memory's walk of the autograd graph: the distinct storages a loss's backward keeps."""
    with benchmark_module("bench_memory") as module:
        yield module.reachable_saved


@pytest.mark.parametrize(
    "family_name, ebt",
    [
        ("transformer_pp", {}),
        ("ebt", {}),  # reuse_observed_kv, the default
        ("ebt", {"reuse_observed_kv": False}),
        ("ebt", {"mcmc_steps": 3, "truncate_to_last_step": True}),
        ("ebt", {}),  # context 160: the candidate attention in 2 blocks
    ],
    ids=["tpp", "ebt-reuse", "ebt-full", "ebt-reuse-k3-truncated", "ebt-reuse-blocks"],
)
def test_the_planned_activation_terms_are_what_autograd_keeps(
    family_name: str, ebt: dict[str, Any], reachable_saved: Any, request: pytest.FixtureRequest
) -> None:
    """The planner's memory estimate rests on these terms: a change to what the models save for their
    backward (a new attention layout, a kept tensor more) must come with new coefficients."""
    context = 160 if request.node.callspec.id == "ebt-reuse-blocks" else 48
    shape = dict(d_model=64, n_layers=2, n_heads=2, vocab_size=200, context_length=context)
    cfg = ModelConfig(family=family_name, **shape, **({"ebt": ebt} if ebt else {}))
    B = 3
    torch.manual_seed(0)
    model = build_model(cfg)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    x = torch.randint(0, cfg.vocab_size, (B, cfg.context_length))
    loss = model(x, x, sample_ids=torch.arange(B), step_seed=0)
    kept = sum(nbytes for _, nbytes in reachable_saved(loss, params).values())
    terms = family(cfg).activation_terms(cfg, B, value_bytes=4)
    planned = terms["hidden"] + terms["attention"] + terms["vocabulary"]
    assert kept == pytest.approx(planned, rel=0.03)


@pytest.mark.parametrize("family_name", ["transformer_pp", "ebt"])
def test_the_planned_activation_terms_with_the_chunked_ce_are_what_autograd_keeps(
    family_name: str, reachable_saved: Any
) -> None:
    """`kernels.chunked_ce`: the Transformer++ keeps no vocabulary-sized tensor (its chunks' logits are made
    again in the backward), the EBT the same count as the plain CE's (the CE keeps the candidate logits in
    place of their log-softmax); the planner counts that."""
    shape = dict(d_model=64, n_layers=2, n_heads=2, vocab_size=200, context_length=48)
    cfg = ModelConfig(family=family_name, **shape, kernels=KernelsConfig(chunked_ce=True, ce_chunk_rows=40))
    B = 3
    torch.manual_seed(0)
    model = build_model(cfg)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    x = torch.randint(0, cfg.vocab_size, (B, cfg.context_length))
    loss = model(x, x, sample_ids=torch.arange(B))
    kept = sum(nbytes for _, nbytes in reachable_saved(loss, params).values())
    terms = family(cfg).activation_terms(cfg, B, value_bytes=4)
    plain_cfg = cfg.model_copy(update={"kernels": KernelsConfig()})
    plain = family(cfg).activation_terms(plain_cfg, B, value_bytes=4)
    assert kept == pytest.approx(terms["hidden"] + terms["attention"] + terms["vocabulary"], rel=0.03)
    if family_name == "transformer_pp":
        assert terms["vocabulary"] == 0 < plain["vocabulary"]
    else:
        assert terms["vocabulary"] == plain["vocabulary"]
