"""``finetune``: one shared backbone trained on every task in turn (the lower bound: it forgets).

Each task gets its own head; the backbone moves with every task, so earlier tasks' heads read
features they were not trained on.
"""

from __future__ import annotations

from models.multitask import MultiTaskViT
from strategies.registry import register_strategy
from strategies.skeleton import Skeleton
from strategies.storage import head_only_storage

FINE_TUNING_HPARAMS = {"optimizer": "adamw", "lr": 5e-4, "head_lr": 1e-3, "weight_decay": 0.0,
                       "schedule": "cosine"}
FINE_TUNING_SPACE = {"lr": [1e-4, 3e-4, 5e-4, 1e-3], "head_lr": [1e-3, 3e-3]}


class FineTuning(Skeleton):
    """Train the task's backbone (``MultiTaskViT.backbone_for``) at ``lr`` and every head at
    ``head_lr`` (earlier heads get gradients only from a plugin's loss on them, e.g. LwF's
    distillation), with ``hp["optimizer"]`` and ``hp["weight_decay"]``."""

    def trains(self, model, task: int):
        return model.backbone_for(task).parameters()

    def heads(self, model, task: int):
        return model.heads.parameters()


@register_strategy(
    "finetune",
    hparams=FINE_TUNING_HPARAMS,
    search_space=FINE_TUNING_SPACE,
    defaults="suite",
    storage=head_only_storage,
    trains="whole backbone + new head",
    keeps="head",
    forgets=True,
    paper="lower bound",
    task_inference="max_logit",  # features do not depend on the task: one growing head
)
def build_finetune(backbone, hp, settings):
    return FineTuning().build(MultiTaskViT(backbone), hp, settings)
