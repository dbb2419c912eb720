"""What the per-task mask and gate strategies share (MEAT, Piggyback, HAT).

:class:`TaskMaskPlugin` is the Avalanche plugin skeleton: ``install(model)`` (once, before
training; the strategy builders do it) lets the subclass put its :class:`models.masks.TaskMask`
modules into the backbone (``create_masks``) and freezes the backbone. The rest of the per-task
lifecycle is the model's and the template's: ``MultiTaskViT.adaptation`` adds each new task's
trainable tensor to every mask, the template builds the task's optimizer from the strategy's
parameter groups (:meth:`TaskMaskPlugin.trainable` lists the masks' tensors) and, after the task,
``MultiTaskViT.finish_task`` binarizes and bit-packs its masks. Subclasses add their losses and
updates through further callbacks.
"""

from __future__ import annotations

from abc import abstractmethod

from avalanche.core import SupervisedPlugin
from torch import nn

from models.masked_linear import make_masked
from models.masks import TaskMask
from models.multitask import MultiTaskViT
from strategies.common import ContinualTemplate


class TaskMaskPlugin(SupervisedPlugin):
    """Per-task masks on a ``models.multitask.MultiTaskViT``; subclasses implement
    ``create_masks``."""

    def __init__(self):
        super().__init__()
        self.masks: list[TaskMask] = []
        self.installed = False

    @abstractmethod
    def create_masks(self, backbone: nn.Module) -> list[TaskMask]:
        """Create the masks inside ``backbone`` and return them."""

    def install(self, model: MultiTaskViT) -> None:
        """Freeze ``model``'s backbone and put the strategy's masks into it (once)."""
        if self.installed:
            raise RuntimeError(f"{type(self).__name__} is already installed in a model")
        if not isinstance(model, MultiTaskViT):
            raise TypeError(f"{type(self).__name__} needs a models.multitask.MultiTaskViT "
                            f"(a ViT with one head per task), got {type(model).__name__}")
        model.backbone.requires_grad_(False)
        self.masks = self.create_masks(model.backbone)
        model.refresh_task_modules()
        self.installed = True

    def before_training(self, strategy, **kwargs):
        name = type(self).__name__
        if not isinstance(strategy, ContinualTemplate):
            raise TypeError(f"{name} needs a strategies.common.ContinualTemplate (it gives each "
                            "task's masks to the optimizer and finishes tasks), got "
                            f"{type(strategy).__name__}")
        if not self.installed:
            raise RuntimeError(f"call {name}.install(model) before training (the suite's "
                               "strategy builders do)")

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


def masks_and_head(plugin: TaskMaskPlugin, backbone: nn.Module, settings, *, mask_lr: float,
                   head_lr: float, schedule: str) -> ContinualTemplate:
    """The template of a strategy that trains only its masks (at ``mask_lr``) and the task's
    head (at ``head_lr``) on a frozen backbone."""
    model = MultiTaskViT(backbone)
    plugin.install(model)
    return ContinualTemplate(
        model=model,
        param_groups=lambda m, task: [
            {"params": plugin.trainable(), "lr": mask_lr},
            {"params": list(m.heads[str(task)].parameters()), "lr": head_lr}],
        settings=settings, schedule=schedule)
