"""Piggyback (Mallya et al., ECCV 2018): per-task binary weight masks learned through real-valued
scores on a frozen backbone.

Every weight of the masked layers has a score s, initialized to ``init`` = 1e-2; the forward pass
uses W * [s > threshold] (threshold 5e-3) and the gradient passes straight through the threshold
to s (``models.masks.ThresholdRule``). Masked layers: every Linear inside the transformer blocks
(on a timm ViT: qkv, proj, fc1, fc2); the patch-embedding convolution with ``patch_embed=True``
(off by default: the paper masks the convolutions of CNNs; a ViT's only convolution is the patch
projection, and its Linears are where its weights are). Biases, LayerNorms, embeddings and heads
are not masked. After a task its masks are kept bit-packed: 1 bit per masked weight, plus the
head.

Optimizer: the paper's Adam at 1e-4 for scores (``lr``; recorded as ``mask_lr``,
``strategies.registry.RECORDED_NAMES``) and heads (AdamW with no weight decay), x0.1 from
the middle of the task on (the paper: at epoch 15 of 30; ``schedule="step"``, any schedule of
``strategies.schedules`` can be chosen). A score must travel init - threshold = 5e-3 before its
weight is masked: at 1e-4 per Adam step, at least 50 steps of consistent sign at the full rate.
The paper's budget is about 13,900 steps per task (``PAPER_BUDGET``); at another budget the
registered rates are scaled to its learning-rate mass (``strategies.schedules.budget_factor``).
"""

from __future__ import annotations

from models import anatomy
from models.masks import TaskMask, ThresholdRule
from strategies.masking import TaskMaskPlugin, mask_weights
from strategies.registry import register_strategy
from strategies.schedules import PaperBudget
from strategies.storage import StorageItem, head_items

# 30 epochs at batch 32 over the paper's five datasets (CUBS 5,994, Stanford Cars 8,144, Flowers
# 2,040, WikiArt 42,129, Sketch 16,000 training images): 14,861 a task on average
PAPER_BUDGET = PaperBudget(epochs=30, images=14_861, batch=32, rates=("lr", "head_lr"))


def masked_layers(backbone, patch_embed: bool) -> list:
    layers = anatomy.block_linears(backbone)
    return [anatomy.patch_projection(backbone), *layers] if patch_embed else layers


class PiggybackPlugin(TaskMaskPlugin):
    """Piggyback as an Avalanche plugin on a ``MultiTaskViT`` (``install(model)`` once): the
    backbone is frozen, each task learns its scores and its head."""

    def __init__(self, *, init: float = 1e-2, threshold: float = 5e-3, patch_embed: bool = False):
        super().__init__()
        if not init > threshold:
            raise ValueError(f"score init {init} must exceed the threshold {threshold} "
                             "(every weight starts kept)")
        self.rule = ThresholdRule(init=init, threshold=threshold)
        self.patch_embed = patch_embed

    def create_masks(self, backbone) -> list[TaskMask]:
        return mask_weights(masked_layers(backbone, self.patch_embed), self.rule)


def piggyback_storage(backbone, n_classes: int, hp: dict) -> list[StorageItem]:
    bits = sum(m.weight.numel() for m in masked_layers(backbone, hp["patch_embed"]))
    return [StorageItem("weight masks", bits, 1), *head_items(backbone.num_features, n_classes)]


@register_strategy(
    "piggyback",
    hparams={"lr": 1e-4, "head_lr": 1e-4, "schedule": "step", "init": 1e-2,
             "threshold": 5e-3, "patch_embed": False},
    defaults="paper",
    search_space={"lr": [1e-4, 1e-3, 1e-2, 1e-1], "head_lr": [1e-4, 1e-3, 3e-3]},
    storage=piggyback_storage,
    trains="a real-valued score per weight of every block Linear (qkv, proj, fc1, fc2), "
           "thresholded to a binary mask + head; backbone frozen",
    keeps="1 bit per block Linear weight + head",
    forgets=False,
    mask_kinds=("weight",),
    paper="Mallya et al., ECCV 2018",
    paper_budget=PAPER_BUDGET,
)
def build_piggyback(backbone, hp, settings):
    plugin = PiggybackPlugin(init=hp["init"], threshold=hp["threshold"],
                             patch_embed=hp["patch_embed"])
    return plugin.template(backbone, settings, hp)
