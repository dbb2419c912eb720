"""The per-task-state interface: every module that holds something per task implements it.

A :class:`TaskModule` (a per-task mask or gate, a set of per-task adapters, ...) lives inside a
``models.multitask.MultiTaskViT``'s backbone; the model finds its task modules by type and drives
their lifecycle, so a strategy never names or filters their tensors:

- ``add_task(t, device)``: create task t's trainable state. Called from the model's Avalanche
  ``adaptation`` when task t starts training, before the template builds the task's optimizer;
- ``set_task(t)``: the task the next forward serves (before every forward);
- ``finish_task(t)``: after t is trained: freeze it, keep what predicting t needs (e.g. the bits of
  a mask, packed);
- ``export_task(t)`` -> ``{name: TaskTensor}``: exactly what predicting t needs, each tensor with
  its kind and logical shape (bit-packed masks are stored as bytes); ``import_task(t, state)``
  puts an export back.

``tasks/task_<t>.pt`` (:func:`save_task_file`) holds a task's export — head and every task
module's — under the model's parameter names, with ``meta["tensors"]`` giving each one's kind
and logical shape; :func:`load_task_file` reads it back, unpacking bit-packed masks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from atomicio import atomic_write

BITS = "bits"  # a bit-packed boolean tensor (uint8 bytes; its logical shape is in ``shape``)


@dataclass(frozen=True)
class TaskTensor:
    """One tensor of a task's state: ``value``, what it is (``kind``: e.g. "token", "ffn",
    "weight", "gate" for masks, "adapter", "head"), whether it is bit-packed (``encoding``
    :data:`BITS`) or kept as is ("dense"), and its logical ``shape``."""

    value: torch.Tensor
    kind: str
    encoding: str = "dense"
    shape: tuple[int, ...] | None = None

    @property
    def logical_shape(self) -> tuple[int, ...]:
        return tuple(self.value.shape) if self.shape is None else tuple(self.shape)

    def decoded(self) -> torch.Tensor:
        """The tensor itself (boolean for bit-packed masks)."""
        if self.encoding == BITS:
            return unpack_bits(self.value, self.logical_shape)
        return self.value


class TaskModule(nn.Module):
    """A module with per-task state; see the module docstring for the lifecycle.

    ``conditions_features``: whether the task set changes the backbone's features (False for
    state that is added per task but always used whole, as CODA-Prompt's components).
    ``infers_task``: whether, set to task None (no task id), the module chooses a task per
    sample by itself (DualPrompt's expert prompts, by their keys)."""

    conditions_features: bool = True
    infers_task: bool = False

    def __init__(self):
        super().__init__()
        self.task: int | None = None

    def set_task(self, task: int) -> None:
        self.task = task

    def add_task(self, task: int, device: torch.device | str) -> None:
        raise NotImplementedError

    def has_task(self, task: int) -> bool:
        raise NotImplementedError

    def finish_task(self, task: int) -> None:
        raise NotImplementedError

    def export_task(self, task: int) -> dict[str, TaskTensor]:
        raise NotImplementedError

    def import_task(self, task: int, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError


class PerTaskModules(TaskModule):
    """One module per task, made by ``make()`` (picklable, e.g. a ``functools.partial``), kept
    whole in fp32 and exported as tensors of ``kind`` (adapters, low-rank updates, ...).
    ``current()`` is the module of the task set by ``set_task`` (None if it has none)."""

    def __init__(self, make: Callable[[], nn.Module], kind: str):
        super().__init__()
        self.make, self.kind = make, kind
        self.per_task = nn.ModuleDict()

    def add_task(self, task: int, device: torch.device | str = "cpu") -> None:
        self.per_task[f"task_{task}"] = self.make().to(device)

    def has_task(self, task: int) -> bool:
        return f"task_{task}" in self.per_task

    def finish_task(self, task: int) -> None:
        self.per_task[f"task_{task}"].requires_grad_(False)

    def export_task(self, task: int) -> dict[str, TaskTensor]:
        return {f"per_task.task_{task}.{k}": TaskTensor(v, self.kind)
                for k, v in self.per_task[f"task_{task}"].state_dict().items()}

    def import_task(self, task: int, state: dict[str, torch.Tensor]) -> None:
        self.add_task(task, next(iter(state.values())).device)
        own = f"per_task.task_{task}."
        self.per_task[f"task_{task}"].load_state_dict(
            {k.removeprefix(own): v for k, v in state.items()})
        self.finish_task(task)

    def task_parameters(self, task: int) -> list[nn.Parameter]:
        """The trainable parameters of ``task``'s module."""
        return list(self.per_task[f"task_{task}"].parameters())

    def current(self) -> nn.Module | None:
        return self.per_task[f"task_{self.task}"] if self.has_task(self.task) else None


def task_modules(module: nn.Module) -> list[tuple[str, TaskModule]]:
    """``(name, module)`` of every task module inside ``module`` (itself excluded)."""
    return [(name, m) for name, m in module.named_modules()
            if m is not module and isinstance(m, TaskModule)]


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Boolean tensor -> uint8 tensor of ceil(numel / 8) bytes (numpy.packbits)."""
    return torch.from_numpy(np.packbits(mask.detach().cpu().numpy().astype(bool).ravel()))


BIT_ORDER = torch.arange(7, -1, -1, dtype=torch.uint8)  # numpy.packbits: most significant first


def unpack_bits(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The boolean tensor of ``shape`` that :func:`pack_bits` packed, on ``packed``'s device
    (no host round trip: a resumed run unpacks its masks where they are)."""
    n = int(np.prod(shape))
    bits = (packed[:, None] >> BIT_ORDER.to(packed.device)) & 1
    return bits.flatten()[:n].bool().reshape(shape)


def save_task_file(state: dict[str, TaskTensor], path: Path) -> None:
    """Write a task's export atomically: ``{"state_dict": {name: tensor on the CPU}, "meta":
    {"tensors": {name: {"kind", "encoding", "shape"}}}}``."""
    payload = {
        "state_dict": {k: t.value.detach().cpu() for k, t in state.items()},
        "meta": {"tensors": {k: {"kind": t.kind, "encoding": t.encoding,
                                 "shape": list(t.logical_shape)} for k, t in state.items()}},
    }
    atomic_write(Path(path), lambda f: torch.save(payload, f))


def token_masks(state: dict[str, TaskTensor]) -> dict[str, torch.Tensor]:
    """The token masks of a task's export: {path of the attention's block (e.g. "blocks.0"):
    boolean keep mask, one entry per key token}; empty for a strategy without token masks."""
    return {key.split(".token_mask.")[0].removeprefix("backbone.").replace(".attn", ""):
            tensor.decoded() for key, tensor in state.items() if tensor.kind == "token"}


def load_task_file(path: Path) -> dict[str, TaskTensor]:
    """A task file as written by :func:`save_task_file`, on the CPU. Files of earlier versions
    (``meta["packed_shapes"]``: the logical shape of each bit-packed mask, named
    ``...token_mask.packed_<t>`` for token masks) read as the same :class:`TaskTensor` s."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    meta, state = saved.get("meta", {}), saved["state_dict"]
    if "tensors" in meta:
        info = meta["tensors"]
        return {k: TaskTensor(v, info[k]["kind"], info[k]["encoding"], tuple(info[k]["shape"]))
                for k, v in state.items()}
    packed = meta.get("packed_shapes", {})
    return {k: TaskTensor(v, "token" if ".token_mask." in k else "mask", BITS,
                          tuple(packed[k])) if k in packed
            else TaskTensor(v, "head" if k.startswith("heads.") else "dense")
            for k, v in state.items()}
