"""Per-task binary masks learned through a relaxed Bernoulli (hard Gumbel-softmax) logit.

One :class:`TaskMask` holds, for a fixed shape, the trainable logit of the task being learned and
the bit-packed binary masks of finished tasks. It is a task-conditioned module (``set_task``), so
``MultiTaskViT`` selects the right mask before the backbone runs.

Gumbel-softmax in its one-logit form. MEAT's two logits (t_keep, t_drop) with Gumbel noise keep an
entry iff t_keep + g1 > t_drop + g2, i.e. iff d + (g1 - g2) > 0 with d = t_keep - t_drop and
g1 - g2 ~ Logistic(0, 1); the soft sample softmax((t + g) / tau)_keep equals sigmoid((d + l) / tau).
So a single logit d per entry is the same distribution with half the memory. Training uses the
hard sample with the straight-through gradient of the soft one; evaluation uses m = [d > 0].

Initialization (``init``): ``"code"`` (MEAT's official code: t_keep = +gamma, t_drop = -gamma, so
d = 2 gamma and every entry starts kept) or ``"paper"`` (both logits ~ U(-gamma, gamma)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

MASK_INITS = ("code", "paper")


@dataclass(frozen=True)
class MaskConfig:
    gamma: float = 4.0
    tau: float = 1.0
    init: str = "code"

    def __post_init__(self):
        if self.init not in MASK_INITS:
            raise ValueError(f"mask init must be one of {MASK_INITS}, got {self.init!r}")
        if self.tau <= 0:
            raise ValueError("Gumbel temperature tau must be > 0")


class _RoundStraightThrough(torch.autograd.Function):
    """Forward: exactly 0/1 (soft > 0.5). Backward: the identity (straight-through)."""

    @staticmethod
    def forward(ctx, soft):
        return (soft > 0.5).to(soft.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad


def hard_concrete_sample(logit: torch.Tensor, tau: float) -> torch.Tensor:
    """Hard {0,1} sample of Bernoulli(sigmoid(logit)) with the straight-through gradient of
    sigmoid((logit + Logistic noise) / tau). Values are exactly 0 or 1 (no hard + soft - soft
    rounding), so an all-kept sample reproduces the unmasked model bit for bit."""
    u = torch.rand_like(logit).clamp_(1e-6, 1 - 1e-6)
    soft = torch.sigmoid((logit + torch.log(u) - torch.log1p(-u)) / tau)
    return _RoundStraightThrough.apply(soft)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Boolean tensor -> uint8 tensor of ceil(numel / 8) bytes (numpy.packbits)."""
    return torch.from_numpy(np.packbits(mask.detach().cpu().numpy().astype(bool).ravel()))


def unpack_bits(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    n = int(np.prod(shape))
    bits = np.unpackbits(packed.cpu().numpy(), count=n).astype(bool)
    return torch.from_numpy(bits).reshape(shape)


class TaskMask(nn.Module):
    """Binary masks of one shape, one per task: a trainable logit while a task is learned,
    bit-packed bits (buffer ``packed_<t>``) once it is finished."""

    def __init__(self, shape: tuple[int, ...], config: MaskConfig = MaskConfig()):
        super().__init__()
        self.shape = tuple(shape)
        self.config = config
        self.logits = nn.ParameterDict()  # str(task) -> logit, only for tasks being trained
        self.task: int | None = None
        self.last_sample: torch.Tensor | None = None  # the training sample of the last forward
        self._cache: tuple[int, torch.Tensor] | None = None  # (task, unpacked finished mask)

    def set_task(self, task: int) -> None:
        self.task = task

    def add_task(self, task: int, device: torch.device | str = "cpu") -> nn.Parameter:
        """Create the trainable logit of a new task, initialized per ``config.init``."""
        g = self.config.gamma
        if self.config.init == "code":
            d = torch.full(self.shape, 2.0 * g)
        else:
            d = torch.empty(self.shape).uniform_(-g, g) - torch.empty(self.shape).uniform_(-g, g)
        self.logits[str(task)] = nn.Parameter(d.to(device))
        return self.logits[str(task)]

    def finish_task(self, task: int) -> torch.Tensor:
        """Binarize the task's logit (d > 0), keep it bit-packed, drop the float logit."""
        logit = self.logits.pop(str(task))
        packed = pack_bits(logit.detach() > 0).to(logit.device)
        self.register_buffer(f"packed_{task}", packed)
        self._cache = None
        return packed

    def has_task(self, task: int) -> bool:
        return str(task) in self.logits or hasattr(self, f"packed_{task}")

    def binary(self, task: int) -> torch.Tensor:
        """The deterministic boolean mask of ``task``."""
        if str(task) in self.logits:
            return self.logits[str(task)].detach() > 0
        if self._cache is None or self._cache[0] != task:
            packed = getattr(self, f"packed_{task}", None)
            if packed is None:
                raise KeyError(f"no mask for task {task}")
            self._cache = (task, unpack_bits(packed, self.shape).to(packed.device))
        return self._cache[1]

    def forward(self) -> torch.Tensor:
        """Mask of the current task: a float STE sample when training its logit, else boolean."""
        if self.task is None:
            raise RuntimeError("TaskMask used before set_task()")
        key = str(self.task)
        if self.training and key in self.logits:
            self.last_sample = hard_concrete_sample(self.logits[key], self.config.tau)
            return self.last_sample
        return self.binary(self.task)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, tau={self.config.tau}, init={self.config.init}"
