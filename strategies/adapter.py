"""Adapter (Adapter-BERT, Houlsby et al., 2019, as MEAT's paper uses it): per-task bottleneck
adapters after every block's MLP (``models.adapters``), on a frozen backbone.

Each task trains its own adapters (``hidden`` = 64 units by default, the size MEAT's reported
model sizes fit; zero-initialized up-projection, so a new adapter starts as the identity) and its
head; they are kept in fp32. LayerNorms: frozen, not per task. MEAT describes the baseline as
"old parameters frozen except normalization layers", which for a *shared* LayerNorm would let
later tasks change earlier tasks' features; frozen LayerNorms keep the strategy forgetting-free
at the cost of the few normalization parameters the paper let adapt.
"""

from __future__ import annotations

from avalanche.core import SupervisedPlugin

from models.adapters import TaskAdapters, adapter_params, add_adapters
from models.multitask import MultiTaskViT
from strategies.common import ContinualTemplate
from strategies.registry import register_strategy
from strategies.storage import FP32, StorageItem, head_items


class AdapterPlugin(SupervisedPlugin):
    """Adds the new task's adapters at the start of each task; only they and the new head train."""

    def __init__(self, *, hidden: int = 64):
        super().__init__()
        self.hidden = hidden
        self.adapters: list[TaskAdapters] = []

    def ensure_installed(self, model: MultiTaskViT) -> None:
        if not self.adapters:
            model.backbone.requires_grad_(False)
            self.adapters = add_adapters(model.backbone, self.hidden)
            model.refresh_task_modules()

    def before_training_exp(self, strategy, **kwargs):
        self.ensure_installed(strategy.model)
        task = strategy.experience.task_label
        for a in self.adapters:
            a.per_task.requires_grad_(False)
            a.add_task(task, strategy.device)
        strategy.model.train_only_head(task)
        strategy.make_optimizer()


def adapter_storage(backbone, n_classes: int, hp: dict) -> list[StorageItem]:
    """One fp32 bottleneck per block + the fp32 head."""
    return [StorageItem("adapters", adapter_params(backbone, hp["hidden"]), FP32),
            *head_items(backbone.num_features, n_classes)]


@register_strategy(
    "adapter",
    hparams={"lr": 1e-3, "head_lr": 1e-3, "hidden": 64, "schedule": "cosine"},
    search_space={"lr": [3e-4, 1e-3, 3e-3, 1e-2], "head_lr": [3e-4, 1e-3, 3e-3]},
    defaults="suite",
    storage=adapter_storage,
    trains="per-task bottleneck adapters after every MLP + the new head",
    keeps="fp32 adapters + head",
    forgets=False,
    paper="Houlsby et al., ICML 2019 (Adapter-BERT, as in MEAT)",
)
def build_adapter(backbone, hp, settings):
    plugin = AdapterPlugin(hidden=hp["hidden"])
    model = MultiTaskViT(backbone)
    plugin.ensure_installed(model)

    def groups(m):
        return [{"params": [p for a in plugin.adapters for p in a.parameters()], "lr": hp["lr"]},
                {"params": list(m.heads.parameters()), "lr": hp["head_lr"]}]

    return ContinualTemplate(model=model, param_groups=groups, settings=settings,
                             plugins=[plugin], schedule=hp["schedule"])
