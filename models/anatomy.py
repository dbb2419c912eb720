"""Where things are inside the suite's backbones: blocks, attention layers, FFN linears, tokens.

Strategies address backbone parts through these functions only, so a new backbone family needs
its layout described here once, not in every strategy.
"""

from __future__ import annotations

from torch import nn


def blocks(backbone: nn.Module) -> list[nn.Module]:
    """Transformer blocks in forward order."""
    if hasattr(backbone, "blocks"):
        return list(backbone.blocks)
    raise TypeError(f"{type(backbone).__name__}: unknown block layout")


def ffn_pair(block: nn.Module) -> tuple[nn.Linear, nn.Linear]:
    """(fc1, fc2) of a block's MLP."""
    return block.mlp.fc1, block.mlp.fc2


def ffn_linears(backbone: nn.Module) -> list[nn.Linear]:
    """fc1 and fc2 of every block's MLP, in forward order."""
    return [fc for b in blocks(backbone) for fc in ffn_pair(b)]


def block_linears(backbone: nn.Module) -> list[nn.Linear]:
    """Every Linear inside the transformer blocks (qkv, proj, fc1, fc2, ...), in module order."""
    return [m for b in blocks(backbone) for m in b.modules() if isinstance(m, nn.Linear)]


def num_patches(backbone: nn.Module) -> int:
    return int(backbone.patch_embed.num_patches)


def num_prefix_tokens(backbone: nn.Module) -> int:
    return int(getattr(backbone, "num_prefix_tokens", 1))


def patch_projection(backbone: nn.Module) -> nn.Conv2d:
    """The patch-embedding convolution."""
    return backbone.patch_embed.proj
