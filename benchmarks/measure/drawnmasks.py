"""Masks drawn at the keep rates of trained ones, for the speed measurements, and the kept
fractions a model's masks have.

A few synthetic steps do not move masks (every entry starts kept), so the mask strategies are
measured with masks drawn at the keep rates of trained ones (seeded, an exact count per mask):
MEAT's token masks keep ``keep_tokens`` = 90% of the patch tokens of every layer (its
drop-control loss targets lambda = 0.9), MEAT's FFN masks and Piggyback's weight masks
``keep_weights`` = 97% of their weights (a few % dropped); HAT's gates are left as trained (their
N(0, 1) embeddings switch about half the units of a new task off). The draw is set on the
measured task's logits/scores before its training steps (kept entries at +2 gamma, dropped at
-2 gamma for MEAT's Gumbel logits, so a training sample differs from the draw with probability
sigmoid(-2 gamma) = 3e-4; Piggyback's scores at init and mirrored below the threshold) and again
after them, before they are binarized: the timed steps, the evaluation and the compaction all see
it. :func:`kept_percent` reports the kept fractions (tokens over every token mask; weights over
every masked or gated layer).
"""

from __future__ import annotations

import torch
from avalanche.core import SupervisedPlugin
from torch import nn

KEEP_TOKENS, KEEP_WEIGHTS = 0.9, 0.97  # kept fractions of drawn masks (module docstring)
MASK_SEED = 0


def task_masks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """("tokens", token mask) of every attention layer and ("weights", weight mask) of every
    masked layer of ``model``, in module order."""
    from models.attention import AttentionHooks
    from models.masked_linear import MaskedWeight

    hooks = [("tokens", AttentionHooks, "token_mask"), ("weights", MaskedWeight, "weight_mask")]
    return [(kind, getattr(m, attr)) for m in model.modules() for kind, cls, attr in hooks
            if isinstance(m, cls) and getattr(m, attr, None) is not None]


def kept_and_dropped_values(rule) -> tuple[float, float] | None:
    """The trainable values of a kept and a dropped entry under a mask rule (module docstring);
    None for a rule whose values are left as trained (HAT's gates)."""
    from models.masks import GumbelRule, ThresholdRule

    if isinstance(rule, GumbelRule):
        return 2 * rule.gamma, -2 * rule.gamma
    if isinstance(rule, ThresholdRule):
        return rule.init, 2 * rule.threshold - rule.init
    return None


class DrawnMasks(SupervisedPlugin):
    """Sets the training task's token and weight masks to seeded draws keeping ``keep_tokens``
    and ``keep_weights`` of their entries (round(keep x n) per mask), before its training steps
    and again after them (before the masks are binarized, so training moves nothing)."""

    def __init__(self, keep_tokens: float, keep_weights: float, seed: int = MASK_SEED):
        super().__init__()
        self.keep = {"tokens": keep_tokens, "weights": keep_weights}
        self.seed = seed

    @torch.no_grad()
    def draw(self, strategy) -> None:
        task = str(strategy.experience.task_label)
        g = torch.Generator().manual_seed(self.seed)
        for kind, mask in task_masks(strategy.model):
            values = kept_and_dropped_values(mask.rule)
            if values is None or task not in mask.trainable:
                continue
            n = mask.trainable[task].numel()
            dropped = torch.randperm(n, generator=g)[:n - round(self.keep[kind] * n)]
            drawn = torch.full((n,), values[0])
            drawn[dropped] = values[1]
            mask.trainable[task].copy_(drawn.reshape(mask.shape))

    def before_training_epoch(self, strategy, **kwargs):
        self.draw(strategy)

    def after_training_epoch(self, strategy, **kwargs):
        self.draw(strategy)


def kept_percent(model: nn.Module, task: int) -> dict[str, float]:
    """% of the patch tokens kept by ``task``'s token masks, and of the weights kept by its
    weight masks and output gates (a gate keeps or drops a whole row), over every masked layer."""
    from models.masked_linear import MaskedWeight

    tokens = [mask.binary(task) for kind, mask in task_masks(model) if kind == "tokens"]
    weights = []
    for layer in model.modules():
        if isinstance(layer, MaskedWeight):
            keep = torch.ones(layer.weight.shape, dtype=torch.bool, device=layer.weight.device)
            if getattr(layer, "weight_mask", None) is not None:
                keep &= layer.weight_mask.binary(task)
            if getattr(layer, "output_gate", None) is not None:
                keep &= layer.output_gate.binary(task).reshape(-1, *[1] * (keep.dim() - 1))
            weights.append(keep.flatten())
    return {f"kept_{kind}_pct": 100 * float(torch.cat(masks).float().mean())
            for kind, masks in (("tokens", tokens), ("weights", weights)) if masks}
