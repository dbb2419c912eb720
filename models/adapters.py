"""Bottleneck adapters (Houlsby et al., 2019), after each block's MLP.

For block l: h -> h + W_up act(W_down h + b_down) + b_up applied to the MLP's output before it is
added to the residual stream (Adapter-BERT places one after the FFN sub-layer). W_up and b_up
start at zero, so a new adapter is the identity and the frozen backbone's output is unchanged
until it learns. Per task (:class:`TaskAdapters`: one adapter per task, a
``models.tasks.TaskModule``) or one :class:`Bottleneck` shared by all tasks (HAT
gates its units per task). Either is attached to the MLP as a submodule and applied by a forward
hook, so the backbone's own parameter names and code stay untouched.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from models import anatomy
from models.tasks import PerTaskModules


class Bottleneck(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.act(self.down(h)))


class TaskAdapters(PerTaskModules):
    """One :class:`Bottleneck` per task (``models.tasks.PerTaskModules``); applies the current
    task's (the identity for a task it has none for)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__(partial(Bottleneck, dim, hidden), kind="adapter")

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        adapter = self.current()
        return h if adapter is None else adapter(h)


def add_adapters(backbone: nn.Module, hidden: int,
                 per_task: bool = True) -> list[TaskAdapters] | list[Bottleneck]:
    """Attach a :class:`TaskAdapters` (``per_task``) or one shared :class:`Bottleneck` after the
    MLP of every block (``block.mlp.adapters``)."""
    kind = TaskAdapters if per_task else Bottleneck
    out = []
    for block in anatomy.blocks(backbone):
        mlp = block.mlp
        adapters = kind(anatomy.ffn_pair(block)[1].out_features, hidden)
        mlp.adapters = adapters
        mlp.register_forward_hook(apply_adapters)
        out.append(adapters)
    return out


def apply_adapters(mlp: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
    """Forward hook of an MLP: its output through the current task's adapter (a named function,
    not a lambda, so the model pickles for resume checkpoints)."""
    return mlp.adapters(output)


def adapter_params(backbone: nn.Module, hidden: int) -> int:
    """Parameters of one bottleneck after every block's MLP (what :func:`add_adapters` adds per
    task, or once when shared)."""
    return sum(sum(p.numel() for p in Bottleneck(anatomy.ffn_pair(b)[1].out_features,
                                                  hidden).parameters())
               for b in anatomy.blocks(backbone))
