"""One skeleton for every strategy's training, and the plugin form of the methods that put
modules into a frozen backbone.

The skeleton. Every strategy trains each task with the same groups, in this order: what the
strategy trains at its ``lr``, its extra groups each at its own rate (HAT's gates at ``gate_lr``;
MEAT's token and FFN masks at ``token_mask_lr`` and ``ffn_mask_lr``, through MEAT's one-logit
rule), the task's head at ``head_lr``. A strategy declares only what differs
(:meth:`Skeleton.trains`, :meth:`Skeleton.extra_groups`, :meth:`Skeleton.heads`, the template
class and the optimizer); :meth:`Skeleton.param_groups` is the one place that builds groups.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from avalanche.core import SupervisedPlugin
from torch import nn

from models.heads import StandardizedHead
from models.multitask import MultiTaskViT
from strategies.common import TEMPLATE_HPARAMS, ContinualTemplate
from strategies.registry import TrainSettings
from strategies.schedules import linear_scaled


@dataclass(frozen=True)
class ExtraGroup:
    """An optimizer group besides the skeleton's two: ``params`` at the rate of hyperparameter
    ``rate`` (scaled as every rate, :meth:`Skeleton.param_groups`), then through ``rule`` if one
    is given (MEAT: ``strategies.schedules.one_logit_lr``)."""

    rate: str
    params: list[nn.Parameter]
    rule: Callable[[float], float] | None = None


class Skeleton:
    """How a strategy trains every task (module docstring): subclasses declare what differs.

    ``optimizer`` (``OPTIMIZERS``) and ``template_type`` make the template (:meth:`build`); a
    hyperparameter named in ``TEMPLATE_HPARAMS`` (``optimizer``, ``weight_decay``, ``momentum``)
    sets that setting of the template instead."""

    optimizer = "adamw"
    template_type: type[ContinualTemplate] = ContinualTemplate

    def trains(self, model: nn.Module, task: int) -> Iterable[nn.Parameter]:
        """What the strategy trains during ``task`` at ``lr`` (default: nothing)."""
        return []

    def extra_groups(self, model: nn.Module, task: int) -> list[ExtraGroup]:
        """Groups with rates of their own (default: none)."""
        return []

    def heads(self, model: nn.Module, task: int) -> Iterable[nn.Parameter]:
        """The heads trained at ``head_lr`` during ``task`` (default: the task's own)."""
        return model.heads[str(task)].parameters()

    def param_groups(self, model: nn.Module, task: int, hp: dict,
                     settings: TrainSettings) -> list[dict]:
        """[:meth:`trains` at ``lr``, *:meth:`extra_groups`, :meth:`heads` at ``head_lr``]. A
        strategy without an ``lr`` hyperparameter has no first group (the classifier trains only
        heads; MEAT only its extra groups); the heads take ``head_weight_decay`` where the strategy
        has one. Every rate is ``linear_scaled(hp[name], batch, hp["lr_scaling"])``
        (``strategies.schedules``): hp[name] itself for a strategy without ``lr_scaling``."""

        def rate(name: str) -> float:
            return linear_scaled(hp[name], settings.batch_size, hp.get("lr_scaling", "none"))

        groups = []
        if "lr" in hp:
            groups.append({"params": list(self.trains(model, task)), "lr": rate("lr")})
        for g in self.extra_groups(model, task):
            lr = rate(g.rate)
            groups.append({"params": g.params, "lr": lr if g.rule is None else g.rule(lr)})
        head = {"params": list(self.heads(model, task)), "lr": rate("head_lr")}
        if "head_weight_decay" in hp:
            head["weight_decay"] = hp["head_weight_decay"]
        return [*groups, head]

    def build(self, model: nn.Module, hp: dict, settings: TrainSettings,
              plugins=()) -> ContinualTemplate:
        """The strategy on ``model``: ``template_type`` training :meth:`param_groups` on
        ``hp["schedule"]``, with ``plugins``."""
        options = {"optimizer": self.optimizer, **{k: hp[k] for k in TEMPLATE_HPARAMS if k in hp}}
        return self.template_type(
            model=model, settings=settings, plugins=plugins, schedule=hp["schedule"],
            param_groups=lambda m, task: self.param_groups(m, task, hp, settings), **options)


class BackbonePlugin(Skeleton, SupervisedPlugin):
    """An Avalanche plugin that puts a strategy's modules into a frozen backbone: ``install(model)``
    (once, before training; the strategy builders do it) freezes the backbone of a
    ``models.multitask.MultiTaskViT`` and keeps what :meth:`create` puts into it
    (``self.modules``: masks, adapters, low-rank updates, prompts). The per-task lifecycle is
    then the model's (``MultiTaskViT.adaptation`` / ``finish_task``) and the template's (one
    optimizer per task); subclasses add losses and updates through further callbacks, and may
    change the heads (:meth:`head_type`) and what the :class:`Skeleton` lets them declare. What
    the strategy trains at ``lr`` is :meth:`task_trainable`."""

    def __init__(self):
        super().__init__()
        self.modules: list[nn.Module] = []
        self.installed = False

    @abstractmethod
    def create(self, backbone: nn.Module) -> list[nn.Module]:
        """Create the strategy's modules inside ``backbone`` and return them."""

    def install(self, model: MultiTaskViT) -> None:
        """Freeze ``model``'s backbone and put the strategy's modules into it (once)."""
        name = type(self).__name__
        if self.installed:
            raise RuntimeError(f"{name} is already installed in a model")
        if not isinstance(model, MultiTaskViT):
            raise TypeError(f"{name} needs a models.multitask.MultiTaskViT (a ViT with one head "
                            f"per task), got {type(model).__name__}")
        model.backbone.requires_grad_(False)
        self.modules = self.create(model.backbone)
        model.refresh_task_modules()
        self.installed = True

    def task_trainable(self, task: int) -> list[nn.Parameter]:
        """What trains during ``task``: of a module with per-task state
        (``task_parameters``) the task's, of any other module all of it (a shared pool)."""
        return [p for m in self.modules
                for p in (m.task_parameters(task) if hasattr(m, "task_parameters")
                          else m.parameters())]

    def trains(self, model: nn.Module, task: int) -> list[nn.Parameter]:
        return self.task_trainable(task)

    def template(self, backbone: nn.Module, settings: TrainSettings, hp: dict):
        """The strategy on ``backbone``: this plugin installed in a ``MultiTaskViT`` with
        :meth:`head_type` heads, trained as the :class:`Skeleton` builds it."""
        model = MultiTaskViT(backbone, head_type=self.head_type(hp))
        self.install(model)
        return self.build(model, hp, settings, plugins=[self])

    def head_type(self, hp: dict) -> type[nn.Linear]:
        """The class of a new task's head."""
        return StandardizedHead

    def before_training(self, strategy, **kwargs):
        name = type(self).__name__
        if not isinstance(strategy, ContinualTemplate):
            raise TypeError(f"{name} needs a strategies.common.ContinualTemplate (it gives each "
                            "task's parameters to the optimizer and finishes tasks), got "
                            f"{type(strategy).__name__}")
        if not self.installed:
            raise RuntimeError(f"call {name}.install(model) before training (the suite's "
                               "strategy builders do)")


class PerTaskPlugin(BackbonePlugin):
    """A plugin whose modules ``add(backbone)`` makes (``models.tasks.PerTaskModules``:
    adapters, low-rank updates, prompts): each task trains its own."""

    def __init__(self, add: Callable[[nn.Module], list]):
        super().__init__()
        self.add = add

    def create(self, backbone: nn.Module) -> list[nn.Module]:
        return self.add(backbone)
