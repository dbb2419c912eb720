"""Model inputs from stored images: the one conversion every path shares (training, evaluation,
probe passes, a user's own loop), so a uint8 image becomes the same float wherever it is read."""

from __future__ import annotations

import torch


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [0, 1] exactly as torchvision's ``ToTensor``; floats pass."""
    return x.float().div(255) if x.dtype == torch.uint8 else x
