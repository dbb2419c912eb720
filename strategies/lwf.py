"""LwF — Learning without Forgetting (Li & Hoiem, 2016), through Avalanche's ``LwFPlugin``.

One shared backbone trained on every task (as ``finetune``), one head per task; while task t is
learned, Avalanche's plugin adds alpha * KL(softmax(z_old / T) || softmax(z / T)) summed over the
earlier tasks' heads, where z_old are the logits of the model as it was before task t on the new
task's images (``alpha`` = 1, ``temperature`` T = 2; no T^2 factor, as Avalanche 0.6.0 computes
it). Only the heads are kept per task; the shared backbone still drifts, so LwF can forget.
"""

from __future__ import annotations

from avalanche.training.plugins import LwFPlugin

from models.multitask import MultiTaskViT
from strategies.finetune import FINE_TUNING_HPARAMS, FINE_TUNING_SPACE, fine_tuning
from strategies.registry import register_strategy
from strategies.storage import head_only_storage


@register_strategy(
    "lwf",
    hparams={**FINE_TUNING_HPARAMS, "alpha": 1.0, "temperature": 2.0},
    search_space={**FINE_TUNING_SPACE, "alpha": [0.5, 1.0, 2.0], "temperature": [1.0, 2.0]},
    defaults="paper+suite",
    storage=head_only_storage,
    trains="whole backbone + new head, distilling the earlier heads' outputs (Avalanche "
           "`LwFPlugin`, α = 1, T = 2)",
    keeps="head",
    forgets=True,
    paper="Li & Hoiem, ECCV 2016",
    task_inference="max_logit",  # features do not depend on the task: one growing head
)
def build_lwf(backbone, hp, settings):
    plugin = LwFPlugin(alpha=hp["alpha"], temperature=hp["temperature"])
    return fine_tuning(MultiTaskViT(backbone), hp, settings, plugins=[plugin])
