"""Where the suite computes in fp32 inside a bf16 autocast region."""

from __future__ import annotations

from contextlib import nullcontext

import torch


def fp32_region(device: torch.device):
    """A context that turns autocast off on ``device`` (nothing to turn off on a device autocast
    does not support, such as ``meta``, the tests' stand-in for an accelerator)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return nullcontext()
