"""Where things are inside the suite's backbones: blocks, attention layers, FFN linears, tokens.

Strategies address backbone parts through these functions only, so a new backbone family needs
its layout described here once, not in every strategy.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


def blocks(backbone: nn.Module) -> list[nn.Module]:
    """Transformer blocks in forward order (CaiT: self-attention blocks, then class-attention
    blocks; LaViT: the blocks of every stage)."""
    if hasattr(backbone, "anatomy_blocks"):
        return list(backbone.anatomy_blocks())
    if hasattr(backbone, "blocks"):
        return [*backbone.blocks, *(getattr(backbone, "blocks_token_only", None) or [])]
    raise TypeError(f"{type(backbone).__name__}: unknown block layout")


def ffn_pair(block: nn.Module) -> tuple[nn.Linear, nn.Linear]:
    """(fc1, fc2) of a block's MLP."""
    return block.mlp.fc1, block.mlp.fc2


@dataclass(frozen=True)
class AttentionProjections:
    """A block's attention Linears: ``inputs`` read the block's normalized input (a fused
    ``qkv``; or separate ``q``, ``k``, ``v``; LaViT's less-attention layers: ``v`` only),
    ``values`` is (the input Linear holding the value channels, their slice of its outputs) and
    ``output`` the projection reading the value channels (``proj``)."""

    inputs: tuple[nn.Linear, ...]
    values: tuple[nn.Linear, slice]
    output: nn.Linear


def attention_projections(block: nn.Module) -> AttentionProjections:
    attn = block.attn
    dim = attn.proj.in_features
    if hasattr(attn, "qkv"):
        return AttentionProjections((attn.qkv,), (attn.qkv, slice(2 * dim, 3 * dim)), attn.proj)
    inputs = tuple(getattr(attn, n) for n in ("q", "k", "v") if hasattr(attn, n))
    return AttentionProjections(inputs, (attn.v, slice(None)), attn.proj)


def ffn_linears(backbone: nn.Module) -> list[nn.Linear]:
    """fc1 and fc2 of every block's MLP, in forward order."""
    return [fc for b in blocks(backbone) for fc in ffn_pair(b)]


def block_linears(backbone: nn.Module) -> list[nn.Linear]:
    """Every Linear inside the transformer blocks (qkv, proj, fc1, fc2, ...), in module order."""
    return [m for b in blocks(backbone) for m in b.modules() if isinstance(m, nn.Linear)]


def num_patches(backbone: nn.Module) -> int:
    return int(backbone.patch_embed.num_patches)


def token_counts(backbone: nn.Module) -> list[int]:
    """Per block, the non-prefix tokens its attention reads as keys (the size of a token mask):
    the patch count, or the layer's own grid in a hierarchical backbone (LaViT)."""
    n = num_patches(backbone)
    return [int(getattr(b.attn, "n_tokens", n)) for b in blocks(backbone)]


def prefix_tokens(backbone: nn.Module) -> int:
    """Tokens before the patches in the self-attention blocks' sequence (class, distillation,
    register tokens): timm's ``num_prefix_tokens``, 1 for a model without it."""
    return int(getattr(backbone, "num_prefix_tokens", 1))


def patch_projection(backbone: nn.Module) -> nn.Module:
    """The patch embedding's last projection: a convolution, or T2T-ViT's ``project`` Linear."""
    embed = backbone.patch_embed
    return embed.proj if hasattr(embed, "proj") else embed.project
