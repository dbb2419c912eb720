"""Per-task compacted inference: a backbone specialised to one task of a mask or gate strategy.

:func:`compact_for_task` returns a copy of a ``MultiTaskViT``'s backbone for task ``t`` whose
outputs equal the masked dense model's for ``t`` (up to float summation order) and that does
less work:

- every masked or gated Linear becomes a plain ``nn.Linear`` holding its effective weights
  (W * M, gated rows and biases), so no hook runs per forward;
- FFN hidden units are removed where the task's masks make them useless. Unit j of
  ``fc2(act(fc1 x))`` is *dead* if column j of fc2's effective weight is all zero (it reaches
  nothing), and *constant* if row j of fc1's effective weight is all zero (it outputs act(b1_j)
  for every input; its contribution W2[:, j] act(b1_j) is added to fc2's bias). HAT's gated-off
  fc1 units are both; per-weight masks (MEAT, Piggyback) rarely empty a whole row or column;
- where a token mask drops a key for every query (MEAT's masks are shared by all queries;
  not with ``keep_diagonal``), that layer's keys and values are computed as before and then
  only the kept ones enter the attention (``kept_keys``): attention costs n x n_kept instead of
  n x n. Layers of ViT/DeiT (``MaskableAttention``) and CaiT's class attention; CaiT's
  talking-heads and LaViT's layers keep their dense masked path (their head mixing and score
  reuse need the full key set).

Only evaluation: the copy is in eval mode and has no trainable masks.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from models import anatomy
from models.attention import AttentionHooks, MaskableAttention, MaskableClassAttn, full_key_mask
from models.masked_linear import MaskedWeight

KEY_COMPACTABLE = (MaskableAttention, MaskableClassAttn)


def plain_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                      device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    return layer


def fold_masked_linears(module: nn.Module) -> None:
    """Replace every masked Linear under ``module`` by a plain Linear with its effective
    (current-task) weights."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, MaskedWeight) and isinstance(child, nn.Linear):
                setattr(parent, name, plain_linear(*child.effective_params()))


def compact_ffn(mlp: nn.Module) -> int:
    """Remove the dead and constant hidden units of ``mlp`` (plain fc1, fc2); returns how many
    were removed."""
    if not isinstance(getattr(mlp, "norm", nn.Identity()), nn.Identity):
        return 0  # a norm between act and fc2 mixes units: nothing is removable exactly
    fc1, fc2 = mlp.fc1, mlp.fc2
    w1, b1, w2, b2 = fc1.weight, fc1.bias, fc2.weight, fc2.bias
    constant = (w1 == 0).all(dim=1)
    dead = (w2 == 0).all(dim=0)
    keep = ~(constant | dead)
    removed = int((~keep).sum())
    if removed == 0:
        return 0
    bias2 = b2.clone() if b2 is not None else torch.zeros(w2.shape[0], device=w2.device)
    if b1 is not None:
        live_constant = constant & ~dead
        bias2 += w2[:, live_constant] @ mlp.act(b1[live_constant])
    mlp.fc1 = plain_linear(w1[keep], b1[keep] if b1 is not None else None)
    mlp.fc2 = plain_linear(w2[:, keep], bias2)
    return removed


def compact_keys(attn: AttentionHooks) -> int:
    """Replace ``attn``'s token mask by the indices of its kept keys; returns the dropped count."""
    token_mask = attn._modules.get("token_mask")
    if token_mask is None or attn.keep_diagonal or not isinstance(attn, KEY_COMPACTABLE):
        return 0
    keep = full_key_mask(token_mask().bool(), attn.num_prefix_tokens)
    del attn.token_mask
    if not keep.all():  # all kept: the layer is the plain (fused) attention again
        attn.register_buffer("kept_keys", keep.nonzero().flatten(), persistent=False)
    return int((~keep).sum())


@torch.no_grad()
def compact_for_task(model: nn.Module, task: int) -> tuple[nn.Module, dict]:
    """(compacted backbone for ``task``, counts of removed FFN units and dropped keys).

    ``model`` is a ``models.multitask.MultiTaskViT``; ``compacted(x)`` equals
    ``model.features(x, task)`` in eval mode."""
    backbone = copy.deepcopy(model.backbone_for(task)).eval()
    for m in model.task_modules(backbone):
        m.set_task(task)
    attentions = [m for m in backbone.modules() if isinstance(m, AttentionHooks)]
    dropped_keys = sum(compact_keys(a) for a in attentions)
    fold_masked_linears(backbone)
    removed_units = sum(compact_ffn(block.mlp) for block in anatomy.blocks(backbone))
    return backbone, {"ffn_units_removed": removed_units, "keys_dropped": dropped_keys}
