"""L2P — Learning to Prompt (Wang et al., CVPR 2022): a shared pool of prompts chosen per sample
by query-key matching, on a frozen backbone (``models.prompt_pools.L2PPool``).

The query is the frozen backbone's pre-logits ([CLS]) features of the input, computed by the
model in evaluation mode without prompts (``models.prompts.query_features``); the ``top_n`` = 5
keys (of ``size`` = 10) most cosine-similar to it choose 5 prompts of ``length`` = 5 tokens,
inserted after the class token before the first block (shallow prompt tuning; CaiT: before its
self-attention stage). The head reads the mean of the prompts' outputs after the final norm
(``pooling: prompts``, L2P's ``head_type: prompt``: the model's ``head_input: prompts``;
``token`` uses the class token). Loss: the task's
cross-entropy minus 0.1 x the chosen keys' summed similarity (L2P's surrogate loss). The pool is
shared and keeps training, so the strategy can forget.

Paper form (``strategies.prompting``, registered): one plain classifier over the classes seen,
trunc-normal 0.02, bias 0, other tasks' logits masked in training (a plain head per task, the
argmax over all of them: ``head: plain``); pool, keys and head in one Adam group at
0.03 x batch / 256, constant (the official code's rule). Prompts and keys start U(-1, 1).

Choices, each a hyperparameter:

- ``batchwise_prompt`` (default off): selection per sample, as the paper defines it, in training
  and at test time. On, the official code's vote, in training and at test time as there: the
  whole batch takes the 5 prompts chosen most often in it (``models.prompt_pools.majority``),
  which uses that a test batch comes from one task (a prediction then depends on the other
  samples of its batch).
- ``head: standardized``: the suite's probe-started ``StandardizedHead`` instead (its earlier
  form). ``tune`` tries rates around the official one with the paper's head only (scored with
  task ids it would pick the standardized head, which is not the paper's form).
- Prompts carry no position embedding (the pre-trained table has none for them).
- Without task ids (``--task-agnostic``): the argmax over every class seen (``max_logit``),
  L2P's own setting.
"""

from __future__ import annotations

from models.prompt_pools import L2PPool
from models.prompts import UNPROMPTABLE, attach_shallow_prompts, token_width
from strategies.prompting import PromptPlugin
from strategies.registry import register_strategy
from strategies.storage import FP32, StorageItem, head_only_storage

POOLINGS = ("prompts", "token")


class L2PPlugin(PromptPlugin):
    """L2P's prompt pool in a frozen backbone (module docstring)."""

    def __init__(self, size: int, length: int, top_n: int, pull_weight: float, pooling: str,
                 batchwise: bool = False):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"l2p pooling must be one of {POOLINGS}, got {pooling!r}")
        self.size, self.length, self.top_n = size, length, top_n
        self.pull_weight, self.pooling, self.batchwise = pull_weight, pooling, batchwise

    def create(self, backbone):
        pool = L2PPool(self.size, self.length, self.top_n, token_width(backbone),
                       self.pull_weight, self.batchwise)
        attach_shallow_prompts(backbone, pool, "l2p")
        return [pool]

    def install(self, model):
        """The pool in the backbone; with ``pooling: prompts`` the heads read the mean of the
        prompts' outputs (``MultiTaskViT.head_input``)."""
        super().install(model)
        if self.pooling == "prompts":
            model.head_input = "prompts"


def l2p_shared_storage(backbone, hp: dict) -> list[StorageItem]:
    """The pool (M x L x d) and its keys (M x d), fp32, kept once for all tasks."""
    d = token_width(backbone)
    return [StorageItem("prompt pool", hp["size"] * hp["length"] * d, FP32),
            StorageItem("prompt keys", hp["size"] * d, FP32)]


@register_strategy(
    "l2p",
    hparams={"lr": 0.03, "lr_scaling": "linear", "schedule": "constant", "head": "plain",
             "size": 10, "length": 5, "top_n": 5, "pull_weight": 0.1, "pooling": "prompts",
             "batchwise_prompt": False},
    search_space={"lr": [0.01, 0.03, 0.1]},
    defaults="paper+code",
    storage=head_only_storage,
    shared_storage=l2p_shared_storage,
    trains="a shared pool of 10 prompts (5 tokens) with keys, 5 chosen per sample by the frozen "
           "[CLS] query + a plain head (trunc-normal, not the probe); backbone frozen",
    keeps="head (pool and keys shared)",
    forgets=True,
    paper="Wang et al., CVPR 2022",
    refuses=UNPROMPTABLE,
    task_inference="max_logit",  # features do not depend on the task: one growing head
)
def build_l2p(backbone, hp, settings):
    """The strategy as an ``L2PPlugin`` (an Avalanche plugin)."""
    plugin = L2PPlugin(hp["size"], hp["length"], hp["top_n"], hp["pull_weight"],
                       hp["pooling"], hp["batchwise_prompt"])
    return plugin.template(backbone, settings, hp)
