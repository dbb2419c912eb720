"""SupSup — Supermasks in Superposition (Wortsman et al., NeurIPS 2020), task-incremental, on a
frozen pre-trained ViT.

Every weight of the masked layers has a real-valued score per task; the forward pass uses
W * M with M = 1 for the fraction ``keep`` of weights with the largest |score| and 0 for the rest
(edge-popup's top-k, the gradient passes straight through the selection to the score;
``models.masks.TopKRule``). Scores start Kaiming-uniform (a = sqrt(5)), the paper's init, so the
first mask is a random subset of size ``keep``. Masked layers: every Linear inside the transformer
blocks (qkv, proj, fc1, fc2), as for Piggyback. Kept per task: 1 bit per masked weight, plus the
head.

Choices the paper leaves open here. The paper masks *random* fixed weights (signed constants);
here the weights are the frozen pre-trained ones, as in Piggyback, so ``keep`` trades the
pre-trained features kept against the freedom of the mask: 0.5 (edge-popup's best fraction on
random weights) by default, searched over [0.5, 0.7, 0.9]. Optimizer: AdamW without weight decay
(decay would shrink scores toward the selection boundary) for scores (``lr``; recorded as
``score_lr``, ``strategies.registry.RECORDED_NAMES``) and head, cosine schedule.
Without a task id (``--task-agnostic``) the runner's rules apply (``models.task_inference``):
SupSup's entropy criterion per sample (``entropy``) and its lowest-entropy task per test batch
(``entropy_batch``, which assumes every test batch comes from one task). The paper's one-shot
form — one gradient of the batch-mean entropy with respect to superposition coefficients —
approximates that per-batch choice and is not implemented.
"""

from __future__ import annotations

from models import anatomy
from models.masks import TaskMask, TopKRule
from strategies.masking import TaskMaskPlugin, mask_weights
from strategies.registry import register_strategy
from strategies.storage import StorageItem, head_items


class SupSupPlugin(TaskMaskPlugin):
    """Per-task top-k supermasks on every block Linear of a frozen backbone."""

    def __init__(self, *, keep: float = 0.5):
        super().__init__()
        self.rule = TopKRule(keep=keep)

    def create_masks(self, backbone) -> list[TaskMask]:
        return mask_weights(anatomy.block_linears(backbone), self.rule)


def supsup_storage(backbone, n_classes: int, hp: dict) -> list[StorageItem]:
    bits = sum(m.weight.numel() for m in anatomy.block_linears(backbone))
    return [StorageItem("supermasks", bits, 1), *head_items(backbone.num_features, n_classes)]


@register_strategy(
    "supsup",
    hparams={"lr": 1e-3, "head_lr": 1e-3, "keep": 0.5, "schedule": "cosine"},
    defaults="paper+suite",
    search_space={"lr": [1e-4, 1e-3, 1e-2], "head_lr": [3e-4, 1e-3, 3e-3],
                  "keep": [0.5, 0.7, 0.9]},
    storage=supsup_storage,
    trains="a score per weight of every block Linear (qkv, proj, fc1, fc2), its top-k "
           "fraction kept (straight-through) + head; backbone frozen",
    keeps="1 bit per block Linear weight + head",
    forgets=False,
    mask_kinds=("weight",),
    paper="Wortsman et al., NeurIPS 2020",
)
def build_supsup(backbone, hp, settings):
    plugin = SupSupPlugin(keep=hp["keep"])
    return plugin.template(backbone, settings, hp)
