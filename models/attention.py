"""The suite's one attention mechanism: timm's ``Attention`` plus a per-key keep-mask hook.

:class:`MaskableAttention` is swapped into existing timm models by ``__class__`` assignment
(:func:`make_maskable`), so parameter names — and pretrained checkpoints — are unchanged. With no
hook set it runs timm's own forward. With ``token_mask`` set (a module returning the current
task's mask over the n patch tokens), prefix tokens (class, distillation, register) are always
kept and the mask acts on key columns inside the softmax of every head:

    Psi_ij = m_j exp(A_ij) / sum_s m_s exp(A_is)

- training (float mask carrying straight-through gradients): this multiplicative form, computed
  with the row max subtracted in fp32 (an additive log m would give NaN gradients at m = 0);
- evaluation (boolean mask): the same result as an additive 0/-inf key mask passed to
  ``scaled_dot_product_attention``, so the fused kernel is used.

``keep_diagonal`` (MEAT's official code): every token always attends to itself,
m_ij = max(m_j, [i == j]).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Attention
from torch import nn


def full_key_mask(token_mask: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """Prepend always-kept prefix tokens to a mask over patch tokens (last dim)."""
    ones = torch.ones(*token_mask.shape[:-1], num_prefix, dtype=token_mask.dtype,
                      device=token_mask.device)
    return torch.cat([ones, token_mask], dim=-1)


def multiplicative_masked_softmax(logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Psi = keep * exp(A - max) / sum(keep * exp(A - max)), in fp32; ``keep`` broadcasts."""
    a = logits.float()
    e = torch.exp(a - a.amax(dim=-1, keepdim=True).detach()) * keep.float()
    return (e / e.sum(dim=-1, keepdim=True).clamp_min(1e-12)).to(logits.dtype)


class MaskableAttention(Attention):
    """timm ``Attention`` with an optional per-key token mask (see module docstring)."""

    # hooks are set per instance after the class swap; a module-valued hook lives in _modules
    num_prefix_tokens: int = 1
    keep_diagonal: bool = False

    def key_keep(self, n: int, device) -> torch.Tensor | None:
        """(1, 1, n or 1, n) keep mask over all keys, or None when no mask is set."""
        token_mask = self._modules.get("token_mask")
        if token_mask is None:
            return None
        keep = full_key_mask(token_mask(), self.num_prefix_tokens).to(device)
        if keep.shape[-1] != n:
            raise ValueError(f"token mask covers {keep.shape[-1]} keys, sequence has {n}")
        keep = keep.reshape(1, 1, 1, n)
        if self.keep_diagonal:
            eye = torch.eye(n, dtype=torch.bool, device=device).reshape(1, 1, n, n)
            keep = torch.maximum(keep, eye.to(keep.dtype))
        return keep

    def forward(self, x, attn_mask=None, is_causal=False):
        keep = self.key_keep(x.shape[1], x.device)
        if keep is None:
            return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
        if attn_mask is not None or is_causal:
            raise NotImplementedError("token masks do not combine with attn_mask/is_causal")
        B, N, _ = x.shape
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if keep.dtype == torch.bool:  # evaluation: fused kernel with a boolean key mask
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        else:
            attn = multiplicative_masked_softmax((q * self.scale) @ k.transpose(-2, -1), keep)
            x = self.attn_drop(attn) @ v
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        x = self.norm(x)
        if gate is not None:
            x = x * gate
        return self.proj_drop(self.proj(x))


def make_maskable(model: nn.Module) -> list[MaskableAttention]:
    """Swap every timm ``Attention`` in ``model`` to :class:`MaskableAttention` (in place)."""
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    out = []
    for m in model.modules():
        if type(m) is Attention:
            m.__class__ = MaskableAttention
            m.num_prefix_tokens = prefix
        if isinstance(m, MaskableAttention):
            out.append(m)
    return out
