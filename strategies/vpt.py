"""VPT — visual prompt tuning, deep (Jia et al., ECCV 2022): per-task prompt tokens at every
layer of a frozen backbone (``models.prompts``).

Each task trains its own L prompt tokens per block (inserted after the prefix tokens, their
outputs dropped after the block) and its head; they are kept in fp32, so the strategy cannot
forget. Choices the paper leaves open for this setting:

- Length: L = 10 (the paper searches 1-200 per dataset; 10 is within its typical 10-50 and
  already comparable to a micro model's 16 patches); searched over {5, 10}.
- Optimizer: the paper uses SGD with a large searched rate; here AdamW with cosine decay like
  every other strategy, prompts and head at their own searched rates, no weight decay.
- No prompt dropout (the paper's default configuration has none).
- Pooling: the class token (or the backbone's own pooling) of the sequence without the prompts.
- CaiT: its self-attention blocks are prompted, its class-attention blocks are not; LaViT is
  refused (``models.prompts``).
"""

from __future__ import annotations

from functools import partial

from models.prompts import UNPROMPTABLE, add_task_prompts, prompt_params
from strategies.registry import register_strategy
from strategies.skeleton import PerTaskPlugin
from strategies.storage import FP32, StorageItem, head_items


def vpt_storage(backbone, n_classes: int, hp: dict) -> list[StorageItem]:
    """L x d fp32 prompt entries per promptable block + the fp32 head."""
    return [StorageItem("prompts", prompt_params(backbone, hp["length"]), FP32),
            *head_items(backbone.num_features, n_classes)]


@register_strategy(
    "vpt",
    hparams={"lr": 1e-2, "head_lr": 1e-3, "length": 10, "schedule": "cosine"},
    search_space={"lr": [3e-3, 1e-2, 3e-2, 1e-1], "head_lr": [3e-4, 1e-3, 3e-3],
                  "length": [5, 10]},
    defaults="suite",
    storage=vpt_storage,
    trains="per-task prompt tokens (10) at every layer (VPT-deep) + head; backbone frozen",
    keeps="fp32 prompts + head",
    forgets=False,
    paper="Jia et al., ECCV 2022",
    refuses=UNPROMPTABLE,
)
def build_vpt(backbone, hp, settings):
    """The strategy as a ``strategies.skeleton.PerTaskPlugin`` (an Avalanche plugin)."""
    plugin = PerTaskPlugin(partial(add_task_prompts, length=hp["length"]))
    return plugin.template(backbone, settings, hp)
