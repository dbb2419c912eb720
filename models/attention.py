"""The suite's one attention mechanism: timm's attention layers plus hooks on the attention logits.

:class:`AttentionHooks` holds the hooks every attention variant shares; the variants — timm's
``Attention`` (ViT/DeiT), CaiT's ``TalkingHeadAttn`` and ``ClassAttn`` — get subclasses that are
swapped into existing models by ``__class__`` assignment (:func:`make_maskable`), so parameter
names and pretrained checkpoints are unchanged. With no hook active a layer runs timm's own
forward. The hooks:

- **token mask** (``token_mask``: a module returning the current task's mask over the n patch
  tokens; MEAT). Prefix tokens (class, distillation, register) and inserted prompt tokens
  (``models.prompts``) are always kept, and the mask acts on key columns inside the softmax
  of every head:

      Psi_ij = m_j exp(A_ij) / sum_s m_s exp(A_is)

  In training the mask is float (hard samples carrying straight-through gradients; an additive
  log m would give NaN gradients at m = 0). Where it is the same for every query (ViT/DeiT
  attention, CaiT's class attention; not ``keep_diagonal``), the per-key identity

      O_i = sum_j m_j e^{A_ij} v_j / sum_j m_j e^{A_ij} = [P (m * V)]_i / [P m]_i,  P = softmax(A)

  runs it as ONE fused ``scaled_dot_product_attention`` with the mask appended to the values
  as an extra channel, V' = [m * V, m] (:func:`key_masked_attention`): exact output and, by
  autograd through the kernel, exact gradients to q, k, v and m, without the fp32 (B, H, N, N)
  tensors of the explicit form (two kept for backward per layer, more in flight: several GiB at
  DeiT-S batch 256); backward keeps O(N d) per row instead. P runs over masked keys too,
  which cancel in the ratio; as in the explicit form (its row max includes them) kept weights
  underflow only if a masked logit exceeds every kept one by ~87. The division is done in fp32,
  so under bf16 autocast both sums keep the kernel's fp32 accumulation up to one bf16 rounding
  each. Elsewhere (DropKey in self-attention and ``keep_diagonal``: the keep depends on the
  query; attention dropout, see :meth:`AttentionHooks.attend`; CaiT's talking heads and LaViT,
  which mix or reuse the probabilities) the multiplicative form is computed explicitly, with
  the row max subtracted, in fp32. At evaluation (boolean mask, the same for every query)
  ViT/DeiT attention and CaiT's class attention select the kept keys and values once per task
  and run the fused ``scaled_dot_product_attention`` unmasked on them — exactly the masked
  softmax, at plain cost or less; CaiT's talking heads and LaViT use a boolean key mask.
  ``keep_diagonal`` (MEAT's official code): every token always attends to itself,
  m_ij = max(m_j, [i == j]) (masked, not selected).
- **prefix** (``prefix``: a module giving key and value entries put in front of the layer's
  own; prefix-tuning, as DualPrompt and CODA-Prompt use it, ``models.prompts``): the queries are
  the layer's tokens, and the prefix entries count as always-kept keys.
- **DropKey** (``dropkey_rate`` p; Li et al., CVPR 2023): in training only, every
  (sample, head, query, key) logit is dropped with probability p before the softmax, without
  rescaling. Dropping is a keep mask in the same multiplicative softmax (fused in CaiT's class
  attention, whose one query makes any keep per-key), so it composes with token masks (their
  product) and is exact in half precision (no -1e12 constants); a row whose keys are all
  dropped gives a zero output rather than NaN. :func:`set_dropkey` sets the
  layer-wise schedule.

CaiT's talking-heads attention mixes heads by a linear map after the softmax, with a bias, which
would give masked keys weight again: its masked keys are zeroed again after that mixing, so a
masked key contributes nothing (it is exact, not just down-weighted). In CaiT's class-attention
layers only the class token is the query; keys are [class; patches] and the mask acts on the
patches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Attention
from timm.models.cait import ClassAttn, TalkingHeadAttn
from torch import nn

from models import anatomy
from models.transient import TransientState
from vocab import DROPKEY_SCHEDULES


def full_key_mask(token_mask: torch.Tensor, num_prefix: int) -> torch.Tensor:
    """Prepend always-kept prefix tokens to a mask over patch tokens (last dim)."""
    ones = torch.ones(*token_mask.shape[:-1], num_prefix, dtype=token_mask.dtype,
                      device=token_mask.device)
    return torch.cat([ones, token_mask], dim=-1)


def multiplicative_masked_softmax(logits: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Psi = keep * exp(A - max) / sum(keep * exp(A - max)), in fp32; ``keep`` broadcasts.
    A row with nothing kept is all zeros."""
    a = logits.float()
    e = torch.exp(a - a.amax(dim=-1, keepdim=True).detach()) * keep.float()
    return (e / e.sum(dim=-1, keepdim=True).clamp_min(1e-12)).to(logits.dtype)


