"""torch.compile of the parts of a model outside any second-order graph (`kernels.compile`, docs/ebt.md §6).

One compiled function per model method, shared by every instance (the module is an argument, so instances of
one shape share the graph, and so do the weight clones `SecondOrderSafe` substitutes for the parameters,
after one recompile for them). Default mode (no CUDA graphs, which would keep each call's outputs alive),
static shapes (a new shape recompiles). The compiled graph's backward is first-order only (inductor has no
double backward), so a compiled part must never be on the path of a `create_graph` gradient: the EBT
compiles only its observed stream, which the candidate gradient never runs through."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

COMPILE_OPTIONS: dict[str, Any] = {"dynamic": False}  # torch.compile's arguments (tests may set a backend)
_COMPILED: dict[tuple[type, str], Callable[..., Any]] = {}


def compiled(module: nn.Module, method: str) -> Callable[..., Any]:
    """`module.<method>` compiled, as a callable of the method's other arguments."""
    key = (type(module), method)
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(getattr(type(module), method), **COMPILE_OPTIONS)
    fn = _COMPILED[key]
    return lambda *args, **kwargs: fn(module, *args, **kwargs)


__all__ = ["COMPILE_OPTIONS", "compiled"]
