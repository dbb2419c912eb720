"""MEAT — Meta-attention for ViT-backed continual learning (Xue et al., CVPR 2022).

The pre-trained ViT never changes. Each task learns, through hard Gumbel-softmax logits
(``models.masks.TaskMask``), binary masks that are kept bit-packed once the task is done:

- token masks: per masked layer one bit per patch token, shared by all heads, acting on key
  columns inside the softmax (``models.attention.MaskableAttention``); prefix tokens are always
  kept. Layers: every layer by default (paper; the official code masks blocks 3, 6, 9 — pass
  ``layers=[2, 5, 8]``). ``keep_diagonal`` reproduces the code's always-attend-to-self variant;
- FFN masks: one bit per weight of fc1 and fc2 in every block (biases unmasked), through
  ``models.masked_linear.MaskedLinear``.

Loss: L = L_ce + alpha * (1/L) sum_l (lambda - (1/n) sum_i m_l^i)^2 over the token masks of the
current forward (alpha = 2, lambda = 0.9). Initialization and tau: the official code's (every
entry starts kept, gamma = 4, tau = 1) by default; the paper's U(-gamma, gamma) as
``init="paper"``.

Optimizer (``strategies.schedules``): AdamW, one rate per parameter kind, each given as the
paper's *base* rate and scaled by the run's batch, lr = base x batch / 1024 (``lr_scaling``):
heads 5e-4 and masks 0.1 (the paper's values). MEAT trains only masks, of two kinds at two
rates, so it has no ``lr``: its masks are the skeleton's extra groups
(``strategies.skeleton.Skeleton``) at the paper's ``token_mask_lr`` and ``ffn_mask_lr``. The masks'
base is a two-logit rate; the one-logit form trains at ``one_logit_lr`` = 2 x the scaled rate,
the same speed. Heads: weight
decay 0.05 (official code), masks none. Schedule: warm-up over the first sixth of the task, then
cosine (official code: 5 of 30 epochs). At the paper's budgets (hundreds to thousands of steps at
batch 256) a logit starting at 2 gamma = 8 can cross 0; at another budget the registered rates
are scaled to the paper's learning-rate mass per task (``PAPER_BUDGET``,
``strategies.schedules.budget_factor``); a run whose masks still do not move says so
(``models.masks.mask_movement``).
"""

from __future__ import annotations

import torch

from models import anatomy
from models.attention import maskable_attention
from models.masked_linear import make_masked
from models.masks import GumbelRule, TaskMask
from strategies.masking import TaskMaskPlugin
from strategies.registry import register_strategy
from strategies.schedules import PaperBudget, one_logit_lr
from strategies.skeleton import ExtraGroup
from strategies.storage import StorageItem, head_items

# 30 epochs at batch 256 over the six datasets' 128,934 training images (CUB 5,994, Cars 8,144,
# Aircraft 6,667, CIFAR-100 50,000, Sketches 16,000, WikiArt 42,129): 21,489 a task on average
PAPER_BUDGET = PaperBudget(epochs=30, images=21_489, batch=256,
                           rates=("head_lr", "token_mask_lr", "ffn_mask_lr"))


def drop_control_loss(token_masks: list[torch.Tensor], lam: float) -> torch.Tensor:
    """(1/L) sum_l (lambda - mean_i m_l^i)^2: keeps about a fraction lambda of tokens per layer."""
    return torch.stack([(lam - m.mean()) ** 2 for m in token_masks]).mean()


def masked_layer_ids(n_layers: int, layers) -> list[int]:
    ids = list(range(n_layers)) if layers in (None, "all") else [int(i) for i in layers]
    bad = [i for i in ids if not 0 <= i < n_layers]
    if bad:
        raise ValueError(f"masked layers {bad} out of range 0..{n_layers - 1}")
    return ids


