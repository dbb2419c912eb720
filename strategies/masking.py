"""What the per-task mask and gate strategies share (MEAT, Piggyback, SupSup, HAT).

:class:`TaskMaskPlugin` is the Avalanche plugin skeleton (a ``strategies.skeleton.BackbonePlugin``):
``install(model)`` (once, before training; the strategy builders do it) lets the subclass put its
:class:`models.masks.TaskMask` modules into the backbone (``create_masks``) and freezes the
backbone. The rest of the per-task lifecycle is the model's and the template's:
``MultiTaskViT.adaptation`` adds each new task's trainable tensor to every mask, the template
builds the task's optimizer from the skeleton's groups (``strategies.skeleton.Skeleton``: by default
the masks' tensors at ``lr`` and the task's head at ``head_lr``, as Piggyback and SupSup train;
HAT and MEAT declare their masks as extra groups, :meth:`TaskMaskPlugin.trainable` listing their
tensors) and, after the task, ``MultiTaskViT.finish_task`` binarizes and bit-packs its masks.
Subclasses add their losses and updates through further callbacks.
"""

from __future__ import annotations

from abc import abstractmethod

from torch import nn

from models.masked_linear import make_masked
from models.masks import TaskMask
from strategies.skeleton import BackbonePlugin


class TaskMaskPlugin(BackbonePlugin):
    """Per-task masks on a ``models.multitask.MultiTaskViT``; subclasses implement
    ``create_masks``."""

    @property
    def masks(self) -> list[TaskMask]:
        return self.modules

    @abstractmethod
    def create_masks(self, backbone: nn.Module) -> list[TaskMask]:
        """Create the masks inside ``backbone`` and return them."""

    def create(self, backbone: nn.Module) -> list[TaskMask]:
        return self.create_masks(backbone)

    def trainable(self, masks: list[TaskMask] | None = None) -> list:
        """The trainable tensors of ``masks`` (default: all), for an optimizer group."""
        return [p for m in (self.masks if masks is None else masks) for p in m.parameters()]


def mask_weights(layers: list[nn.Module], rule, kind: str = "weight") -> list[TaskMask]:
    """A per-weight :class:`TaskMask` on each of ``layers`` (W' = W * M), by ``rule``."""
    masks = []
    for layer in layers:
        mask = TaskMask(tuple(layer.weight.shape), rule, kind=kind).to(layer.weight.device)
        make_masked(layer).weight_mask = mask
        masks.append(mask)
    return masks
