"""What every strategy shares: the Avalanche template with per-task optimizers (the skeleton
that builds every strategy's optimizer groups is :mod:`strategies.skeleton`).

Avalanche's own optimizer handling keeps one optimizer for the whole stream and supports a single
parameter group. Strategies here need separate learning rates (new head vs. masks vs. backbone)
and a fresh optimizer for every task, as in the papers, so :class:`ContinualTemplate` builds the
optimizer (and its schedule over the task's steps, ``strategies.schedules``) from
``param_groups(model, task)`` exactly once at the start of every training experience — after
Avalanche's model adaptation has added the task's head and per-task state
(``models.multitask.MultiTaskViT.adaptation``). The groups are what trains: every other
parameter of the model is frozen for the task. When the task is trained the model finishes it
(``MultiTaskViT.finish_task``: masks keep their bits, the head is folded, ...) before the
plugins' ``after_training_exp``; a head that trained is first given its final features' exact
statistics (:meth:`ContinualTemplate.final_pass`, which also measures its training accuracy).

A task's budget is ``epochs`` passes over its data, or exactly ``steps_per_task`` optimizer steps
(as many passes as needed, the last one cut short): a budget in steps means the same amount of
training whatever a task's size, as the papers' rates assume. ``steps_taken`` holds the steps of
the last task trained.

"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from avalanche.core import SupervisedPlugin
from avalanche.models.utils import is_multi_task_module
from avalanche.training.plugins import EvaluationPlugin
from avalanche.training.templates import SupervisedTemplate
from torch import nn

from models.heads import StandardizedHead
from models.losses import auxiliary_loss, loss_sources
from models.multitask import MultiTaskViT
from strategies.features import task_features
from strategies.registry import TrainSettings
from strategies.schedules import SCHEDULES, lr_factor
from vocab import PRECISIONS

ParamGroups = Callable[[nn.Module, int], list[dict]]  # (model, task) -> torch param groups

OPTIMIZERS = ("adamw", "adam", "sgd")
TEMPLATE_HPARAMS = ("optimizer", "weight_decay", "momentum")  # set the template's, where given


def build_optimizer(name: str, groups: list[dict], weight_decay: float, momentum: float):
    if name == "adamw":
        return torch.optim.AdamW(groups, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(groups, weight_decay=weight_decay)
    return torch.optim.SGD(groups, momentum=momentum, weight_decay=weight_decay)


def silent_evaluator() -> EvaluationPlugin:
    """An evaluator with no metrics and no loggers (the runner counts accuracy itself)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return EvaluationPlugin(loggers=[])


@dataclass(frozen=True)
class TrainedTask:
    """A trained task's head on its own training data: accuracy (next to the probe's
    ``probe_train_acc`` it shows whether the head converged) and mean max logit (the
    normalizer of TPL's calibrated rule, ``models.task_inference``)."""

    accuracy: float
    mean_max_logit: float


