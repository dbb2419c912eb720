"""Training losses a backbone defines for itself (LaViT's diagonality-preserving loss).

A module contributes one by having ``pop_auxiliary_loss()``, returning the loss of its last
training forward (or None) and clearing it. Every training loop — base pre-training and every
strategy (``strategies.common.AuxiliaryLossPlugin``) — finds the contributors once
(:func:`loss_sources`) and adds :func:`auxiliary_loss` of them to its loss at every step.
"""

from __future__ import annotations

import torch
from torch import nn


def loss_sources(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` that define an auxiliary loss (found once, outside the step)."""
    return [m for m in model.modules() if hasattr(m, "pop_auxiliary_loss")]


def auxiliary_loss(sources: list[nn.Module]) -> torch.Tensor | None:
    """Sum of the sources' auxiliary losses since their last training forward (None if none)."""
    losses = [loss for loss in (m.pop_auxiliary_loss() for m in sources) if loss is not None]
    return torch.stack(losses).sum() if losses else None
