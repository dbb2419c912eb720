"""The suite's one masked-linear mechanism: ``y = x (W * M)^T + b`` with a per-task mask M.

:class:`MaskedLinear` is swapped into existing ``nn.Linear`` modules by ``__class__`` assignment
(parameter names unchanged). ``weight_mask`` is a module returning the current task's mask, of
the weight's shape (per-weight masks: MEAT FFN, Piggyback). Biases are never masked.

At evaluation the mask is boolean and the effective weight W * M is computed once per task and
cached; ``train(mode)`` (called by Avalanche when a training or evaluation phase starts) clears
the cache, so it never outlives a phase in which weights and masks are fixed. Masked evaluation
then costs what plain evaluation costs. In
training only the mask carries gradients when W is frozen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MaskedLinear(nn.Linear):
    _folded: tuple | None = None  # (task, effective weight) within one evaluation phase

    def effective_weight(self) -> torch.Tensor:
        weight_mask = self._modules.get("weight_mask")  # set per instance after the swap
        if weight_mask is None:
            return self.weight
        mask = weight_mask()
        if mask.dtype != torch.bool:  # training sample with straight-through gradient
            return self.weight * mask
        task = getattr(weight_mask, "task", None)
        if self._folded is None or self._folded[0] != task:
            self._folded = (task, self.weight.detach() * mask)
        return self._folded[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.effective_weight(), self.bias)

    def train(self, mode: bool = True):
        self._folded = None
        return super().train(mode)


def make_masked(linear: nn.Linear) -> MaskedLinear:
    """Turn an ``nn.Linear`` into a :class:`MaskedLinear` in place and return it."""
    if not isinstance(linear, MaskedLinear):
        linear.__class__ = MaskedLinear
    return linear
