"""``individual``: a separate copy of the pre-trained backbone fine-tuned for every task.

The upper bound of the MEAT paper: nothing is shared, nothing is forgotten, and every task
costs a full fp32 backbone.
"""

from __future__ import annotations

from models.multitask import PerTaskBackboneViT
from strategies.finetune import FINE_TUNING_HPARAMS, FINE_TUNING_SPACE, FineTuning
from strategies.registry import register_strategy
from strategies.storage import FP32, StorageItem, head_items, param_count


def individual_storage(backbone, n_classes, hp):
    return [StorageItem("backbone copy", param_count(backbone), FP32),
            *head_items(backbone.num_features, n_classes)]


@register_strategy(
    "individual",
    hparams=FINE_TUNING_HPARAMS,
    search_space=FINE_TUNING_SPACE,
    defaults="suite",
    storage=individual_storage,
    trains="a fresh copy of the pre-trained backbone + head",
    keeps="fp32 backbone + head",
    forgets=False,
    paper="upper bound (MEAT paper's Individual)",
)
def build_individual(backbone, hp, settings):
    return FineTuning().build(PerTaskBackboneViT(backbone), hp, settings)
