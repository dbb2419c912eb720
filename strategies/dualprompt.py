"""DualPrompt (Wang et al., ECCV 2022): a general prefix shared by all tasks in the first layers
and an expert prefix per task in the next ones, the expert chosen by query-key matching when no
task id is given (``models.prompt_pools.GeneralPrefix``, ``ExpertPrefixes``).

Prefix-tuning (``models.prompts``): a prefix of length L puts L key and L value entries in front
of a layer's own. G-prefix: L_g = 5 at blocks 1-2 (``g_layers: [0, 1]``); E-prefix: L_e = 5 at
blocks 3-5 (``e_layers: [2, 3, 4]``), the official CIFAR-100 configuration (its ImageNet-R one
has L_e = 20); a shallower backbone gets the layers it has (an error if no E-layer exists). Each
task trains the G-prefix, its own E-prefix and key (pulled to the queries by 1 x (1 - cos(q,
k_t)), the official code's coefficient) and its head; earlier heads and experts are frozen. A new
task's E-prefix starts as a copy of the previous task's (the official ``shared_prompt_pool``; its
key starts U(-1, 1): ``shared_prompt_key`` is off there). The G-prefix keeps training on every
task, so the strategy can forget. Features: the class token. The query is the frozen backbone's
[CLS] features in evaluation mode without prompts, computed by the model
(``models.prompts.query_features``); given a task id in evaluation none is needed.

Paper form (``strategies.prompting``, registered): one plain classifier over the classes seen,
trunc-normal 0.02, bias 0, other tasks' logits masked in training (a plain head per task, the
argmax over all of them: ``head: plain``); prefixes, keys and head in one Adam group at
0.03 x batch / 256, constant (the official code's rule). One length for keys and values (the
official PyTorch code's form); prompts and keys start U(-1, 1).

Settings. With task ids (task-incremental) a sample uses its task's expert (the paper's
oracle); without (``--task-agnostic``, DualPrompt's own setting) the expert whose key is the most
cosine-similar to the query, then the argmax over every class seen (``max_logit``).

Choices, each a hyperparameter: ``batchwise_prompt`` (default off: the expert is chosen per
sample, as the paper defines it; on, the official code's vote: the whole batch takes the expert
most of its samples choose, which uses that a test batch comes from one task); ``head:
standardized``, the suite's probe-started ``StandardizedHead`` (its earlier form). ``tune`` tries
rates around the official one with the paper's head only (scored with task ids it would pick the
standardized head, which is not the paper's form).
"""

from __future__ import annotations

from models.prompt_pools import ExpertPrefixes, GeneralPrefix
from models.prompts import UNPROMPTABLE, attach_prefixes, prefix_blocks, token_width
from strategies.prompting import PromptPlugin
from strategies.registry import register_strategy
from strategies.storage import FP32, StorageItem, head_items


def layer_blocks(backbone, hp: dict) -> tuple[list, list]:
    """The blocks of the G- and E-prefixes (disjoint)."""
    overlap = set(hp["g_layers"]) & set(hp["e_layers"])
    if overlap:
        raise ValueError(f"dualprompt: g_layers and e_layers share {sorted(overlap)}")
    return (prefix_blocks(backbone, hp["g_layers"], "dualprompt g_layers"),
            prefix_blocks(backbone, hp["e_layers"], "dualprompt e_layers"))


class DualPromptPlugin(PromptPlugin):
    """DualPrompt's prefixes in a frozen backbone (module docstring)."""

    def __init__(self, hp: dict):
        super().__init__()
        self.hp = hp

    def create(self, backbone):
        hp, d = self.hp, token_width(backbone)
        g_blocks, e_blocks = layer_blocks(backbone, hp)
        general = GeneralPrefix(len(g_blocks), hp["g_length"], d)
        experts = ExpertPrefixes(len(e_blocks), hp["e_length"], d, hp["match_weight"],
                                 hp["batchwise_prompt"])
        backbone.dualprompt_general, backbone.dualprompt_experts = general, experts
        attach_prefixes(g_blocks, general)
        attach_prefixes(e_blocks, experts)
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
    hparams={"lr": 0.03, "lr_scaling": "linear", "schedule": "constant", "head": "plain",
             "g_length": 5, "e_length": 5, "g_layers": [0, 1], "e_layers": [2, 3, 4],
             "match_weight": 1.0, "batchwise_prompt": False},
    search_space={"lr": [0.01, 0.03, 0.1]},
    defaults="paper+code",
    storage=dualprompt_storage,
    shared_storage=dualprompt_shared_storage,
    trains="a shared general prefix (blocks 1-2) + a per-task expert prefix (blocks 3-5, started "
           "from the previous task's) with a key + a plain head (trunc-normal, not the probe); "
           "backbone frozen",
    keeps="fp32 expert prefix and key + head (general prefix shared)",
    forgets=True,
    paper="Wang et al., ECCV 2022",
    refuses=UNPROMPTABLE,
    task_inference="max_logit",  # the expert chosen by its key, then one growing head
)
def build_dualprompt(backbone, hp, settings):
    """The strategy as a ``DualPromptPlugin`` (an Avalanche plugin)."""
    return DualPromptPlugin(hp).template(backbone, settings, hp)
