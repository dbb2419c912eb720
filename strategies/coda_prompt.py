"""CODA-Prompt (Smith et al., CVPR 2023): prefixes composed per sample from a growing set of
components weighted by the query, end to end (``models.prompt_pools.CodaPrefixes``).

At each prefix layer (blocks 1-5, ``layers: [0, 1, 2, 3, 4]``; a shallower backbone gets the
ones it has) the prompt is sum_m alpha_m P_m, alpha_m = cos(q * A_m, K_m) with the frozen
backbone's [CLS] query q (evaluation mode, no prompts: ``models.prompts.query_features``); its
first half is the key prefix, its second the value prefix (length 8: 4 + 4, the paper's). Each
task adds ``per_task`` = 10 components (the paper: a pool of 100 over 10 tasks) started
orthogonal to the earlier ones, trains them with its head, and freezes them. Old components keep
serving, but the new ones change every sample's prompt, so the strategy can forget. Loss:
cross-entropy only (the paper's orthogonality penalty is 0 in its reported configuration).
Features: the class token; without task ids the argmax over every class seen (``max_logit``),
its own setting. There is no hard selection, so no batch-wise vote.

Paper form (``strategies.prompting``, registered): one plain classifier over the classes seen,
trunc-normal 0.02, bias 0, past classes' logits masked in training (a plain head per task, the
argmax over all of them: ``head: plain``); components and head in one Adam group at 1e-3 with
cosine decay. ``head: standardized`` is the suite's probe-started ``StandardizedHead`` (its
earlier form). ``tune`` tries rates around the paper's with the paper's head only (scored with
task ids it would pick the standardized head, which is not the paper's form). Components whose
count exceeds the dimension start random (no orthogonal complement is left).
"""

from __future__ import annotations

from models.prompt_pools import CodaPrefixes
from models.prompts import UNPROMPTABLE, attach_prefixes, prefix_blocks, token_width
from strategies.prompting import PromptPlugin
from strategies.registry import register_strategy
from strategies.storage import FP32, StorageItem, head_items


class CodaPromptPlugin(PromptPlugin):
    """CODA-Prompt's components in a frozen backbone (module docstring)."""

    def __init__(self, layers: list[int], per_task: int, length: int):
        super().__init__()
        self.layers, self.per_task, self.length = layers, per_task, length

    def create(self, backbone):
        blocks = prefix_blocks(backbone, self.layers, "coda-prompt")
        coda = CodaPrefixes(len(blocks), self.per_task, self.length, token_width(backbone))
        backbone.coda_prompt = coda
        attach_prefixes(blocks, coda)
        return [coda]


def coda_storage(backbone, n_classes: int, hp: dict) -> list[StorageItem]:
    """Per task and prefix layer: C components of a prompt (L d), a key and an attention
    vector (d each), fp32, + the fp32 head."""
    d = token_width(backbone)
    n_layers = len(prefix_blocks(backbone, hp["layers"], "coda-prompt"))
    return [StorageItem("components", n_layers * hp["per_task"] * (hp["length"] + 2) * d, FP32),
            *head_items(backbone.num_features, n_classes)]


@register_strategy(
    "coda-prompt",
    hparams={"lr": 1e-3, "lr_scaling": "none", "schedule": "cosine", "head": "plain",
             "per_task": 10, "length": 8, "layers": [0, 1, 2, 3, 4]},
    search_space={"lr": [3e-4, 1e-3, 3e-3]},
    defaults="paper",
    storage=coda_storage,
    trains="10 new prompt components per task (prompt, key, attention vector at blocks 1-5), "
           "weighted per sample by the [CLS] query + a plain head (trunc-normal, not the "
           "probe); earlier components frozen",
    keeps="fp32 components + head",
    forgets=True,
    paper="Smith et al., CVPR 2023",
    refuses=UNPROMPTABLE,
    task_inference="max_logit",  # features do not depend on the task: one growing head
)
def build_coda_prompt(backbone, hp, settings):
    """The strategy as a ``CodaPromptPlugin`` (an Avalanche plugin)."""
    return CodaPromptPlugin(hp["layers"], hp["per_task"], hp["length"]).template(
        backbone, settings, hp)
