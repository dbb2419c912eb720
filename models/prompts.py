"""Prompts in a frozen ViT: tokens inserted into its sequence, prefixes of its attention keys and
values, and the query that prompt-pool methods select them by.

**Deep prompt tokens** (VPT-deep, Jia et al., 2022): before block l its prompt tokens P_l
(length L, width d) are inserted right after the sequence's prefix tokens (class, distillation,
register; none in CaiT's self-attention stage):

    [x_prefix, x_patches] -> [x_prefix, P_l, x_patches] -> block l -> drop the L prompt outputs,

so block l+1 gets fresh prompts (VPT-deep: "replacing the previous layer's prompt outputs") and
everything outside the blocks (position embedding, pooling, CaiT's class attention) sees the
sequence it always sees. A prompt source returns (L, d) — one set for the whole batch — or
(B, L, d): per-sample prompts, for a pool whose selection depends on the input.

**Shallow prompt tokens** (prompt tuning, as L2P uses it): inserted once before the first block,
they pass through every block (in CaiT's class-attention stage as keys) and are dropped after
the final norm, where their outputs are kept for pooling (L2P's head reads their mean:
``MultiTaskViT(head_input="prompts")``).

Inserted prompts are prefix tokens for the attention hooks (``AttentionHooks.prompt_tokens``): a
token mask (MEAT) covers the patches only and every prompt is always kept. They carry no
position embedding (the pre-trained table has none for them).

**Prefixes** (prefix-tuning, Li & Liang 2021, as DualPrompt and CODA-Prompt use it): a layer's
prefix (:class:`LayerPrefix`) gives L key and L value entries put in front of the attention's
own (``AttentionHooks.with_prefix``); the sequence itself is unchanged.

**The query** (:func:`query_features`): L2P, DualPrompt and CODA-Prompt choose or weight their
prompts by q, the frozen backbone's pre-logits features of the input without any prompt. The
model (``models.multitask.MultiTaskViT``) computes it before each forward that needs it — one
extra forward with every prompt source off (:func:`prompts_off`), without gradients, in
evaluation mode, as the methods' code does, under the caller's autocast (the similarities are
fp32) — and hands it to every :class:`QueryTaker` (``set_query(q)``, after ``set_task(t)``), so
every caller of the model (its heads, the probe, the template's calibration) gets the prompts of
its own inputs.

Tokens enter and leave through forward hooks on the blocks (shallow ones leave at the final
norm), each given its source as an argument; they only move tokens (as adapters and LoRA, hooks
keep parameter names and checkpoints unchanged) and never run a forward. Where prompts go:
blocks with token self-attention over the flat sequence (ViT/DeiT, T2T-ViT's blocks, CaiT's
self-attention stage; CaiT's class-attention blocks get no deep prompts or prefixes: their only
query is the class token). LaViT is refused: its less-attention layers map the N x N scores
through learned N x N transforms tied to the token grid, so neither the sequence nor the keys
can grow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


class PromptSource:
    """Mixin of the modules prompts enter a backbone from: a token source (``prompts(x)`` ->
    (L, d), (B, L, d) or None) or an attention layer's :class:`LayerPrefix`. ``enabled`` is the
    model's switch: off (:func:`prompts_off`) for the forward that computes the query, where the
    insertion code takes nothing from the source, so the backbone computes its own function."""

    enabled: bool = True


class QueryTaker:
    """Mixin of the modules whose prompts are chosen or weighted by the query. Before every
    forward, after ``set_task``, the model calls ``set_query(q)``: q (B, d) is the query of the
    forward's input (:func:`query_features`), or None when no query taker of the backbone
    ``needs_query()`` for this forward (then none is computed)."""

    def needs_query(self) -> bool:
        return True

    def set_query(self, q: torch.Tensor | None) -> None:
        raise NotImplementedError


class PromptTokens(nn.Module):
    """L learned tokens of width d, initialized as VPT's code: uniform in +-sqrt(6 / (3 p^2 + d))
    for p x p patches (Xavier-uniform over the patch embedding's fan-in and the width)."""

    def __init__(self, length: int, dim: int, bound: float):
        super().__init__()
        self.tokens = nn.Parameter(torch.empty(length, dim).uniform_(-bound, bound))

    def forward(self) -> torch.Tensor:
        return self.tokens


class TaskPrompts(PromptSource, PerTaskModules):
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


def token_width(backbone: nn.Module) -> int:
    """The width of the tokens that prompts join (the promptable blocks' attention width)."""
    return promptable_blocks(backbone, "prompts")[0].attn.proj.in_features


def attach_prompts(block: nn.Module, source: nn.Module) -> None:
    """VPT-deep: ``source`` (a :class:`PromptSource` with ``prompts(x)``) becomes the block's
    submodule ``prompts``; its tokens are inserted before the block and dropped after it."""
    block.prompts = source
    block.register_forward_pre_hook(partial(insert_prompts, source=source, span=(block.attn,)))
    block.register_forward_hook(partial(drop_prompts, source=source))


def insert_prompts(block: nn.Module, args: tuple, *, source: nn.Module,
                   span: tuple[nn.Module, ...]) -> tuple:
    """Forward pre-hook: insert ``source``'s prompts (none while it is off) after the prefix
    tokens of the block's input; the attention layers of ``span`` (those the prompts pass) count
    them as always-kept keys, and ``source.inserted`` is their number."""
    x, *rest = args
    prompts = source.prompts(x) if source.enabled else None
    n = 0 if prompts is None else prompts.shape[-2]
    source.inserted = n
    for attn in span:
        attn.prompt_tokens = n
    if prompts is None:
        return args
    if prompts.dim() == 2:
        prompts = prompts.expand(x.shape[0], -1, -1)
    p = block.attn.num_prefix_tokens
    return (torch.cat([x[:, :p], prompts.to(x.dtype), x[:, p:]], dim=1), *rest)


def drop_prompts(block: nn.Module, args: tuple, output: torch.Tensor, *,
                 source: nn.Module) -> torch.Tensor:
    """Forward hook: drop the prompt outputs, so the sequence leaves the block as it came."""
    n = source.inserted
    if not n:
        return output
    p = block.attn.num_prefix_tokens
    return torch.cat([output[:, :p], output[:, p + n:]], dim=1)


def attach_shallow_prompts(backbone: nn.Module, source: nn.Module, method: str) -> None:
    """Prompt tuning: ``source`` (a :class:`PromptSource`, the backbone's submodule
    ``shallow_prompts``) gives tokens that enter before the first promptable block, pass every
    block and leave after the backbone's final norm (``backbone.norm``), behind the model's
    prefix tokens; their normalized outputs are kept as ``source.outputs`` (B, L, d)."""
    first = promptable_blocks(backbone, method)[0]
    backbone.shallow_prompts = source
    span = tuple(b.attn for b in anatomy.blocks(backbone))
    first.register_forward_pre_hook(partial(insert_prompts, source=source, span=span))
    backbone.norm.register_forward_hook(partial(
        drop_prompts_after_norm, source=source, position=anatomy.prefix_tokens(backbone)))


def drop_prompts_after_norm(norm: nn.Module, args: tuple, output: torch.Tensor, *,
                            source: nn.Module, position: int) -> torch.Tensor:
    """Forward hook of the final norm: keep the outputs of ``source``'s prompts (at
    ``position``) for pooling and drop them."""
    n = source.inserted
    if not n:
        return output
    source.outputs = output[:, position:position + n]
    return torch.cat([output[:, :position], output[:, position + n:]], dim=1)


class LayerPrefix(PromptSource, nn.Module):
    """An attention layer's ``prefix`` (``AttentionHooks.with_prefix``): ``give()`` -> the
    layer's (keys, values), each (L, d) or (B, L, d), or None; nothing while it is off. It holds
    no parameters: ``give`` is the ``layer_prefix`` method, bound to the layer, of the module that
    owns every layer's prefixes (``models.prompt_pools``; a submodule elsewhere in the backbone,
    so not one of this module's)."""

    def __init__(self, give: Callable[[], tuple[torch.Tensor, torch.Tensor] | None]):
        super().__init__()
        self.give = give

    def prefix(self, batch: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.give() if self.enabled else None


def attach_prefixes(blocks: list[nn.Module], owner: nn.Module) -> None:
    """Block i's attention gets layer i of ``owner``'s prefixes (``owner.layer_prefix(i)``)."""
    for i, block in enumerate(blocks):
        block.attn.prefix = LayerPrefix(partial(owner.layer_prefix, i))


def prefix_blocks(backbone: nn.Module, layers: list[int], method: str) -> list[nn.Module]:
    """The promptable blocks at ``layers`` (0-based) that exist: a shallower backbone gets the
    ones it has; a ValueError if none does."""
    blocks = promptable_blocks(backbone, method)
    chosen = [blocks[i] for i in layers if 0 <= i < len(blocks)]
    if not chosen:
        raise ValueError(f"{method}: none of the prompt layers {layers} exists in "
                         f"{type(backbone).__name__}'s {len(blocks)} promptable blocks "
                         f"(valid: 0..{len(blocks) - 1})")
    return chosen


@contextmanager
def set_for_block(modules: list[nn.Module], name: str, value) -> Iterator[None]:
    """Attribute ``name`` of every module set to ``value`` for the block, each one's own value
    restored afterwards."""
    saved = [(m, getattr(m, name)) for m in modules]
    for m, _ in saved:
        setattr(m, name, value)
    try:
        yield
    finally:
        for m, old in saved:
            setattr(m, name, old)


def prompts_off(backbone: nn.Module):
    """Every :class:`PromptSource` in ``backbone`` off for the block (the backbone computes its
    own function)."""
    return set_for_block([m for m in backbone.modules() if isinstance(m, PromptSource)],
                         "enabled", False)


def evaluation_mode(module: nn.Module):
    """``module`` and everything in it in evaluation mode for the block (no dropout, DropKey or
    training-time masks). The flags are set directly: a layer's ``train`` override would drop its
    evaluation caches on every batch."""
    return set_for_block(list(module.modules()), "training", False)


def query_features(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The query of ``x`` (B, d): the backbone's pre-logits features with every prompt source off
    (:func:`prompts_off`), without gradient, in evaluation mode (the pre-trained model's own [CLS]
    features, as the prompt-pool methods' query: their official query model is a frozen copy in
    evaluation mode), under whatever autocast the caller has on (in a bf16 run a bf16 forward:
    an fp32 one would cost a full fp32 forward per batch). Only the similarities that choose
    from it are fp32 (``models.prompt_pools.cosine``): the bf16 query changes the choice of well
    under 1% of the samples (``benchmarks.measure.querycheck``; ``docs/paper.md``, "bf16 prompt
    queries")."""
    with prompts_off(backbone), torch.no_grad(), evaluation_mode(backbone):
        return backbone.forward_head(backbone.forward_features(x), pre_logits=True)


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
