"""The suite's one masked-weight mechanism for Linear (and Conv2d) layers, with two hooks:

- ``weight_mask``: a module returning the current task's mask of the weight's shape
  (per-weight masks: MEAT FFN, Piggyback): W' = W * M;
- ``output_gate``: a module returning the current task's gate over output units (HAT):
  y_j = a_j (W x + b)_j, i.e. W' = a[:, None] * W, b' = a * b.

Biases are never masked, only gated. :class:`MaskedLinear` / :class:`MaskedConv2d` are swapped
into existing modules by ``__class__`` assignment (:func:`make_masked`; parameter names
unchanged); hooks are set per instance as submodules.

At evaluation the hooks return booleans and, when no gradient is needed, the effective
(W', b') is computed once per task and cached; ``train(mode)`` (called by Avalanche when a
training or evaluation phase starts) clears the cache, so it never outlives a phase in which
weights and masks are fixed. Masked evaluation then costs what plain evaluation costs. In
training only masks and gates carry gradients when W is frozen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.transient import TransientState


class MaskedWeight(TransientState):
    """Mixin computing the effective (weight, bias) of a layer from its hooks."""

    transient = ("_folded",)

    _folded: tuple | None = None  # (task, weight, bias) within one evaluation phase

    def effective_params(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        hooks = [self._modules.get(name) for name in ("weight_mask", "output_gate")]
        weight_mask, output_gate = hooks
        if weight_mask is None and output_gate is None:
            return self.weight, self.bias
        mask = weight_mask() if weight_mask is not None else None
        gate = output_gate() if output_gate is not None else None
        binary = all(v is None or v.dtype == torch.bool for v in (mask, gate))
        frozen = binary and not (torch.is_grad_enabled() and self.weight.requires_grad)
        task = tuple(getattr(h, "task", None) for h in hooks)
        if frozen and self._folded is not None and self._folded[0] == task:
            return self._folded[1], self._folded[2]
        weight, bias = self.weight, self.bias
        if mask is not None:
            weight = weight * mask
        if gate is not None:
            gate = gate.to(weight.dtype)
            weight = weight * gate.reshape(-1, *[1] * (weight.dim() - 1))
            bias = bias * gate if bias is not None else None
        if frozen:
            self._folded = (task, weight, bias)
        return weight, bias

    def train(self, mode: bool = True):
        self._folded = None
        return super().train(mode)


class MaskedLinear(MaskedWeight, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, *self.effective_params())


class MaskedConv2d(MaskedWeight, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, *self.effective_params())


_MASKED = {nn.Linear: MaskedLinear, nn.Conv2d: MaskedConv2d}


def make_masked(layer: nn.Linear | nn.Conv2d) -> MaskedLinear | MaskedConv2d:
    """Turn an ``nn.Linear`` or ``nn.Conv2d`` into its masked class in place and return it."""
    if isinstance(layer, MaskedWeight):
        return layer
    cls = _MASKED.get(type(layer))
    if cls is None:
        raise TypeError(f"cannot mask a {type(layer).__name__}; supported: Linear, Conv2d")
    layer.__class__ = cls
    return layer
