"""What every strategy shares: the Avalanche template with per-task optimizers.

Avalanche's own optimizer handling keeps one optimizer for the whole stream and supports a single
parameter group. Strategies here need separate learning rates (new head vs. masks vs. backbone)
and a fresh optimizer for every task, as in the papers, so :class:`ContinualTemplate` builds the
optimizer (and its cosine schedule over the task's iterations) from ``param_groups(model)`` at the
start of every training experience — after Avalanche's model adaptation has added the new head.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate
from torch import nn

from models.losses import auxiliary_loss, loss_sources
from strategies.registry import TrainSettings

ParamGroups = Callable[[nn.Module], list[dict]]

OPTIMIZERS = ("adamw", "sgd")


def build_optimizer(name: str, groups: list[dict], weight_decay: float, momentum: float):
    if name == "adamw":
        return torch.optim.AdamW(groups, weight_decay=weight_decay)
    return torch.optim.SGD(groups, momentum=momentum, weight_decay=weight_decay)


def silent_evaluator() -> EvaluationPlugin:
    """An evaluator with no metrics and no loggers (the runner counts accuracy itself)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return EvaluationPlugin(loggers=[])


def cosine_factor(step: int, total: int) -> float:
    """Cosine decay from 1 to 0 over ``total`` steps: 0.5 (1 + cos(pi step / total))."""
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))


class ContinualTemplate(SupervisedTemplate):
    """``SupervisedTemplate`` that rebuilds its optimizer (AdamW, or SGD with ``momentum``) and a
    cosine schedule for every training experience.

    ``param_groups(model)`` returns torch parameter groups (each with its ``lr``); parameters that
    do not require gradients are dropped, so frozen tensors get no optimizer state.
    """

    def __init__(self, *, model: nn.Module, param_groups: ParamGroups, settings: TrainSettings,
                 plugins=(), optimizer: str = "adamw", weight_decay: float = 0.0,
                 momentum: float = 0.9, cosine: bool = True):
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
        self.param_groups = param_groups
        self.optimizer_name = optimizer
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.cosine = cosine
        self.scheduler = None
        self._eval_loaders: dict = {}
        placeholder = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.0)
        super().__init__(
            model=model,
            optimizer=placeholder,
            criterion=nn.CrossEntropyLoss(),
            train_mb_size=settings.batch_size,
            train_epochs=settings.epochs,
            eval_mb_size=settings.eval_batch_size,
            device=torch.device(settings.device),
            plugins=[*plugins, AuxiliaryLossPlugin(), *settings.plugins],
            evaluator=silent_evaluator(),
        )

    def make_optimizer(self, **kwargs) -> None:
        groups = []
        for g in self.param_groups(self.model):
            params = [p for p in g["params"] if p.requires_grad]
            if params:
                groups.append({**g, "params": params})
        if not groups:  # nothing to train this task (e.g. a converged-probe classifier)
            groups = [{"params": [nn.Parameter(torch.zeros(1))], "lr": 0.0}]
        self.optimizer = build_optimizer(self.optimizer_name, groups, self.weight_decay,
                                         self.momentum)
        total = self.train_epochs * len(self.dataloader) if self.is_training else 1
        self.scheduler = (
            torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: cosine_factor(s, total))
            if self.cosine else None
        )

    def make_eval_dataloader(self, **kwargs) -> None:
        """One evaluation loader per experience, built on its first evaluation and reused: the
        runner evaluates every earlier task after every task."""
        exp = self.experience
        stream = exp.origin_stream
        key = (id(stream.benchmark), stream.name, exp.current_experience)
        if key not in self._eval_loaders:
            super().make_eval_dataloader(**kwargs)
            self._eval_loaders[key] = self.dataloader
        self.dataloader = self._eval_loaders[key]

    def optimizer_step(self) -> None:
        super().optimizer_step()
        if self.scheduler is not None:
            self.scheduler.step()



class AuxiliaryLossPlugin(SupervisedPlugin):
    """Adds the backbone's own training losses (``models.losses``; LaViT's
    diagonality-preserving loss) to the strategy's loss — one hook for every strategy."""

    def __init__(self):
        super().__init__()
        self.sources: list = []

    def before_training_exp(self, strategy, **kwargs):
        self.sources = loss_sources(strategy.model)  # after adaptation added this task's parts

    def before_backward(self, strategy, **kwargs):
        loss = auxiliary_loss(self.sources)
        if loss is not None:
            strategy.loss = strategy.loss + loss
