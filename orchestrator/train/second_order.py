"""Train models that differentiate through their own gradients (the EBT) under DeepSpeed ZeRO stages 0-3.

The problem. An EBT forward computes `g = autograd.grad(E, candidate, create_graph=True)` K times and the
loss depends on g, so the outer backward is a double backward through graphs that saved the weights.
DeepSpeed assumes one forward and one backward per parameter use:
- its backward prologue hooks sit on the *outputs of the engine's forward*; an energy that leaves the engine
  and is differentiated outside it fires them outside `engine.backward` (stage 0 raises "Direct calls to
  tensor.backward()", stages 1-2 run an epilogue over an empty bucket: IndexError in reduce_ipg_grads);
- ZeRO-3 gathers a module's parameters in its pre-forward hook and frees them (`param.data` = empty) in its
  post-forward hook, re-gathering only in the module's own backward hooks. The double-backward graph's
  nodes are not module backwards: they read the saved, now-empty weights ("mat2 must be a matrix").

The solution, in two parts.
1. The whole energy-minimisation loop runs inside one engine forward that returns the loss (the model's
   contract, see model/ebt.py), so DeepSpeed sees exactly one output and one `engine.backward`.
2. `SecondOrderSafe` owns the model's parameters in `WeightHolder` modules. Each forward first calls every
   holder: a holder's forward is an ordinary module forward (ZeRO-3 gathers its parameters around it) that
   returns *clones* of its parameters. The model then runs through `torch.func.functional_call` on those
   clones, as a module tree that DeepSpeed never hooked. Consequences:
   - every tensor the inner loop saves is a clone with its own storage, valid whatever ZeRO does to
     `param.data` afterwards;
   - the inner `autograd.grad(E, candidate)` reaches no parameter and no DeepSpeed hook (it only needs the
     path to the candidate);
   - the outer backward sums all contributions to a clone, then runs CloneBackward once per parameter into
     its AccumulateGrad: exactly the one-gradient-per-parameter event every ZeRO stage's reduction
     hooks expect, with the holder's backward hooks doing ZeRO-3's gather/release as for any module.
   The gradients are therefore identical to plain PyTorch autograd on the unwrapped model (tested to 1e-6
   on every stage against a plain-PyTorch reference).
Cost: one copy of the weights per forward (negligible next to K transformer passes), and under ZeRO-3 the
full weights stay materialised for the duration of one micro-step (optimizer states and gradients stay
partitioned). Details and the argument for correctness: docs/deepspeed-second-order.md.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn


class WeightHolder(nn.Module):
    """Owns the direct parameters of one submodule; its forward hands out clones of them."""

    def __init__(self, params: dict[str, nn.Parameter]) -> None:
        super().__init__()
        for name, param in params.items():
            self.register_parameter(name, param)

    def forward(self) -> dict[str, Tensor]:
        return {name: param.clone() for name, param in self._parameters.items() if param is not None}


class _MethodCall(nn.Module):
    """Adapter so `functional_call` (which calls `module(...)`) can run any method of the model."""

    def __init__(self, model: nn.Module, method: str) -> None:
        super().__init__()
        self.model = model
        self.method = method

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.model, self.method)(*args, **kwargs)


class SecondOrderSafe(nn.Module):
    """Wraps `model` so DeepSpeed sees only `WeightHolder`s; `forward(*args, method=..., **kwargs)` runs
    `model.<method>(*args, **kwargs)` on per-forward clones of the weights."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        holders: dict[str, WeightHolder] = {}
        seen: set[int] = set()  # tied parameters are owned once; functional_call re-ties them
        self._param_paths: dict[str, list[str]] = {}
        for module_path, module in model.named_modules():
            own = {n: p for n, p in module.named_parameters(recurse=False) if id(p) not in seen}
            if not own:
                continue
            seen.update(id(p) for p in own.values())
            key = module_path.replace(".", "__") or "root"
            holders[key] = WeightHolder(own)
            self._param_paths[key] = [f"{module_path}.{n}" if module_path else n for n in own]
        self.holders = nn.ModuleDict(holders)
        # The model itself is hidden from the module tree: DeepSpeed must not hook or partition it twice.
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_calls", {})

    @property
    def model(self) -> nn.Module:
        return self._model

    def train(self, mode: bool = True) -> SecondOrderSafe:
        super().train(mode)
        self._model.train(mode)
        return self

    def weights(self) -> dict[str, Tensor]:
        """Clones of all parameters, keyed by their names in the wrapped model."""
        out: dict[str, Tensor] = {}
        for key, holder in self.holders.items():
            clones = holder()  # a module call: ZeRO-3 gathers this holder's parameters around it
            out.update(zip(self._param_paths[key], clones.values(), strict=True))
        return out

    def forward(self, *args: Any, method: str = "forward", **kwargs: Any) -> Any:
        if method not in self._calls:
            self._calls[method] = _MethodCall(self._model, method)
        weights = {f"model.{name}": w for name, w in self.weights().items()}
        return torch.func.functional_call(self._calls[method], weights, args, kwargs, strict=False)
