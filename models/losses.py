"""Training losses a backbone defines for itself (LaViT's diagonality-preserving loss).

A module contributes one by having ``pop_auxiliary_loss()``, returning the loss of its last
training forward (or None) and clearing it. Every training loop — base pre-training and every
strategy (``strategies.common.AuxiliaryLossPlugin``) — adds :func:`auxiliary_loss` to its loss.
"""

from __future__ import annotations

import torch
from torch import nn


def auxiliary_loss(model: nn.Module) -> torch.Tensor | None:
    """Sum of the auxiliary losses of ``model``'s modules since their last training forward."""
    total = None
    for m in model.modules():
        pop = getattr(m, "pop_auxiliary_loss", None)
        loss = pop() if pop is not None else None
        if loss is not None:
            total = loss if total is None else total + loss
    return total
