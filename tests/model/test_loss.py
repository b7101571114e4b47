"""The training cross-entropy (model/loss.py): the chunked CE against the plain one, and what it allocates."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from model.loss import IGNORE_INDEX, training_ce, training_ce_linear

pytestmark = pytest.mark.usefixtures("one_thread")

B, S, V, D = 3, 10, 97, 24  # 30 positions: chunks of 7 leave a last chunk of 2


def inputs(dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """hidden (B, S, D), head weight (V, D), targets (B, S) with some IGNORE_INDEX (a whole row too)."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, S, D, generator=g).to(dtype)
    weight = (torch.randn(V, D, generator=g) * 0.5).to(dtype)
    targets = torch.randint(0, V, (B, S), generator=g)
    targets[0, ::3] = IGNORE_INDEX
    targets[2, 4] = IGNORE_INDEX
    return hidden, weight, targets


def value_and_grads(
    loss_fn: Callable[..., torch.Tensor], *tensors: torch.Tensor
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    loss = loss_fn(*leaves)
    return loss.detach(), list(torch.autograd.grad(loss, leaves))


def plain_reference(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """torch's own CE, summed over counted targets, over all positions (training_ce's definition)."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum") / targets.numel()


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 2e-6), (torch.float64, 1e-12)])
@pytest.mark.parametrize("chunk", [7, 30, 1000])
def test_chunked_ce_equals_the_plain_ce(dtype: torch.dtype, tol: float, chunk: int) -> None:
    """On logits (the EBT's CE) and on hidden states and a head (the Transformer++'s): value and every
    gradient equal the plain CE's, ignored targets counting zero, whatever the chunking."""
    hidden, weight, targets = inputs(dtype)
    logits = (hidden @ weight.T) * 3  # a peaked softmax as well as flat ones
    want, (want_grad,) = value_and_grads(lambda x: plain_reference(x, targets), logits)
    got, (got_grad,) = value_and_grads(lambda x: training_ce(x, targets, chunk), logits)
    assert got.dtype == dtype
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    torch.testing.assert_close(got_grad, want_grad, rtol=tol, atol=tol)
    assert (got_grad[targets == IGNORE_INDEX] == 0).all()  # an ignored position gets no gradient

    plain = value_and_grads(lambda h, w: training_ce_linear(h, w, targets), hidden, weight)
    chunked = value_and_grads(lambda h, w: training_ce_linear(h, w, targets, chunk), hidden, weight)
    torch.testing.assert_close(chunked[0], plain[0], rtol=tol, atol=tol)
    for got_g, want_g in zip(chunked[1], plain[1], strict=True):
        torch.testing.assert_close(got_g, want_g, rtol=tol, atol=tol)


def test_chunked_ce_of_bf16_logits_is_computed_in_float32() -> None:
    """bf16 logits (a bf16 Transformer++'s head): the loss in float32 as the plain path casts it; the
    gradients' dtypes are their inputs'."""
    hidden, weight, targets = inputs(torch.float32)
    h16, w16 = hidden.bfloat16(), weight.bfloat16()
    plain = value_and_grads(lambda h, w: training_ce_linear(h, w, targets), h16, w16)
    chunked = value_and_grads(lambda h, w: training_ce_linear(h, w, targets, 7), h16, w16)
    assert chunked[0].dtype == plain[0].dtype == torch.float32
    torch.testing.assert_close(chunked[0], plain[0], rtol=1e-5, atol=1e-5)
    for got_g, want_g in zip(chunked[1], plain[1], strict=True):
        assert got_g.dtype == torch.bfloat16
        # bf16 gradients: the chunked weight gradient is summed in float32, the plain one in a bf16 GEMM
        torch.testing.assert_close(got_g.float(), want_g.float(), rtol=2e-2, atol=2e-3)


class NewTensors(TorchDispatchMode):
    """Records the element count of every tensor an aten op returns in new memory (not a view or an alias
    of one of its inputs), with the op's name."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[str, int, torch.dtype]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        inputs = {
            t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)
        }
        out = func(*args, **kwargs)
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.sizes.append((str(func), t.numel(), t.dtype))
        return out


def vocabulary_sized(loss_fn: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> list[str]:
    """The aten ops of a forward + backward that return a tensor of B*S*V elements or more."""
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    with NewTensors() as seen:
        loss_fn(*leaves).backward()
    return [f"{name} {n} {dtype}" for name, n, dtype in seen.sizes if n >= B * S * V]


def test_the_chunked_ce_never_materialises_a_vocabulary_sized_tensor() -> None:
    """Transformer++ (hidden -> logits -> CE): the plain CE makes whole (B*S, V) logits, their float32
    log-softmax and gradients; the chunked one makes no tensor of B*S*V elements, forward or backward. On
    logits (the EBT's candidates, which exist anyway): the plain CE makes a float32 log-softmax and two
    gradients of that size, the chunked one only the gradient of its input."""
    hidden, weight, targets = inputs(torch.float32)
    plain = vocabulary_sized(lambda h, w: training_ce_linear(h, w, targets), hidden, weight)
    assert any("mm" in op for op in plain) and any("_log_softmax.default" in op for op in plain)
    assert vocabulary_sized(lambda h, w: training_ce_linear(h, w, targets, 7), hidden, weight) == []

    logits = hidden @ weight.T
    plain = vocabulary_sized(lambda x: training_ce(x, targets), logits)
    assert len(plain) >= 3 and any("_log_softmax.default" in op for op in plain)
    chunked = vocabulary_sized(lambda x: training_ce(x, targets, 7), logits)
    assert len(chunked) == 1 and "empty_like" in chunked[0]  # the input's gradient, filled chunk by chunk


def test_the_chunked_ce_keeps_no_vocabulary_sized_tensor_for_its_backward() -> None:
    """What autograd keeps for the backward (saved tensors): the plain CE a float32 log-softmax (B*S, V),
    the chunked linear CE nothing of that size, the chunked CE on logits only the logits themselves."""

    def saved_sizes(loss_fn: Callable[..., torch.Tensor], *tensors: torch.Tensor) -> list[int]:
        leaves = [t.detach().clone().requires_grad_() for t in tensors]
        sizes: list[int] = []

        def pack(t: torch.Tensor) -> torch.Tensor:
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss_fn(*leaves)
        return [n for n in sizes if n >= B * S * V]

    hidden, weight, targets = inputs(torch.float32)
    assert saved_sizes(lambda h, w: training_ce_linear(h, w, targets), hidden, weight) != []
    assert saved_sizes(lambda h, w: training_ce_linear(h, w, targets, 7), hidden, weight) == []
    assert saved_sizes(lambda x: training_ce(x, targets, 7), hidden @ weight.T) == [B * S * V]
