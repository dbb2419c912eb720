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

import torch
from torch import nn

from models import anatomy
from models.tasks import TaskModule, TaskTensor


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


class TaskAdapters(TaskModule):
    """One :class:`Bottleneck` per task (a :class:`models.tasks.TaskModule`); applies the
    current task's (the identity for a task it has none for)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.dim, self.hidden = dim, hidden
        self.per_task = nn.ModuleDict()

    def add_task(self, task: int, device: torch.device | str = "cpu") -> None:
        self.per_task[f"task_{task}"] = Bottleneck(self.dim, self.hidden).to(device)

    def has_task(self, task: int) -> bool:
        return f"task_{task}" in self.per_task

    def finish_task(self, task: int) -> None:
        self.per_task[f"task_{task}"].requires_grad_(False)

    def export_task(self, task: int) -> dict[str, TaskTensor]:
        return {f"per_task.task_{task}.{k}": TaskTensor(v, "adapter")
                for k, v in self.per_task[f"task_{task}"].state_dict().items()}

    def import_task(self, task: int, state: dict[str, torch.Tensor]) -> None:
        device = next(iter(state.values())).device
        self.add_task(task, device)
        own = f"per_task.task_{task}."
        self.per_task[f"task_{task}"].load_state_dict(
            {k.removeprefix(own): v for k, v in state.items()})
        self.finish_task(task)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        key = f"task_{self.task}"
        return self.per_task[key](h) if key in self.per_task else h


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