def key_masked_attention(q, k, v, keep: torch.Tensor, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale) v with key j weighted by keep m_j, the same for every query
    (``keep`` broadcasts as (..., 1, N)), in one fused call: [P (m * V), P m] from the values
    [m * V, m], then their ratio in fp32 (module docstring). q, k and the values are zero-padded
    to the next multiple of 8 above the head dim: the fused kernels take one head dim for all
    three (CPU) and multiples of 8 (CUDA). A row with nothing kept is zero."""
    d = v.shape[-1]
    width = (d + 8) // 8 * 8
    m = keep.to(v.dtype).transpose(-2, -1).expand(*v.shape[:-1], 1)
    # [v, 1] * m: the product's backward keeps [v, 1], not the whole qkv output v is a view of
    values = F.pad(torch.cat([v, torch.ones_like(m)], dim=-1) * m, (0, width - d - 1))
    out = F.scaled_dot_product_attention(F.pad(q, (0, width - d)), F.pad(k, (0, width - d)),
                                         values, scale=scale)
    return (out[..., :d].float() / out[..., d:d + 1].float().clamp_min(1e-12)).to(out.dtype)


class AttentionHooks(TransientState):
    """The hooks shared by every maskable attention class (set per instance after the swap; a
    module-valued hook lives in ``_modules``)."""

    transient = ("_selection",)

    num_prefix_tokens: int = 1
    prompt_tokens: int = 0  # prompt tokens inserted after the prefix tokens (``models.prompts``)
    prefix_keys: int = 0  # key/value entries put in front by a prefix source (``models.prompts``)
    keep_diagonal: bool = False
    dropkey_rate: float = 0.0
    # Whether the layer evaluates a boolean token mask by selecting the kept keys (exact: the
    # mask is the same for every query) instead of masking the logits, so the fused kernel runs
    # unmasked on fewer keys. Layers whose heads mix logits (talking heads) or reuse scores
    # (LaViT) keep the mask.
    selects_keys: bool = False
    _selection: tuple | None = None  # (mask and task, keep mask, kept keys): one eval phase

    def train(self, mode: bool = True):
        self._selection = None
        return super().train(mode)

    def always_kept(self) -> int:
        """Keys before the patches, never masked: prefix-tuning entries, prefix tokens and
        inserted prompts."""
        return self.prefix_keys + self.num_prefix_tokens + self.prompt_tokens

    def with_prefix(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, heads, N, d) with the entries of the layer's prefix source in
        front (prefix-tuning, ``models.prompts``: ``prefix(batch)`` -> (keys, values), each
        (L, width) or (B, L, width), or None); the queries are unchanged."""
        source = self._modules.get("prefix")
        kv = None if source is None else source.prefix(k.shape[0])
        self.prefix_keys = 0 if kv is None else kv[0].shape[-2]
        if kv is None:
            return k, v
        if self.keep_diagonal:
            raise ValueError("keep_diagonal (attend to self) does not combine with prefix "
                             "prompts: queries and keys no longer pair up")
        B, h, _, d = k.shape

        def per_head(p: torch.Tensor) -> torch.Tensor:
            p = p.expand(B, -1, -1) if p.dim() == 2 else p
            return p.reshape(B, -1, h, d).transpose(1, 2).to(k.dtype)

        return torch.cat([per_head(kv[0]), k], dim=2), torch.cat([per_head(kv[1]), v], dim=2)

    def frozen_keys(self, token_mask, n: int, device) -> tuple | None:
        """At evaluation with a boolean token mask: (keep mask (1, 1, 1, n), kept key indices),
        both None when every key is kept — computed once per task. None for a float mask."""
        key = (id(token_mask), getattr(token_mask, "task", None), self.always_kept())
        if self._selection is None or self._selection[0] != key:
            mask = token_mask()
            if mask.dtype != torch.bool:
                return None
            keep = full_key_mask(mask, self.always_kept()).to(device)
            if keep.shape[-1] != n:
                raise ValueError(f"token mask covers {keep.shape[-1]} keys, sequence has {n}")
            everything = bool(keep.all())
            self._selection = (key, None if everything else keep.reshape(1, 1, 1, n),
                               None if everything else keep.nonzero().flatten())
        return self._selection[1:]

    def key_selection(self, n: int, device) -> torch.Tensor | None:
        """The indices of the keys that enter a key-selecting layer at evaluation (None: all);
        a layer compacted for one task (``models.compact``) has them as its ``kept_keys``."""
        if "kept_keys" in self._buffers:
            return self._buffers["kept_keys"]
        token_mask = self._modules.get("token_mask")
        if not self.selects_keys or token_mask is None or self.training or self.keep_diagonal:
            return None
        frozen = self.frozen_keys(token_mask, n, device)
        return None if frozen is None else frozen[1]

    def key_keep(self, n: int, device, square: bool = True) -> torch.Tensor | None:
        """(1, 1, n or 1, n) keep mask over all n keys from the token mask, or None: no mask, a
        boolean mask that keeps every key, or one applied by key selection."""
        token_mask = self._modules.get("token_mask")
        if token_mask is None:
            return None
        if not self.training and not self.keep_diagonal:
            frozen = self.frozen_keys(token_mask, n, device)
            if frozen is not None:
                return None if self.selects_keys else frozen[0]
        keep = full_key_mask(token_mask(), self.always_kept()).to(device)
        if keep.shape[-1] != n:
            raise ValueError(f"token mask covers {keep.shape[-1]} keys, sequence has {n}")
        keep = keep.reshape(1, 1, 1, n)
        if self.keep_diagonal and square:
            eye = torch.eye(n, dtype=torch.bool, device=device).reshape(1, 1, n, n)
            keep = torch.maximum(keep, eye.to(keep.dtype))
        return keep

    def attention_keep(self, logits_shape, device, square: bool = True) -> torch.Tensor | None:
        """The token mask combined with this step's DropKey mask (training only), or None."""
        keep = self.key_keep(logits_shape[-1], device, square)
        if not (self.training and self.dropkey_rate > 0):
            return keep
        drop = torch.rand(logits_shape, device=device) >= self.dropkey_rate
        return drop if keep is None else keep.to(torch.float32) * drop

    def attend(self, q, k, v, keep: torch.Tensor | None) -> torch.Tensor:
        """softmax(q k^T * scale) v with keys kept by ``keep``, through the fused kernel: plain
        or with a boolean mask at evaluation (only the selected keys enter,
        :meth:`key_selection`), by :func:`key_masked_attention` for a keep that is the same for
        every query (training token masks). The explicit multiplicative softmax remains for a
        query-dependent keep (DropKey, ``keep_diagonal``) and for attention dropout in training:
        the kernel's dropout would hit the mask channel too, renormalizing over the surviving
        keys instead of dropping attention weights (no strategy here uses attention dropout)."""
        kept = self.key_selection(k.shape[-2], k.device)
        if kept is not None:
            k, v = k.index_select(-2, kept), v.index_select(-2, kept)
        if keep is None or keep.dtype == torch.bool and not self.training:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=keep)
        dropout = self.training and self.attn_drop.p > 0
        if keep.shape[-2] == 1 and not dropout:
            return key_masked_attention(q, k, v, keep, self.scale)
        attn = multiplicative_masked_softmax((q * self.scale) @ k.transpose(-2, -1), keep)
        return self.attn_drop(attn) @ v

    def hooks_active(self) -> bool:
        return ("token_mask" in self._modules or "prefix" in self._modules
                or "kept_keys" in self._buffers or (self.training and self.dropkey_rate > 0))