class ContinualTemplate(SupervisedTemplate):
    """``SupervisedTemplate`` that rebuilds its optimizer (AdamW, Adam, or SGD with ``momentum``)
    and its learning-rate ``schedule`` (``strategies.schedules.SCHEDULES``) for every training
    experience.

    ``param_groups(model, task)`` returns the torch parameter groups that train ``task`` (each
    with its ``lr``, optionally its own ``weight_decay``); they, and only they, require
    gradients during the task. ``optimizer_builds`` counts the builds (one per task).
    """

    def __init__(self, *, model: nn.Module, param_groups: ParamGroups, settings: TrainSettings,
                 plugins=(), optimizer: str = "adamw", weight_decay: float = 0.0,
                 momentum: float = 0.9, schedule: str = "cosine"):
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {sorted(OPTIMIZERS)}, got {optimizer!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        self.param_groups = param_groups
        self.optimizer_name = optimizer
        self.weight_decay = weight_decay
        self.momentum = momentum
        self.schedule = schedule
        self.scheduler = None
        self.optimizer_builds = 0
        self.steps_per_task = settings.steps_per_task
        self.steps_taken = 0
        if settings.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {settings.precision!r}")
        self.precision = settings.precision
        self.inputs = settings.inputs
        self.loader_workers = settings.loader_workers
        self.fixed_passes = settings.fixed_passes
        self.trained: dict[int, TrainedTask] = {}  # by task: its final pass (final_pass)
        self._eval_loaders: dict = {}
        self._task_of: tuple = (None, None)  # (experience, its single task label or None)
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
            evaluator=settings.evaluator or silent_evaluator(),
        )

    def check_model_and_optimizer(self, **kwargs) -> None:
        """Model adaptation (new head and per-task state), then the task's one optimizer."""
        self.model = self.model_adaptation()
        self.make_optimizer()

    def make_optimizer(self, **kwargs) -> None:
        task = self.experience.task_label
        groups = [g for g in self.param_groups(self.model, task) if g["params"]]
        trained = {id(p) for g in groups for p in g["params"]}
        for p in self.model.parameters():
            p.requires_grad_(id(p) in trained)
        self.model.train()  # frozen layers' dropout off (``MultiTaskViT.train``)
        if not groups:  # nothing to train this task (e.g. a converged-probe classifier)
            groups = [{"params": [nn.Parameter(torch.zeros(1))], "lr": 0.0}]
        self.optimizer = build_optimizer(self.optimizer_name, groups, self.weight_decay,
                                         self.momentum)
        self.optimizer_builds += 1
        total = self.task_steps()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(self.schedule, s, total))

    def _after_training_exp(self, **kwargs) -> None:
        if isinstance(self.model, MultiTaskViT):
            for task in self.experience.task_labels:
                self.trained[task] = self.final_pass(task)
                self.model.finish_task(task)
        super()._after_training_exp(**kwargs)

    @torch.no_grad()
    def final_pass(self, task: int) -> TrainedTask:
        """One pass over the task's training data with the trained model (evaluation mode): a
        ``StandardizedHead`` that trained gets the exact mean and std of its final features
        before it is folded (training standardized by batch statistics, and the running
        estimates lag features that moved until the last step); then the head's accuracy and
        mean max logit on the same features."""
        was_training = self.model.training
        self.model.eval()
        feats, labels = task_features(lambda x: self.model.features(x, task),
                                      self.experience.dataset.eval(), self.device,
                                      batch_size=self.eval_mb_size, inputs=self.inputs,
                                      autocast=self.autocast, workers=self.loader_workers,
                                      meter=self.fixed_passes)
        head = self.model.heads[str(task)]
        if isinstance(head, StandardizedHead) and self.steps_taken:
            head.set_statistics(feats.mean(0), feats.std(0, correction=0))
        logits = self.model.logits(task, feats)
        self.model.train(was_training)
        return TrainedTask(accuracy=float((logits.argmax(1) == labels).float().mean()),
                           mean_max_logit=float(logits.amax(1).mean()))

    def task_steps(self) -> int:
        """Optimizer steps of the current training task (its budget)."""
        if self.steps_per_task is not None:
            return self.steps_per_task
        return self.train_epochs * len(self.dataloader)

    def autocast(self):
        """bf16 autocast on the run's device for ``precision="bf16"`` (a disabled context for
        fp32): matmuls and attention in bf16; parameters (masks, gates, scores included),
        gradients and optimizer state stay fp32, and no loss scaling is needed."""
        if self.precision != "bf16":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _unpack_minibatch(self) -> None:
        """Move the batch to the device, then turn its images into model inputs there
        (``settings.inputs``: uint8 -> float, augmentation in training, normalization)."""
        super()._unpack_minibatch()
        if self.inputs is not None:
            self.mbatch[0] = self.inputs(self.mbatch[0], self.is_training)

    def make_train_dataloader(self, **kwargs) -> None:
        """The task's loader; with a budget in steps, as many epochs as it takes to make them."""
        kwargs.setdefault("num_workers", self.loader_workers)
        kwargs.setdefault("persistent_workers", self.loader_workers > 0)
        super().make_train_dataloader(**kwargs)
        self.steps_taken = 0
        self._stop_training = False
        if self.steps_per_task is not None:
            self.train_epochs = math.ceil(self.steps_per_task / max(len(self.dataloader), 1))

    def make_eval_dataloader(self, **kwargs) -> None:
        """One evaluation loader per experience, built on its first evaluation and reused: the
        runner evaluates every earlier task after every task."""
        exp = self.experience
        stream = exp.origin_stream
        key = (id(stream.benchmark), stream.name, exp.current_experience)
        if key not in self._eval_loaders:
            kwargs.setdefault("num_workers", self.loader_workers)
            super().make_eval_dataloader(**kwargs)
            self._eval_loaders[key] = self.dataloader
        self.dataloader = self._eval_loaders[key]

    def optimizer_step(self) -> None:
        super().optimizer_step()
        self.scheduler.step()
        self.steps_taken += 1
        if self.steps_per_task is not None and self.steps_taken >= self.steps_per_task:
            self.stop_training()  # Avalanche ends the epoch before the next batch

    def forward(self):
        """Avalanche's forward, except that in an experience of one task the model gets that
        task's label as an ``int`` (``MultiTaskModule``'s fast path): a tensor of labels costs
        a ``torch.unique`` and an ``.item()``, two device syncs, on every batch. Batches hold the
        current experience's samples only (no strategy here mixes in other tasks' samples)."""
        task = self._single_task()
        with self.autocast():
            if task is None or not is_multi_task_module(self.model):
                out = super().forward()
            else:
                out = self.model(self.mb_x, task)
        return out.float()  # losses (cross-entropy, distillation) in fp32

    def _single_task(self) -> int | None:
        """The current experience's task label if it has exactly one, else None; looked up once
        per experience (some Avalanche experiences compute ``task_labels`` from their data)."""
        if self._task_of[0] is not self.experience:
            labels = getattr(self.experience, "task_labels", None)
            task = int(labels[0]) if labels is not None and len(labels) == 1 else None
            self._task_of = (self.experience, task)
        return self._task_of[1]


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
