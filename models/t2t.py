"""T2T-ViT (Yuan et al., ICCV 2021), the MEAT paper's third backbone, built from timm parts.

timm has no T2T-ViT. Official code: yitu-opensource/T2T-ViT (``models/t2t_vit.py``,
``token_performer.py``, ``transformer_block.py``). A T2T-ViT is a ViT whose patch embedding is
the Tokens-to-Token module:

    soft split  Unfold(7, stride 4, pad 2)  -> Performer token layer (dim in*49 -> token_dim)
    soft split  Unfold(3, stride 2, pad 1)  -> Performer token layer (token_dim*9 -> token_dim)
    soft split  Unfold(3, stride 2, pad 1)  -> Linear(token_dim*9 -> embed_dim)

(224 px -> 56x56 -> 28x28 -> 14x14 = 196 tokens), then a class token, a sinusoidal position
embedding and ordinary pre-norm ViT blocks without qkv bias. Here :class:`T2TViT` is timm's
``VisionTransformer`` with :class:`TokensToToken` as its ``embed_layer``, so every mechanism of
the suite (maskable attention, token and FFN masks, adapters, anatomy) treats its blocks as a
ViT's; the T2T module's own token layers are left as they are: MEAT's token masks act on the 196
patch tokens of every ViT block (the Performer layers have no softmax over keys to mask, and
their overlapping soft-split windows all flow into those 196 tokens).

Choices and quirks, as the official code has them:

- Token layer: ``Token_performer`` (``t2t_vit_*``; the ``t2t_vit_t_*`` variants use a
  transformer), one head, kernel ratio 0.5, positive random features exp(w·x - |x|²/2) / sqrt(m)
  with a fixed orthogonal w (a parameter that is never trained), value skip connection, dropout
  0.1 on its projection and MLP while training (``token_dropout``).
- Attention scale: head_dim ** -0.5, timm's and the official block's default
  (``self.scale = qk_scale or head_dim ** -0.5``). The official factories pass ``qk_scale =
  embed_dim ** -0.5`` only under ``pretrained=True``, whose download URL is empty; the released
  checkpoints were trained and validated through ``main.py`` with ``pretrained=False``, so they
  load as they are (:func:`checkpoint_filter_fn` renames, it does not rescale).
- Position embedding: the official sinusoid table, a fixed buffer (the official parameter has
  ``requires_grad=False``), so no strategy trains it. At another image size the table is made for
  that size instead of resampled.
- Dropout 0.1 in the Performer layers is active only where those layers train: a frozen
  backbone runs its frozen layers as at evaluation (``models.anatomy.freeze_regularizers``).
- The token grid follows the soft splits' arithmetic, so any image size works (28 px -> 2x2).
"""

from __future__ import annotations

import math
from functools import partial

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

SPLITS = ((7, 4, 2), (3, 2, 1), (3, 2, 1))  # (kernel, stride, padding) of the three soft splits
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # the official checkpoints' inputs


