"""What the per-task mask and gate strategies share (MEAT, Piggyback, HAT).

:class:`TaskMaskPlugin` is the Avalanche plugin skeleton: on first use it lets the subclass
install its :class:`models.masks.TaskMask` modules into the backbone (``install``); at the start
of every task it adds the task's trainable tensor to every mask, lets only the new task's head
train and rebuilds the optimizer (so new tensors are optimized); at the end it binarizes and
bit-packs the task's masks and drops the float tensors. Subclasses add their losses and updates
through further callbacks.
"""

from __future__ import annotations

from abc import abstractmethod

from avalanche.core import SupervisedPlugin

from models.masks import TaskMask
from models.multitask import MultiTaskViT


class TaskMaskPlugin(SupervisedPlugin):
    """Per-task masks on a ``models.multitask.MultiTaskViT``; subclasses implement ``install``."""

    def __init__(self):
        super().__init__()
        self.masks: list[TaskMask] = []
        self.installed = False

    @abstractmethod
    def install(self, model: MultiTaskViT) -> None:
        """Create the masks in ``model.backbone`` and list them in ``self.masks``."""

    def ensure_installed(self, model) -> None:
        if self.installed:
            return
        if not isinstance(model, MultiTaskViT):
            raise TypeError(f"{type(self).__name__} needs a models.multitask.MultiTaskViT "
                            f"(a ViT with one head per task), got {type(model).__name__}")
        self.install(model)
        model.refresh_task_modules()
        self.installed = True

    def before_training_exp(self, strategy, **kwargs):
        self.ensure_installed(strategy.model)
        task = strategy.experience.task_label
        for m in self.masks:
            if not m.has_task(task):
                m.add_task(task, strategy.device)
        strategy.model.train_only_head(task)
        strategy.make_optimizer()

    def after_training_exp(self, strategy, **kwargs):
        task = strategy.experience.task_label
        for m in self.masks:
            m.finish_task(task)
        strategy.make_optimizer()  # forget the dropped tensors

    def trainable(self, masks: list[TaskMask] | None = None) -> list:
        """The trainable tensors of ``masks`` (default: all), for an optimizer group."""
        return [p for m in (self.masks if masks is None else masks) for p in m.parameters()]
