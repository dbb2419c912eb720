"""LaViT — the Less-Attention Vision Transformer (Zhang, Liu, Lin, He, CVPR 2024), the suite's
own implementation (no official code is public; not in timm).

Each stage runs on a token grid; its first ``l_va`` layers are **vanilla attention** (standard
multi-head self-attention whose pre-softmax scores A = q k^T / sqrt(d) are passed on), every later
layer is a **less-attention** layer: it computes no q k^T and gets its scores from the previous
layer's through two learned N x N transforms,

    A_l = Psi(Theta(A_{l-1})^T)^T = W_psi^T A_{l-1} W_theta,

(Theta mixes keys, Psi mixes queries), then Z = softmax(A_l) V_l with its own values. Between
stages, 2 x 2 patch merging (a stride-2 convolution) quarters the token count; the previous
stage's last scores are downsampled to the new grid and added as a residual to the next stage's
first vanilla scores. Features: LayerNorm + mean over tokens (no class token).

Choices where the paper's details are not public (each a constructor argument):
- ``l_va`` per stage (default: 1 of 2 layers in the micro config, 2 of 6 in the tiny one);
- Theta and Psi are shared by the heads of a layer, act on pre-softmax scores, and start as the
  identity, so a fresh less-attention layer reuses the previous scores unchanged;
- score downsampling (the paper's summary: depthwise conv + conv): 2 x 2 average pooling over
  the query and the key grid, then a learned linear map across heads (previous -> next stage's
  head count), zero-initialized so the residual starts at nothing;
- the **diagonality-preserving loss** on each less-attention layer's probabilities P:
  mean |P - P^T| (symmetry) + mean_i (sum_{j != i} P_ij - P_ii) (each token's attention to itself
  should dominate the rest; minimizing it raises P_ii), times ``dp_weight`` = 0.1, averaged over
  the less-attention layers. It is computed in training forwards and collected by
  ``pop_auxiliary_loss()``; ``strategies.common.AuxiliaryLossPlugin`` adds it to every
  strategy's loss (one hook for all strategies).

Attention layers go through the suite's attention hooks (``models.attention.AttentionHooks``), so
MEAT's token masks (a mask over the layer's own N tokens; no prefix tokens) and DropKey act in
vanilla and less-attention layers alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

from models.attention import AttentionHooks, multiplicative_masked_softmax


@dataclass(frozen=True)
class Stage:
    depth: int
    dim: int
    num_heads: int
    l_va: int  # vanilla-attention layers at the start of the stage


def diagonality_loss(p: torch.Tensor) -> torch.Tensor:
    """mean |P - P^T| + mean_i (sum_{j != i} P_ij - P_ii) over (batch, head, query)."""
    diag = torch.diagonal(p, dim1=-2, dim2=-1)
    symmetry = (p - p.transpose(-2, -1)).abs().sum(-1).mean()
    dominance = (p.sum(-1) - 2 * diag).mean()
    return symmetry + dominance


class LaViTAttention(AttentionHooks, nn.Module):
    """Vanilla (``vanilla=True``: q, k, v) or less-attention (v and the N x N transforms)."""

    num_prefix_tokens = 0
    transient = (*AttentionHooks.transient, "dp_loss")
    dp_loss: torch.Tensor | None = None  # the diagonality-preserving loss of the last forward

    def __init__(self, dim: int, num_heads: int, n_tokens: int, vanilla: bool):
        super().__init__()
        self.num_heads, self.head_dim, self.n_tokens = num_heads, dim // num_heads, n_tokens
        self.scale = self.head_dim ** -0.5
        self.vanilla = vanilla
        if vanilla:
            self.qkv = nn.Linear(dim, 3 * dim)
        else:
            self.v = nn.Linear(dim, dim)
            self.theta = nn.Linear(n_tokens, n_tokens, bias=False)
            self.psi = nn.Linear(n_tokens, n_tokens, bias=False)
            nn.init.eye_(self.theta.weight)
            nn.init.eye_(self.psi.weight)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, prev_scores: torch.Tensor | None):
        """(output, pre-softmax scores passed to the next layer). ``prev_scores``: for a vanilla
        layer the residual from the previous stage (or None), for a less-attention layer the
        previous layer's scores."""
        B, N, C = x.shape
        h, d = self.num_heads, self.head_dim
        if self.vanilla:
            q, k, v = self.qkv(x).reshape(B, N, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
            scores = (q * self.scale) @ k.transpose(-2, -1)
            if prev_scores is not None:
                scores = scores + prev_scores
        else:
            v = self.v(x).reshape(B, N, h, d).transpose(1, 2)
            # W_psi^T A W_theta: theta mixes the key axis, psi the query axis. Inputs are made
            # contiguous: on strided inputs the BLAS kernel's rounding varied between identical
            # calls, breaking bit-identical re-evaluation of earlier tasks.
            scores = self.theta(prev_scores.contiguous())
            scores = self.psi(scores.transpose(-2, -1).contiguous()).transpose(-2, -1)
        keep = self.attention_keep(scores.shape, x.device)
        p = scores.softmax(-1) if keep is None else multiplicative_masked_softmax(scores, keep)
        self.dp_loss = diagonality_loss(p) if self.training and not self.vanilla else None
        out = (p @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(out), scores


class LaViTBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, n_tokens: int, vanilla: bool,
                 mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = LaViTAttention(dim, num_heads, n_tokens, vanilla)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, prev_scores):
        a, scores = self.attn(self.norm1(x), prev_scores)
        x = x + a
        return x + self.mlp(self.norm2(x)), scores


class ScoreDownsample(nn.Module):
    """(B, H, N, N) scores on an s x s grid -> (B, H', N/4, N/4): 2 x 2 average pooling of the
    key grid and of the query grid, then a zero-initialized linear map across heads.

    The head map is a broadcast multiply-and-sum, not a BLAS call: on a 2- or 3-wide axis the
    BLAS kernel's rounding depended on memory alignment (1e-13 differences between identical
    calls), which would break the bit-identical evaluation of earlier tasks."""

    def __init__(self, heads_in: int, heads_out: int):
        super().__init__()
        self.head_mix = nn.Parameter(torch.zeros(heads_out, heads_in))

    def forward(self, scores: torch.Tensor, side: int) -> torch.Tensor:
        B, H, N, _ = scores.shape
        n = N // 4
        a = F.avg_pool2d(scores.reshape(B * H * N, 1, side, side), 2)  # keys
        a = a.reshape(B * H, N, n).transpose(1, 2).reshape(B * H * n, 1, side, side)
        a = F.avg_pool2d(a, 2).reshape(B * H, n, n).transpose(1, 2)  # queries
        a = a.reshape(B, 1, H, n, n)
        return (a * self.head_mix[None, :, :, None, None]).sum(2)


class PatchMerge(nn.Module):
    """2 x 2 patch merging on an s x s token grid: stride-2 convolution, dim_in -> dim_out."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.reduce = nn.Conv2d(dim_in, dim_out, kernel_size=2, stride=2)
        self.norm = nn.LayerNorm(dim_out)

    def forward(self, x: torch.Tensor, side: int) -> torch.Tensor:
        B, N, C = x.shape
        x = self.reduce(x.transpose(1, 2).reshape(B, C, side, side))
        return self.norm(x.flatten(2).transpose(1, 2))


class PatchEmbed(nn.Module):
    def __init__(self, img_size: int, patch_size: int, in_chans: int, dim: int):
        super().__init__()
        self.grid = img_size // patch_size
        self.num_patches = self.grid ** 2
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class LaViT(nn.Module):
    """Less-Attention ViT returning pooled features (``num_classes=0``), like a timm backbone."""

    num_prefix_tokens = 0

    def __init__(self, *, img_size: int = 28, patch_size: int = 7, in_chans: int = 1,
                 stages: tuple[Stage, ...] = (Stage(2, 64, 2, 1), Stage(2, 96, 3, 1)),
                 dp_weight: float = 0.1, num_classes: int = 0):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"patch size {patch_size} does not divide image size {img_size}")
        side = img_size // patch_size
        if side % 2 ** (len(stages) - 1):
            raise ValueError(f"a {side}x{side} token grid cannot be halved "
                             f"{len(stages) - 1} times")
        self.dp_weight = dp_weight
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, stages[0].dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, side * side, stages[0].dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.sides, self.stages = [], nn.ModuleList()
        self.merges, self.downsamples = nn.ModuleList(), nn.ModuleList()
        for i, st in enumerate(stages):
            if not 1 <= st.l_va <= st.depth:
                raise ValueError(f"stage {i}: l_va must be in 1..{st.depth}, got {st.l_va}")
            if i:
                side //= 2
                self.merges.append(PatchMerge(stages[i - 1].dim, st.dim))
                self.downsamples.append(ScoreDownsample(stages[i - 1].num_heads, st.num_heads))
            self.sides.append(side)
            self.stages.append(nn.ModuleList(
                LaViTBlock(st.dim, st.num_heads, side * side, vanilla=j < st.l_va)
                for j in range(st.depth)))
        self.norm = nn.LayerNorm(stages[-1].dim)
        self.num_features = stages[-1].dim
        self.head = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def anatomy_blocks(self) -> list[LaViTBlock]:
        return [b for stage in self.stages for b in stage]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x) + self.pos_embed
        scores = None  # pre-softmax scores handed from layer to layer
        for i, stage in enumerate(self.stages):
            if i:
                x = self.merges[i - 1](x, self.sides[i - 1])
                scores = self.downsamples[i - 1](scores, self.sides[i - 1])
            for j, block in enumerate(stage):
                if block.attn.vanilla and not (j == 0 and i > 0):
                    scores = None  # fresh scores; only a stage's first layer gets the residual
                x, scores = block(x, scores)
        return self.norm(x).mean(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def pop_auxiliary_loss(self) -> torch.Tensor | None:
        """dp_weight x the mean diagonality-preserving loss of the last training forward."""
        losses = [b.attn.dp_loss for b in self.anatomy_blocks() if b.attn.dp_loss is not None]
        for b in self.anatomy_blocks():
            b.attn.dp_loss = None
        return self.dp_weight * torch.stack(losses).mean() if losses else None
