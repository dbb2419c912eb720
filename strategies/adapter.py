"""Adapter (Adapter-BERT, Houlsby et al., 2019, as MEAT's paper uses it): per-task bottleneck
adapters after every block's MLP (``models.adapters``), on a frozen backbone.

Each task trains its own adapters (``hidden`` = 64 units by default, the size MEAT's reported
model sizes fit; zero-initialized up-projection, so a new adapter starts as the identity) and its
head; they are kept in fp32. LayerNorms: frozen, not per task. MEAT describes the baseline as
"old parameters frozen except normalization layers", which for a *shared* LayerNorm would let
later tasks change earlier tasks' features; frozen LayerNorms keep the strategy forgetting-free
at the cost of the few normalization parameters the paper let adapt.

Registered rates (the suite's; the paper gives none for this baseline): AdamW 1e-2 for the
adapters, 1e-3 for the head, cosine. An up-projection that starts at zero must grow within a
budget of a few hundred steps; at 1e-3 the adapters barely leave the identity in the default
suite's 150 steps (docs/strategies.md gives the measurement).
"""

from __future__ import annotations

from functools import partial

from models.adapters import adapter_params, add_adapters
from strategies.registry import register_strategy
from strategies.skeleton import PerTaskPlugin
from strategies.storage import FP32, StorageItem, head_items


def adapter_storage(backbone, n_classes: int, hp: dict) -> list[StorageItem]:
    """One fp32 bottleneck per block + the fp32 head."""
    return [StorageItem("adapters", adapter_params(backbone, hp["hidden"]), FP32),
            *head_items(backbone.num_features, n_classes)]


@register_strategy(
    "adapter",
    hparams={"lr": 1e-2, "head_lr": 1e-3, "hidden": 64, "schedule": "cosine"},
    search_space={"lr": [3e-4, 1e-3, 3e-3, 1e-2], "head_lr": [3e-4, 1e-3, 3e-3]},
    defaults="suite",
    storage=adapter_storage,
    trains="per-task bottleneck adapters (64 units) after every MLP + head; backbone and "
           "LayerNorms frozen",
    keeps="fp32 adapters + head",
    forgets=False,
    paper="Houlsby et al., ICML 2019 (Adapter-BERT, as in MEAT)",
)
def build_adapter(backbone, hp, settings):
    """The strategy as a ``strategies.skeleton.PerTaskPlugin`` (an Avalanche plugin)."""
    plugin = PerTaskPlugin(partial(add_adapters, hidden=hp["hidden"]))
    return plugin.template(backbone, settings, hp)
