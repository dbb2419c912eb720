"""LwF — Learning without Forgetting (Li & Hoiem, 2016): Avalanche's loss in one forward.

One shared backbone trained on every task (as ``finetune``), one head per task; while task t is
learned, the loss adds alpha * sum over earlier tasks u of KL(softmax(z_old_u / T) ||
softmax(z_u / T)) (batch mean), where z_u are head u's logits of the model being trained and
z_old_u those of the model as it was before task t, on the new task's images, restricted to the
classes task u has seen (``alpha`` = 1, ``temperature`` T = 2; no T^2 factor, as Avalanche 0.6.0
computes it). Only the heads are kept per task; the shared backbone still drifts, so LwF can
forget.

The loss is Avalanche's ``LwFPlugin``'s; the work is not. Avalanche runs a second forward and
backward of the student (``forward_all_tasks``) and the teacher outside autocast, and indexes
logits with a Python list per head. Here:

- the student's logits of every head come from the training step's one forward
  (:class:`LwFTemplate`: the backbone is shared and task-independent, so one feature pass serves
  every head);
- the teacher runs once per batch under the run's autocast, without gradients;
- the seen classes of each earlier head are a device index tensor, or nothing when the head has
  seen all its units, so the step never waits for the host.

The teacher is the model after the previous task in evaluation mode (Avalanche keeps its copy in
training mode; the two differ only where dropout, drop-path or DropKey is active: the paper's
teacher is the original network's deterministic output). With those off, the loss equals
Avalanche's to float rounding (tested to 1e-5 in fp32).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from avalanche.training.plugins import LwFPlugin

from models.multitask import MultiTaskViT
from strategies.common import ContinualTemplate
from strategies.finetune import FINE_TUNING_HPARAMS, FINE_TUNING_SPACE, FineTuning
from strategies.registry import register_strategy
from strategies.storage import head_only_storage


class LwFTemplate(ContinualTemplate):
    """Fine-tuning whose training forward also gives every earlier head's logits
    (``mb_head_logits``, by task) from the same features, for :class:`OneForwardLwF`."""

    def forward(self):
        task = self._single_task()
        if not self.is_training or task is None:
            return super().forward()
        with self.autocast():
            feats = self.model.features(self.mb_x, task)
        self.mb_head_logits = {int(t): self.model.logits(int(t), feats) for t in self.model.heads}
        return self.mb_head_logits[task]


class LwFTraining(FineTuning):
    """Fine-tuning in the :class:`LwFTemplate`."""

    template_type = LwFTemplate


class OneForwardLwF(LwFPlugin):
    """Avalanche's LwF loss from the template's one forward (module docstring)."""

    def __init__(self, alpha: float = 1.0, temperature: float = 2.0):
        super().__init__(alpha=alpha, temperature=temperature)
        self.seen_units: dict[int, torch.Tensor | None] = {}  # by earlier task (None: all)

    def before_backward(self, strategy, **kwargs):
        teacher = self.lwf.prev_model
        if teacher is None:
            return
        with torch.no_grad(), strategy.autocast():
            old = teacher.forward_all_tasks(strategy.mb_x)
        loss = sum(self.distillation(strategy.mb_head_logits[t], old[t].float(), units)
                   for t, units in self.seen_units.items())
        strategy.loss = strategy.loss + self.lwf.alpha * loss

    def distillation(self, logits, old_logits, units) -> torch.Tensor:
        """KL(softmax(old / T) || softmax(new / T)) over the seen ``units``, batch mean."""
        if units is not None:
            logits, old_logits = logits.index_select(1, units), old_logits.index_select(1, units)
        T = self.lwf.temperature
        return F.kl_div(torch.log_softmax(logits / T, dim=1), torch.softmax(old_logits / T, dim=1),
                        reduction="batchmean")

    def after_training_exp(self, strategy, **kwargs):
        """Avalanche's bookkeeping (teacher copy, seen classes per task), then the teacher in
        evaluation mode and each task's seen units as a device tensor."""
        super().after_training_exp(strategy, **kwargs)
        self.lwf.prev_model.eval().requires_grad_(False)
        for task, classes in self.lwf.prev_classes_by_task.items():
            width = strategy.model.heads[str(task)].out_features
            self.seen_units[int(task)] = (
                None if set(classes) == set(range(width))
                else torch.tensor(sorted(classes), device=strategy.device))


@register_strategy(
    "lwf",
    hparams={**FINE_TUNING_HPARAMS, "alpha": 1.0, "temperature": 2.0},
    search_space={**FINE_TUNING_SPACE, "alpha": [0.5, 1.0, 2.0], "temperature": [1.0, 2.0]},
    defaults="paper+suite",
    storage=head_only_storage,
    trains="whole backbone + new head, distilling the earlier heads' outputs (Avalanche's "
           "`LwFPlugin` loss, one forward, α = 1, T = 2)",
    keeps="head",
    forgets=True,
    paper="Li & Hoiem, ECCV 2016",
    task_inference="max_logit",  # features do not depend on the task: one growing head
)
def build_lwf(backbone, hp, settings):
    plugin = OneForwardLwF(alpha=hp["alpha"], temperature=hp["temperature"])
    return LwFTraining().build(MultiTaskViT(backbone), hp, settings, plugins=[plugin])