class MEATPlugin(TaskMaskPlugin):
    """MEAT on a ``models.multitask.MultiTaskViT``: one set of mask logits per task, bit-packed
    after the task; the backbone is frozen.

    ``install(model)`` puts the masks into the model once; ``template`` gives the strategy, its
    masks trained as :meth:`extra_groups`.
    """

    def __init__(self, *, alpha: float = 2.0, lam: float = 0.9, gamma: float = 4.0,
                 tau: float = 1.0, init: str = "code", layers=None, keep_diagonal: bool = False,
                 token_masks: bool = True, ffn_masks: bool = True):
        super().__init__()
        self.alpha, self.lam = alpha, lam
        self.mask_rule = GumbelRule(gamma=gamma, tau=tau, init=init)
        self.layers, self.keep_diagonal = layers, keep_diagonal
        self.use_token_masks, self.use_ffn_masks = token_masks, ffn_masks
        self.token_masks: list[TaskMask] = []
        self.ffn_masks: list[TaskMask] = []

    def create_masks(self, backbone) -> list[TaskMask]:
        device = next(backbone.parameters()).device
        if self.use_token_masks:
            attns = maskable_attention(backbone)  # attns[i]: block i's
            counts = anatomy.token_counts(backbone)
            for i in masked_layer_ids(len(attns), self.layers):
                attns[i].token_mask = TaskMask((counts[i],), self.mask_rule,
                                               kind="token").to(device)
                attns[i].keep_diagonal = self.keep_diagonal
                self.token_masks.append(attns[i].token_mask)
        if self.use_ffn_masks:
            for fc in anatomy.ffn_linears(backbone):
                make_masked(fc).weight_mask = TaskMask(tuple(fc.weight.shape), self.mask_rule,
                                                       kind="ffn").to(device)
                self.ffn_masks.append(fc.weight_mask)
        return [*self.token_masks, *self.ffn_masks]

    def extra_groups(self, model, task: int) -> list[ExtraGroup]:
        """Token masks at ``token_mask_lr`` and FFN masks at ``ffn_mask_lr``, both through the
        one-logit rule (module docstring)."""
        return [ExtraGroup("token_mask_lr", self.trainable(self.token_masks), one_logit_lr),
                ExtraGroup("ffn_mask_lr", self.trainable(self.ffn_masks), one_logit_lr)]

    def before_backward(self, strategy, **kwargs):
        samples = [m.last_sample for m in self.token_masks if m.last_sample is not None]
        if samples and self.alpha:
            strategy.loss = strategy.loss + self.alpha * drop_control_loss(samples, self.lam)
        for m in self.token_masks:
            m.last_sample = None


def meat_storage(backbone, n_classes: int, hp: dict) -> list[StorageItem]:
    """Per task: token-mask bits, FFN-mask bits (1 bit each) and the fp32 head."""
    counts = anatomy.token_counts(backbone)
    token_bits = sum(counts[i] for i in masked_layer_ids(len(counts), hp["layers"]))
    ffn_bits = sum(fc.weight.numel() for fc in anatomy.ffn_linears(backbone))
    token_bits *= bool(hp["token_masks"])
    ffn_bits *= bool(hp["ffn_masks"])
    return [StorageItem("token masks", token_bits, 1), StorageItem("ffn masks", ffn_bits, 1),
            *head_items(backbone.num_features, n_classes)]


@register_strategy(
    "meat",
    hparams={"head_lr": 5e-4, "token_mask_lr": 0.1, "ffn_mask_lr": 0.1, "lr_scaling": "linear",
             "head_weight_decay": 0.05, "schedule": "warmup_cosine", "alpha": 2.0, "lam": 0.9,
             "gamma": 4.0, "tau": 1.0, "init": "code", "layers": "all", "keep_diagonal": False,
             "token_masks": True, "ffn_masks": True},
    defaults="paper+code",
    search_space={"ffn_mask_lr": [0.1, 1.6, 6.4], "token_mask_lr": [0.1, 1.6, 6.4, 25.6],
                  "head_lr": [5e-4, 8e-3, 3.2e-2], "tau": [1.0, 4.0], "alpha": [1.0, 2.0],
                  "lam": [0.8, 0.9]},
    storage=meat_storage,
    trains="per-task binary token masks (attention) and FFN weight masks + head; backbone frozen",
    keeps="mask bits + head",
    forgets=False,
    mask_kinds=("token", "ffn"),
    paper="Xue et al., CVPR 2022",
    paper_budget=PAPER_BUDGET,
)
def build_meat(backbone, hp, settings):
    plugin = MEATPlugin(alpha=hp["alpha"], lam=hp["lam"], gamma=hp["gamma"], tau=hp["tau"],
                        init=hp["init"], layers=hp["layers"], keep_diagonal=hp["keep_diagonal"],
                        token_masks=hp["token_masks"], ffn_masks=hp["ffn_masks"])
    return plugin.template(backbone, settings, hp)
