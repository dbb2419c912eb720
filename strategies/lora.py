"""LoRA — per-task low-rank updates of the frozen backbone's Linears (Hu et al., ICLR 2022).

Each task trains its own update (alpha / r) B A of every targeted Linear (``models.lora``; B starts
at zero, so a task starts from the pre-trained features) and its head, on a frozen backbone; the
updates are kept in fp32, so the strategy cannot forget. Choices the paper leaves open for this
setting:

- Targets: the paper adapts W_q and W_v of a language model. A timm ViT fuses q, k, v in one
  ``qkv`` Linear, so the update covers the whole ``qkv`` output (and, per the issue's baseline,
  the output projection): ``targets: attention``; ``targets: all`` adds fc1 and fc2.
- Rank and scale: r = 8, alpha = 16 (the scale alpha / r = 2), within the paper's range
  (r in 1-64; alpha fixed to a first r, so that the rate need not be re-tuned when r changes);
  rank is searched, alpha is not.
- Optimizer: AdamW with cosine decay, updates and head at their own rates, no weight decay.
"""

from __future__ import annotations

from functools import partial

from models.lora import add_lora, lora_params
from strategies.registry import register_strategy
from strategies.skeleton import PerTaskPlugin
from strategies.storage import FP32, StorageItem, head_items


def lora_storage(backbone, n_classes: int, hp: dict) -> list[StorageItem]:
    """r (in + out) fp32 entries per target Linear + the fp32 head."""
    return [StorageItem("lora", lora_params(backbone, hp["targets"], hp["rank"]), FP32),
            *head_items(backbone.num_features, n_classes)]


@register_strategy(
    "lora",
    hparams={"lr": 1e-3, "head_lr": 1e-3, "rank": 8, "alpha": 16.0, "targets": "attention",
             "schedule": "cosine"},
    search_space={"lr": [3e-4, 1e-3, 3e-3, 1e-2], "head_lr": [3e-4, 1e-3, 3e-3],
                  "rank": [4, 8]},
    defaults="paper+suite",
    storage=lora_storage,
    trains="per-task low-rank updates (r = 8, scale α/r = 2) of every attention Linear (qkv, "
           "proj) + head; backbone frozen",
    keeps="fp32 low-rank updates + head",
    forgets=False,
    paper="Hu et al., ICLR 2022",
)
def build_lora(backbone, hp, settings):
    """The strategy as a ``strategies.skeleton.PerTaskPlugin`` (an Avalanche plugin)."""
    plugin = PerTaskPlugin(partial(add_lora, targets=hp["targets"], rank=hp["rank"],
                                  alpha=hp["alpha"]))
    return plugin.template(backbone, settings, hp)
