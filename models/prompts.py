"""Prompt tokens inserted into a ViT's token sequence around its blocks (VPT, Jia et al., 2022).

Deep prompting: before block l its prompt tokens P_l (length L, width d) are inserted right after
the sequence's prefix tokens (class, distillation, register; none in CaiT's self-attention stage):

    [x_prefix, x_patches] -> [x_prefix, P_l, x_patches] -> block l -> drop the L prompt outputs,

so block l+1 gets fresh prompts (VPT-deep: "replacing the previous layer's prompt outputs") and
everything outside the blocks (position embedding, pooling, CaiT's class attention) sees the
sequence it always sees. Prompts are applied by forward hooks on the blocks (as adapters and
LoRA are), so parameter names and checkpoints are unchanged.

Inserted prompts are prefix tokens for the attention hooks (``AttentionHooks.prompt_tokens``): a
token mask (MEAT) covers the patches only and every prompt is always kept.

A block's prompt source returns (L, d) — one set for the whole batch — or (B, L, d): per-sample
prompts, for a prompt pool whose selection depends on the input.

Where prompts go: every block with token self-attention over the flat sequence (ViT/DeiT,
T2T-ViT's blocks, CaiT's self-attention stage). CaiT's class-attention blocks are not prompted
(their only query is the class token; VPT's prompts act through the patch stage). LaViT is
refused: its less-attention layers map the N x N scores through learned N x N transforms tied to
the token grid, so the sequence length cannot change.
"""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from models import anatomy
from models.attention import MaskableAttention, MaskableTalkingHeadAttn, make_maskable
from models.tasks import PerTaskModules

PROMPTABLE = (MaskableAttention, MaskableTalkingHeadAttn)  # self-attention over the sequence
# backbone families without promptable blocks, and why (``strategies.registry`` ``refuses``)
UNPROMPTABLE = {"lavit": "LaViT's less-attention layers map N x N scores through learned N x N "
                         "transforms tied to the token grid: prompt tokens cannot be inserted"}


class PromptTokens(nn.Module):
    """L learned tokens of width d, initialized as VPT's code: uniform in +-sqrt(6 / (3 p^2 + d))
    for p x p patches (Xavier-uniform over the patch embedding's fan-in and the width)."""

    def __init__(self, length: int, dim: int, bound: float):
        super().__init__()
        self.tokens = nn.Parameter(torch.empty(length, dim).uniform_(-bound, bound))

    def forward(self) -> torch.Tensor:
        return self.tokens


class TaskPrompts(PerTaskModules):
    """One :class:`PromptTokens` per task for one block; ``prompts(x)`` is the current task's
    (None for a task it has none for)."""

    def __init__(self, length: int, dim: int, bound: float):
        super().__init__(partial(PromptTokens, length, dim, bound), kind="prompt")

    def prompts(self, x: torch.Tensor) -> torch.Tensor | None:
        current = self.current()
        return None if current is None else current()


def prompt_init_bound(backbone: nn.Module) -> float:
    """VPT's init bound sqrt(6 / (3 p^2 + d)); p^2 is the patch embedding's area (T2T-ViT: its
    projection's fan-in / 3)."""
    proj = anatomy.patch_projection(backbone)
    area = (math.prod(proj.kernel_size) if isinstance(proj, nn.Conv2d)
            else proj.in_features // 3)
    return math.sqrt(6.0 / (3 * area + backbone.num_features))


def promptable_blocks(backbone: nn.Module, method: str) -> list[nn.Module]:
    """The blocks that take prompt tokens (module docstring), or a ValueError naming why none."""
    make_maskable(backbone)
    blocks = [b for b in anatomy.blocks(backbone) if isinstance(b.attn, PROMPTABLE)]
    if not blocks:
        kinds = sorted({type(b.attn).__name__ for b in anatomy.blocks(backbone)})
        raise ValueError(
            f"{method} needs blocks with self-attention over a token sequence (ViT/DeiT, T2T-ViT, "
            f"CaiT); {type(backbone).__name__} has {', '.join(kinds)}: its attention maps N x N "
            "scores with learned N x N transforms, so prompt tokens cannot be inserted")
    return blocks


def attach_prompts(block: nn.Module, source: nn.Module) -> None:
    """Make ``source`` (a module with ``prompts(x) -> (L, d) | (B, L, d) | None``) the prompt
    source of ``block`` (``block.prompts``)."""
    block.prompts = source
    block.register_forward_pre_hook(insert_prompts)
    block.register_forward_hook(drop_prompts)


def insert_prompts(block: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: insert the block's prompts after the prefix tokens of its input."""
    x, *rest = args
    prompts = block.prompts.prompts(x)
    block.attn.prompt_tokens = 0 if prompts is None else prompts.shape[-2]
    if prompts is None:
        return args
    if prompts.dim() == 2:
        prompts = prompts.expand(x.shape[0], -1, -1)
    p = block.attn.num_prefix_tokens
    return (torch.cat([x[:, :p], prompts.to(x.dtype), x[:, p:]], dim=1), *rest)


def drop_prompts(block: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    """Forward hook: drop the prompt outputs, so the sequence leaves the block as it came."""
    n = block.attn.prompt_tokens
    if not n:
        return output
    p = block.attn.num_prefix_tokens
    return torch.cat([output[:, :p], output[:, p + n:]], dim=1)


def add_task_prompts(backbone: nn.Module, length: int) -> list[TaskPrompts]:
    """VPT-deep: a :class:`TaskPrompts` of ``length`` tokens on every promptable block."""
    bound = prompt_init_bound(backbone)
    out = []
    for block in promptable_blocks(backbone, "vpt"):
        prompts = TaskPrompts(length, block.attn.proj.in_features, bound)
        attach_prompts(block, prompts)
        out.append(prompts)
    return out


def prompt_params(backbone: nn.Module, length: int) -> int:
    """Entries of one task's deep prompts: L x d per promptable block."""
    return sum(length * b.attn.proj.in_features for b in promptable_blocks(backbone, "vpt"))
