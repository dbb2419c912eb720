"""``finetune``: one shared backbone trained on every task in turn (the lower bound: it forgets).

Each task gets its own head; the backbone moves with every task, so earlier tasks' heads read
features they were not trained on.
"""

from __future__ import annotations

from models.multitask import MultiTaskViT
from strategies.common import ContinualTemplate
from strategies.registry import register_strategy
from strategies.storage import head_items


def backbone_and_head_groups(hp: dict):
    """Parameter groups: the backbone(s) at ``lr``, the heads at ``head_lr``."""
    def groups(model):
        heads = set(map(id, model.heads.parameters()))
        rest = [p for p in model.parameters() if id(p) not in heads]
        return [{"params": rest, "lr": hp["lr"]},
                {"params": list(model.heads.parameters()), "lr": hp["head_lr"]}]
    return groups


@register_strategy(
    "finetune",
    hparams={"optimizer": "adamw", "lr": 5e-4, "head_lr": 1e-3, "weight_decay": 0.0},
    storage=lambda backbone, n_classes, hp: head_items(backbone.num_features, n_classes),
    trains="whole backbone + the new head",
    keeps="head only",
    head_init="random",
    forgets=True,
    paper="lower bound",
)
def build_finetune(backbone, hp, settings):
    return ContinualTemplate(
        model=MultiTaskViT(backbone),
        param_groups=backbone_and_head_groups(hp),
        settings=settings,
        optimizer=hp["optimizer"],
        weight_decay=hp["weight_decay"],
    )
