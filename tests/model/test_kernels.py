"""`kernels.compile` (model/kernels.py) and `kernels.chunked_ce` on both families: the compiled model computes
what the eager one does, its second-order path included, and a small model still learns with them on.

torch.compile (inductor) takes 10-30 s per graph on a loaded 2-core machine: every test here uses the same
two shapes (one Transformer++, one EBT), so the suite compiles few graphs."""

from __future__ import annotations

import math

import pytest
import torch

import model.kernels
from model.config import EBTConfig, KernelsConfig, ModelConfig
from model.ebt import EBT, system2_recipe
from model.loss import IGNORE_INDEX
from model.transformer_pp import TransformerPP
from tests.helpers import seeded_model, token_batch

# compiling is slow where the inductor cache is cold (a fresh machine: 73 s, 30 s; warm: 8 s, 4 s, 2 s)
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]

OFF = KernelsConfig()
ON = KernelsConfig(compile=True, chunked_ce=True, ce_chunk_rows=24)  # chunks that split sequences
# compiled (inductor, CPU C++ kernels, fp32) against eager: fused kernels sum in another order
RTOL, ATOL = 1e-4, 1e-6


def tpp(kernels: KernelsConfig = OFF) -> ModelConfig:
    return ModelConfig(d_model=32, n_layers=2, n_heads=2, vocab_size=64, context_length=16, kernels=kernels)


def ebt(kernels: KernelsConfig = OFF, **recipe: object) -> ModelConfig:
    return ModelConfig(
        family="ebt",
        d_model=32,
        n_layers=2,
        n_heads=2,
        vocab_size=16,
        context_length=8,
        ebt=EBTConfig(**recipe),
        kernels=kernels,
    )


