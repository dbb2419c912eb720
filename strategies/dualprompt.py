"""DualPrompt (Wang et al., ECCV 2022): a general prefix shared by all tasks in the first layers
and an expert prefix per task in the next ones, the expert chosen by query-key matching when no
task id is given (``models.prompt_pools.GeneralPrefix``, ``ExpertPrefixes``).

Prefix-tuning (``models.prompts``): a prefix of length L puts L key and L value entries in front
of a layer's own. G-prefix: L_g = 5 at blocks 1-2 (``g_layers: [0, 1]``); E-prefix: L_e = 20 at
blocks 3-5 (``e_layers: [2, 3, 4]``), the paper's lengths and layers; a shallower backbone gets
the layers it has (an error if no E-layer exists). Each task trains the G-prefix, its own
E-prefix and key (pulled to the queries by 1 x (1 - cos(q, k_t)), the official code's
coefficient) and its head; earlier heads and experts are frozen. The G-prefix keeps training on
every task, so the strategy can forget. Features: the class token.

Settings. With task ids (task-incremental) a sample uses its task's expert (the paper's
oracle); without (``--task-agnostic``, DualPrompt's own setting) the expert whose key is the most
cosine-similar to the query, then one classifier over every class seen (``max_logit``).

Choices left open or changed for this suite: one length for keys and values (the official
PyTorch code's form); prompts and keys U(-1, 1); AdamW with cosine decay (the paper: Adam,
constant), prompts and keys at one searched rate, the head at another.
"""

from __future__ import annotations

from models.prompt_pools import ExpertPrefixes, GeneralPrefix, LayerPrefix
from models.prompts import (
    UNPROMPTABLE,
    attach_prefix,
    install_query,
    prefix_blocks,
    token_width,
)
from strategies.common import BackbonePlugin
from strategies.registry import register_strategy
from strategies.storage import FP32, StorageItem, head_items


def layer_blocks(backbone, hp: dict) -> tuple[list, list]:
    """The blocks of the G- and E-prefixes (disjoint)."""
    overlap = set(hp["g_layers"]) & set(hp["e_layers"])
    if overlap:
        raise ValueError(f"dualprompt: g_layers and e_layers share {sorted(overlap)}")
    return (prefix_blocks(backbone, hp["g_layers"], "dualprompt g_layers"),
            prefix_blocks(backbone, hp["e_layers"], "dualprompt e_layers"))


class DualPromptPlugin(BackbonePlugin):
    """DualPrompt's prefixes in a frozen backbone (module docstring)."""

    def __init__(self, hp: dict):
        super().__init__()
        self.hp = hp

    def create(self, backbone):
        hp, query, d = self.hp, install_query(backbone), token_width(backbone)
        g_blocks, e_blocks = layer_blocks(backbone, hp)
        general = GeneralPrefix(len(g_blocks), hp["g_length"], d, query)
        experts = ExpertPrefixes(len(e_blocks), hp["e_length"], d, hp["match_weight"], query)
        backbone.dualprompt_general, backbone.dualprompt_experts = general, experts
        for owner, blocks in ((general, g_blocks), (experts, e_blocks)):
            for i, block in enumerate(blocks):
                attach_prefix(block, LayerPrefix(owner, i))
        return [general, experts]


def dualprompt_storage(backbone, n_classes: int, hp: dict) -> list[StorageItem]:
    """Per task: its E-prefix (2 L_e d per E-layer) and key (d), fp32, + the fp32 head."""
    d, (_, e_blocks) = token_width(backbone), layer_blocks(backbone, hp)
    return [StorageItem("expert prefix", len(e_blocks) * 2 * hp["e_length"] * d, FP32),
            StorageItem("expert key", d, FP32), *head_items(backbone.num_features, n_classes)]


def dualprompt_shared_storage(backbone, hp: dict) -> list[StorageItem]:
    """The G-prefix (2 L_g d per G-layer), fp32, kept once for all tasks."""
    d, (g_blocks, _) = token_width(backbone), layer_blocks(backbone, hp)
    return [StorageItem("general prefix", len(g_blocks) * 2 * hp["g_length"] * d, FP32)]


@register_strategy(
    "dualprompt",
    hparams={"lr": 1e-2, "head_lr": 1e-3, "g_length": 5, "e_length": 20, "g_layers": [0, 1],
             "e_layers": [2, 3, 4], "match_weight": 1.0, "schedule": "cosine"},
    search_space={"lr": [1e-3, 3e-3, 1e-2, 3e-2], "head_lr": [3e-4, 1e-3, 3e-3]},
    defaults="paper+suite",
    storage=dualprompt_storage,
    shared_storage=dualprompt_shared_storage,
    trains="a shared general prefix (blocks 1-2) + a per-task expert prefix (blocks 3-5) with a "
           "key + head; backbone frozen",
    keeps="fp32 expert prefix and key + head (general prefix shared)",
    forgets=True,
    paper="Wang et al., ECCV 2022",
    refuses=UNPROMPTABLE,
    task_inference="max_logit",  # the expert chosen by its key, then one growing head
)
def build_dualprompt(backbone, hp, settings):
    """The strategy as a ``DualPromptPlugin`` (an Avalanche plugin)."""
    return DualPromptPlugin(hp).template(backbone, settings, hp)
