"""Low-rank updates of frozen Linears, one set per task (LoRA, Hu et al., ICLR 2022).

For a frozen ``nn.Linear`` W: y = W x + (alpha / r) B A x, with A (r x in) initialized as the
LoRA code does (Kaiming-uniform, a = sqrt(5)) and B (out x r) at zero, so a new task's update
starts at 0 and the frozen backbone's output is unchanged until it learns. Per task
(:class:`TaskLoRA`, a ``models.tasks.PerTaskModules``) on every targeted Linear, attached as a
submodule and applied by a forward hook, so the backbone's own parameter names and code stay
untouched (as ``models.adapters``).
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from models import anatomy
from models.tasks import PerTaskModules

TARGETS = ("attention", "all")  # attention: every attention input Linear and the output proj


class LowRank(nn.Module):
    """x -> (alpha / r) B A x."""

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float):
        super().__init__()
        self.A = nn.Parameter(torch.empty(rank, in_features))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.B = nn.Parameter(torch.zeros(out_features, rank))
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.A.T) @ self.B.T * self.scale


class TaskLoRA(PerTaskModules):
    """One :class:`LowRank` update per task for one Linear."""

    def __init__(self, linear: nn.Linear, rank: int, alpha: float):
        super().__init__(partial(LowRank, linear.in_features, linear.out_features, rank, alpha),
                         kind="lora")


def target_linears(backbone: nn.Module, targets: str) -> list[nn.Linear]:
    """The Linears that get updates: per block the attention's input Linears and its output
    projection (``attention``), plus fc1 and fc2 (``all``)."""
    if targets not in TARGETS:
        raise ValueError(f"LoRA targets must be one of {TARGETS}, got {targets!r}")
    out = []
    for block in anatomy.blocks(backbone):
        projections = anatomy.attention_projections(block)
        out += [*projections.inputs, projections.output]
        if targets == "all":
            out += list(anatomy.ffn_pair(block))
    return out


def add_lora(backbone: nn.Module, targets: str, rank: int, alpha: float) -> list[TaskLoRA]:
    """Attach a :class:`TaskLoRA` to every target Linear (``linear.lora``)."""
    out = []
    for linear in target_linears(backbone, targets):
        linear.lora = TaskLoRA(linear, rank, alpha)
        linear.register_forward_hook(apply_lora)
        out.append(linear.lora)
    return out


def apply_lora(linear: nn.Linear, inputs, output: torch.Tensor) -> torch.Tensor:
    """Forward hook of a Linear: its output plus the current task's update (a named function,
    so the model pickles for resume checkpoints)."""
    update = linear.lora.current()
    return output if update is None else output + update(inputs[0])


def lora_params(backbone: nn.Module, targets: str, rank: int) -> int:
    """Parameters of one task's updates: r (in + out) per target Linear."""
    return sum(rank * (m.in_features + m.out_features) for m in target_linears(backbone, targets))