class TokenPerformer(nn.Module):
    """The official ``Token_performer``: a one-head Performer layer from ``dim`` to ``emb``."""

    def __init__(self, dim: int, emb: int, kernel_ratio: float = 0.5, dropout: float = 0.1):
        super().__init__()
        self.emb = emb
        self.kqv = nn.Linear(dim, 3 * emb)
        self.dp = nn.Dropout(dropout)
        self.proj = nn.Linear(emb, emb)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(emb)
        self.mlp = nn.Sequential(nn.Linear(emb, emb), nn.GELU(), nn.Linear(emb, emb),
                                 nn.Dropout(dropout))
        self.m = int(emb * kernel_ratio)
        w = nn.init.orthogonal_(torch.empty(self.m, emb)) * math.sqrt(self.m)
        self.w = nn.Parameter(w, requires_grad=False)
        self.epsilon = 1e-8

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Positive random features exp(w·x - |x|² / 2) / sqrt(m), (B, T, m), in float32."""
        x = x.float()
        return torch.exp(x @ self.w.float().T - (x * x).sum(-1, keepdim=True) / 2) / math.sqrt(
            self.m)

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        k, q, v = torch.split(self.kqv(x), self.emb, dim=-1)
        kp, qp = self.features(k), self.features(q)
        normalizer = qp @ kp.sum(dim=1, keepdim=True).transpose(1, 2)  # (B, T, 1)
        y = (qp @ (kp.transpose(1, 2) @ v.float())) / (normalizer + self.epsilon)
        return v + self.dp(self.proj(y.to(v.dtype)))  # the values as the skip connection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def grid_side(img_size: int) -> int:
    """Tokens per side after the three soft splits."""
    side = img_size
    for kernel, stride, pad in SPLITS:
        side = (side + 2 * pad - kernel) // stride + 1
    return side


class TokensToToken(nn.Module):
    """The Tokens-to-Token module as a timm ``embed_layer``: images -> (B, tokens, embed_dim)."""

    def __init__(self, img_size: int = 224, patch_size=None, in_chans: int = 3,
                 embed_dim: int = 256, token_dim: int = 64, token_dropout: float = 0.1, **_):
        super().__init__()
        self.img_size = (img_size, img_size)
        side = grid_side(img_size)
        self.grid_size = (side, side)
        self.num_patches = side * side
        self.soft_split0, self.soft_split1, self.soft_split2 = (
            nn.Unfold(kernel_size=k, stride=s, padding=p) for k, s, p in SPLITS)
        self.attention1 = TokenPerformer(in_chans * 7 * 7, token_dim, dropout=token_dropout)
        self.attention2 = TokenPerformer(token_dim * 3 * 3, token_dim, dropout=token_dropout)
        self.project = nn.Linear(token_dim * 3 * 3, embed_dim)

    @staticmethod
    def _as_image(tokens: torch.Tensor) -> torch.Tensor:
        b, n, c = tokens.shape
        side = math.isqrt(n)
        return tokens.transpose(1, 2).reshape(b, c, side, side)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention1(self.soft_split0(x).transpose(1, 2))
        x = self.attention2(self.soft_split1(self._as_image(x)).transpose(1, 2))
        return self.project(self.soft_split2(self._as_image(x)).transpose(1, 2))


def sinusoid_table(n_position: int, dim: int) -> torch.Tensor:
    """The official position table, (1, n_position, dim): sin on even, cos on odd channels of
    position / 10000^(2 (j // 2) / dim)."""
    pos = torch.arange(n_position, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.where(j.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()[None]


class T2TViT(VisionTransformer):
    """A timm ``VisionTransformer`` whose patch embedding is :class:`TokensToToken`."""

    def __init__(self, img_size: int = 224, token_dim: int = 64, embed_dim: int = 256,
                 token_dropout: float = 0.1, **kwargs):
        kwargs.setdefault("qkv_bias", False)
        super().__init__(img_size=img_size, embed_dim=embed_dim,
                         embed_layer=partial(TokensToToken, token_dim=token_dim,
                                             token_dropout=token_dropout), **kwargs)
        table = sinusoid_table(self.pos_embed.shape[1], embed_dim)
        del self.pos_embed
        self.register_buffer("pos_embed", table)


def checkpoint_filter_fn(state: dict, model: T2TViT) -> dict:
    """An official T2T-ViT checkpoint in this layout: ``tokens_to_token.*`` -> ``patch_embed.*``,
    the weights unchanged (module docstring: the attention scale is the same), the sinusoid table
    remade when the image size differs. Checkpoints already in this layout pass as they are."""
    if not any(k.startswith("tokens_to_token.") for k in state):
        return state
    out = {k.replace("tokens_to_token.", "patch_embed.", 1): v for k, v in state.items()}
    if out["pos_embed"].shape != model.pos_embed.shape:
        out["pos_embed"] = sinusoid_table(model.pos_embed.shape[1], model.pos_embed.shape[2])
    return out