class MaskableAttention(AttentionHooks, Attention):
    """timm ``Attention`` (ViT, DeiT) with the shared hooks."""

    selects_keys = True

    def forward(self, x, attn_mask=None, is_causal=False):
        if not self.hooks_active():
            return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
        if attn_mask is not None or is_causal:
            raise NotImplementedError("token masks do not combine with attn_mask/is_causal")
        B, N, _ = x.shape
        gate = self.gate(x).sigmoid() if getattr(self, "gate", None) is not None else None
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        k, v = self.with_prefix(k, v)
        x = self.attend(q, k, v, self.attention_keep((B, self.num_heads, N, k.shape[-2]),
                                                     x.device))
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        x = self.norm(x)
        if gate is not None:
            x = x * gate
        return self.proj_drop(self.proj(x))


class MaskableTalkingHeadAttn(AttentionHooks, TalkingHeadAttn):
    """CaiT's talking-heads self-attention (patch tokens only) with the shared hooks; masked keys
    are zeroed again after the post-softmax head mixing."""

    num_prefix_tokens = 0

    def forward(self, x):
        if not self.hooks_active():
            return super().forward(x)
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        k, v = self.with_prefix(k, v)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        attn = self.proj_l(attn.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        keep = self.attention_keep(attn.shape, x.device)  # None: every key kept
        attn = attn.softmax(-1) if keep is None else multiplicative_masked_softmax(attn, keep)
        attn = self.proj_w(attn.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        if keep is not None:
            attn = attn * keep.to(attn.dtype)
        x = (self.attn_drop(attn) @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class MaskableClassAttn(AttentionHooks, ClassAttn):
    """CaiT's class attention (query: the class token; keys: class + patches) with the hooks."""

    selects_keys = True

    def forward(self, x):
        if not self.hooks_active():
            return super().forward(x)
        B, N, C = x.shape
        h = self.num_heads
        q = self.q(x[:, :1]).reshape(B, 1, h, C // h).permute(0, 2, 1, 3)
        k = self.k(x).reshape(B, N, h, C // h).permute(0, 2, 1, 3)
        v = self.v(x).reshape(B, N, h, C // h).permute(0, 2, 1, 3)
        x_cls = self.attend(q, k, v, self.attention_keep((B, h, 1, N), x.device, square=False))
        return self.proj_drop(self.proj(x_cls.transpose(1, 2).reshape(B, 1, C)))


MASKABLE = {Attention: MaskableAttention, TalkingHeadAttn: MaskableTalkingHeadAttn,
            ClassAttn: MaskableClassAttn}


def make_maskable(model: nn.Module) -> list[AttentionHooks]:
    """Swap every supported timm attention layer in ``model`` to its maskable class (in place;
    for models not built by ``models.factory.create_backbone``, which builds them maskable);
    return all maskable layers in forward order."""
    for m in model.modules():
        cls = MASKABLE.get(type(m))
        if cls is not None:
            m.__class__ = cls
    set_prefix_tokens(model)
    return [m for m in model.modules() if isinstance(m, AttentionHooks)]


def set_prefix_tokens(model: nn.Module) -> None:
    """Prefix tokens of the maskable self-attention layers: the model's own count (class,
    distillation, register tokens). CaiT's self-attention stage has none and its
    class-attention layers the class token (their classes say so)."""
    prefix = anatomy.prefix_tokens(model)
    for m in model.modules():
        if type(m) is MaskableAttention:
            m.num_prefix_tokens = prefix


def maskable_attention(model: nn.Module) -> list[AttentionHooks]:
    """Each transformer block's attention layer (``models.anatomy.blocks`` order), made
    maskable: entry i belongs to block i. A block whose attention class has no maskable version
    is an error, so per-layer masks can never shift onto other blocks."""
    make_maskable(model)
    layers = []
    for i, block in enumerate(anatomy.blocks(model)):
        if not isinstance(block.attn, AttentionHooks):
            known = ", ".join(c.__name__ for c in MASKABLE)
            raise TypeError(f"block {i}: attention class {type(block.attn).__name__} has no "
                            f"maskable version (known: {known}; add one in models/attention.py)")
        layers.append(block.attn)
    return layers


def dropkey_rates(p: float, n_layers: int, schedule: str = "linear") -> list[float]:
    """Per-layer DropKey ratios: ``linear`` from p at the first layer to 0 at the last (the paper
    has the ratio decrease with depth without public endpoints), or ``constant`` p."""
    if schedule not in DROPKEY_SCHEDULES:
        raise ValueError(f"dropkey schedule must be one of {DROPKEY_SCHEDULES}, got {schedule!r}")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropkey ratio must be in [0, 1), got {p}")
    if schedule == "constant" or n_layers == 1:
        return [p] * n_layers
    return [p * (1 - i / (n_layers - 1)) for i in range(n_layers)]


def set_dropkey(model: nn.Module, p: float, schedule: str = "linear") -> list[float]:
    """Enable DropKey on every attention layer of ``model`` (forward order); return the rates."""
    layers = make_maskable(model)
    rates = dropkey_rates(p, len(layers), schedule)
    for layer, rate in zip(layers, rates, strict=True):
        layer.dropkey_rate = rate
    return rates