def loss_and_grads(
    net: torch.nn.Module, tokens: torch.Tensor, targets: torch.Tensor, **kw: object
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    net.zero_grad()
    loss = net(tokens, targets, **kw)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    assert len(grads) == sum(1 for p in net.parameters() if p.requires_grad)  # every parameter has one
    return loss.detach(), grads


def assert_same(got: tuple[torch.Tensor, dict], want: tuple[torch.Tensor, dict]) -> float:
    """Loss and every parameter gradient equal within RTOL/ATOL -> the largest relative gradient error."""
    torch.testing.assert_close(got[0], want[0], rtol=RTOL, atol=ATOL)
    worst = 0.0
    for name, g in want[1].items():
        torch.testing.assert_close(got[1][name], g, rtol=RTOL, atol=ATOL, msg=lambda m, n=name: f"{n}: {m}")
        worst = max(worst, float((got[1][name] - g).norm() / g.norm().clamp(min=1e-30)))
    return worst


def test_transformer_pp_compiled_with_the_chunked_ce_matches_eager() -> None:
    tokens, targets = token_batch(4, vocab=64, length=16)
    targets = targets.clone()  # a view of the tokens' data
    targets[1, :5] = IGNORE_INDEX
    eager = loss_and_grads(seeded_model(tpp()), tokens, targets)
    fast_model = seeded_model(tpp(ON))
    fast = loss_and_grads(fast_model, tokens, targets)
    assert (TransformerPP, "features") in model.kernels._COMPILED  # the compiled trunk ran
    print(f"transformer_pp: loss {float(fast[0] - eager[0]):.1e}, gradient {assert_same(fast, eager):.1e}")
    with torch.no_grad():  # evaluation: the compiled trunk, the plain CE
        torch.testing.assert_close(
            fast_model.eval_loss(tokens, targets), seeded_model(tpp()).eval_loss(tokens, targets)
        )


@pytest.mark.parametrize(
    "recipe",
    [EBTConfig(), system2_recipe(mcmc_steps=2, replay_buffer_size=0)],
    ids=["system1", "system2-no-detach-truncated"],
)
def test_ebt_compiled_with_the_chunked_ce_matches_eager(recipe: EBTConfig) -> None:
    """The observed stream compiled, the candidate stream eager. Second order: the training loss and every
    parameter gradient, whose outer backward runs through the candidate gradients taken with create_graph
    (and through the compiled stream's first-order backward). First order: the descent of `think`, where
    the candidate gradient is plain, and its energies and final candidates."""
    tokens, targets = token_batch(4, vocab=16, length=8)
    targets = targets.clone()  # a view of the tokens' data
    targets[0, 3:] = IGNORE_INDEX
    ids = torch.arange(4)
    cfg = dict(recipe.model_dump(), step_size=50.0)
    eager_model, fast_model = seeded_model(ebt(**cfg)), seeded_model(ebt(ON, **cfg))
    eager = loss_and_grads(eager_model, tokens, targets, sample_ids=ids, step_seed=3)
    fast = loss_and_grads(fast_model, tokens, targets, sample_ids=ids, step_seed=3)
    assert (EBT, "observed_stream") in model.kernels._COMPILED  # the compiled stream ran
    print(f"ebt: loss {float(fast[0] - eager[0]):.1e}, gradient {assert_same(fast, eager):.1e}")

    # the second-order term alone: the candidate gradient with create_graph, then a backward through it
    def second_order(net: EBT) -> dict[str, torch.Tensor]:
        net.zero_grad()
        kv = net.observed_kv(tokens, 0)
        c = torch.randn(4, 8, 32, generator=torch.Generator().manual_seed(0)).requires_grad_()
        (dc,) = torch.autograd.grad(net.candidate_stream(kv, c).sum(), c, create_graph=True)
        dc.pow(2).sum().backward()
        return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}

    want, got = second_order(eager_model), second_order(fast_model)
    assert want.keys() == got.keys() and "blocks.0.attn.qkv.weight" in want  # the observed stream's too
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=RTOL, atol=ATOL)

    thought = fast_model.think(tokens, targets, steps=3, candidates=2, sample_ids=ids)
    reference = eager_model.think(tokens, targets, steps=3, candidates=2, sample_ids=ids)
    for got_t, want_t in [(thought.energies, reference.energies), (thought.logits, reference.logits)]:
        torch.testing.assert_close(got_t, want_t, rtol=RTOL, atol=1e-4)


def test_a_small_model_learns_with_compile_and_the_chunked_ce() -> None:
    """Both families, every option on: the Transformer++ overfits a tiny batch (as test_transformer_pp's
    eager test), and the EBT (System-1, alpha 50) learns a permutation walk, well below chance."""
    net = seeded_model(tpp(ON))
    tokens, targets = token_batch(4, vocab=64, length=16)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    tpp_initial = float(net.eval_loss(tokens, targets))
    for _ in range(100):
        opt.zero_grad()
        net(tokens, targets).backward()
        opt.step()
    tpp_final = float(net.eval_loss(tokens, targets))
    assert tpp_final < 0.5 * tpp_initial, (tpp_initial, tpp_final)

    g = torch.Generator().manual_seed(0)
    perm, walk = torch.randperm(16, generator=g), [torch.randint(0, 16, (4,), generator=g)]
    for _ in range(8):
        walk.append(perm[walk[-1]])
    data = torch.stack(walk, dim=1)
    tokens, targets = data[:, :-1], data[:, 1:]
    net = seeded_model(ebt(ON, step_size=50.0))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    initial = float(net.eval_loss(tokens, targets))
    for step in range(60):
        opt.zero_grad()
        net(tokens, targets, sample_ids=torch.arange(4), step_seed=step).backward()
        opt.step()
    ebt_final = float(net.eval_loss(tokens, targets))
    print(f"transformer_pp {tpp_initial:.3f} -> {tpp_final:.3f}; ebt {initial:.3f} -> {ebt_final:.3f}")
    assert ebt_final < 0.5 * math.log(16) and ebt_final < 0.5 * initial, (initial, ebt_final)
