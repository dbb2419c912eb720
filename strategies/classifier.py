"""``classifier``: the frozen pre-trained backbone with one new linear head per task.

With ``head_init="probe"`` (default) the head *is* the converged linear probe on the frozen
features (standardization folded into weight and bias) and no SGD epoch runs: a few epochs of
SGD on badly conditioned frozen features measure head-training accidents, not the strategy.
With ``head_init="random"`` the head is trained by AdamW for the run's epochs.
"""

from __future__ import annotations

import dataclasses

from models.multitask import MultiTaskViT
from strategies.registry import register_strategy
from strategies.skeleton import Skeleton
from strategies.storage import head_only_storage


@register_strategy(
    "classifier",
    hparams={"head_lr": 1e-3, "schedule": "cosine"},
    search_space={"head_lr": [1e-3]},  # the head is the converged probe: nothing to tune
    defaults="suite",
    storage=head_only_storage,
    trains="nothing: the head is the converged linear probe",
    keeps="head",
    forgets=False,
    paper="MEAT paper's Classifier",
    task_inference="max_logit",  # features do not depend on the task: one growing head
)
def build_classifier(backbone, hp, settings):
    if settings.head_init == "probe":
        settings = dataclasses.replace(settings, epochs=0, steps_per_task=None)
    return Skeleton().build(MultiTaskViT(backbone), hp, settings)  # no lr: the head alone
