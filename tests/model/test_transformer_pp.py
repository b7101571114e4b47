"""Transformer++ baseline and the shared blocks: shapes, causality, exact counts, learnability."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from model import build_model
from model.blocks import Block, rotary_cos_sin
from model.config import ModelConfig
from model.family import count_params, train_flops_per_token
from model.flops import forward_flops_per_token
from model.transformer_pp import TransformerPP
from tests.helpers import seeded_model, token_batch

V, T = 64, 16


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**kw: object) -> ModelConfig:
    return ModelConfig(
        **{"d_model": 32, "n_layers": 2, "n_heads": 2, "vocab_size": V, "context_length": T, **kw}
    )


make = seeded_model  # a Transformer++ (from tiny()) with the initial weights of `seed`
batch = partial(token_batch, vocab=V, length=T)


def test_shapes_and_interface() -> None:
    model = make(tiny())
    assert isinstance(build_model(tiny()), TransformerPP)
    tokens, targets = batch(3)
    assert model.logits(tokens).shape == (3, T, V)
    loss = model(tokens, targets, sample_ids=torch.arange(3), step_seed=0)  # the uniform interface
    assert loss.shape == () and loss.requires_grad
    assert torch.equal(loss, model(tokens, targets))  # sample_ids/step_seed are ignored
    ev = model.eval_loss(tokens, targets, sample_ids=torch.arange(3))
    assert not ev.requires_grad and torch.equal(ev, loss.detach())
    assert model.lr_multipliers() == {}


def test_causality() -> None:
    model = make(tiny())
    tokens, _ = batch(2)
    with torch.no_grad():
        base = model.logits(tokens)
        for i in (0, 5, T - 2):
            future = tokens.clone()
            future[:, i + 1 :] = (future[:, i + 1 :] + 1) % V
            logits = model.logits(future)
            torch.testing.assert_close(logits[:, : i + 1], base[:, : i + 1], rtol=0, atol=1e-6)
            assert not torch.allclose(logits[:, i + 1 :], base[:, i + 1 :])


def test_attention_with_past_keys_values_matches_one_pass() -> None:
    """Block.forward_kv (the EBT's observed-stream reuse) = one causal pass over the whole sequence."""
    cfg = tiny()
    torch.manual_seed(0)
    block = Block(cfg)
    x = torch.randn(2, T, cfg.d_model)
    cos, sin = rotary_cos_sin(torch.arange(T), cfg.head_dim, cfg.rope_theta)
    with torch.no_grad():
        whole = block(x, cos, sin)
        P = 10
        head, kv = block.forward_kv(x[:, :P], cos[:P], sin[:P])
        mask = torch.ones(T - P, T, dtype=torch.bool).tril(diagonal=P)  # row r = position P+r sees 0..P+r
        tail, _ = block.forward_kv(x[:, P:], cos[P:], sin[P:], mask, past_kv=kv)
    torch.testing.assert_close(torch.cat([head, tail], dim=1), whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tie", [False, True])
def test_param_count_is_exact(tie: bool) -> None:
    cfg = tiny(tie_embeddings=tie, n_layers=3, d_ff=40)
    model = make(cfg)
    counts = count_params(cfg)
    assert counts["total"] == sum(p.numel() for p in model.parameters())  # shared weights counted once
    assert counts["non_embedding"] == sum(
        p.numel() for n, p in model.named_parameters() if n.startswith(("blocks.", "norm."))
    )


def test_train_flops_match_flop_counter() -> None:
    cfg = tiny()
    model = make(cfg)
    tokens, targets = batch(2)
    with (
        FlopCounterMode(display=False) as counter,
        sdpa_kernel(SDPBackend.MATH),
    ):  # CPU fused SDPA is uncounted
        model(tokens, targets).backward()
    predicted = train_flops_per_token(cfg) * tokens.numel()
    assert predicted == 3 * forward_flops_per_token(cfg) * tokens.numel()
    assert abs(counter.get_total_flops() / predicted - 1) < 0.05


def test_overfits_a_tiny_batch() -> None:
    model = make(tiny())
    tokens, targets = batch(4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    initial = float(model.eval_loss(tokens, targets))
    for _ in range(100):
        loss = model(tokens, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(model.eval_loss(tokens, targets)) < 0.5 * initial


class AtenOps(TorchDispatchMode):
    """The names of the aten ops that run under it."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops.add(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("family", ["transformer_pp", "ebt"])
def test_causal_attention_takes_the_fused_sdpa_kernel(family: str) -> None:
    """A training step's causal attention (the Transformer++'s, the EBT's observed stream) runs SDPA's flash
    kernel, forward and backward (CPU's here, CUDA's flash kernel in bf16 on a GPU), never the MATH one that
    materialises the T x T scores; the EBT's candidate attention is its own matmuls and softmax."""
    model = make(tiny(family=family))
    tokens, targets = batch(2)
    with AtenOps() as seen:
        model(tokens, targets, sample_ids=torch.arange(2)).backward()
    attention = {op for op in seen.ops if "scaled_dot_product" in op}
    assert attention == {
        "aten._scaled_dot_product_flash_attention_for_cpu.default",
        "aten._scaled_dot_product_flash_attention_for_cpu_backward.default",
    }
