"""MEAT's training attention through the fused kernel (``models.attention.key_masked_attention``)
against the explicit multiplicative masked softmax."""

import pytest
import torch

import models.attention as attention
from models.attention import key_masked_attention, make_maskable, multiplicative_masked_softmax
from models.factory import create_backbone
from models.masks import GumbelRule, TaskMask


def explicit(q, k, v, keep, scale):
    return multiplicative_masked_softmax((q * scale) @ k.transpose(-2, -1), keep) @ v


def _grads(fn, q, k, v, keep):
    """fn's output and the gradients of a fixed random projection of it to q, k, v, keep."""
    out = fn(q, k, v, keep, q.shape[-1] ** -0.5)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    return out, torch.autograd.grad((out * w).sum(), (q, k, v, keep))


@pytest.mark.parametrize("keep_shape", [(1, 1, 1, 17), (2, 3, 1, 17)])
def test_fused_key_mask_matches_explicit_output_and_gradients(keep_shape):
    q, k, v = (torch.randn(2, 3, 17, 32, requires_grad=True) for _ in range(3))
    keep = (torch.rand(keep_shape) > 0.3).float()
    keep[..., 0] = 1
    keep.requires_grad_()
    out, grads = _grads(key_masked_attention, q, k, v, keep)
    ref, ref_grads = _grads(explicit, q, k, v, keep)
    assert (out - ref).abs().max() < 1e-5
    for g, r in zip(grads, ref_grads, strict=True):
        assert (g - r).abs().max() < 1e-5


def test_fused_masked_key_gets_zero_weight_and_empty_row_is_zero():
    q, k, v = (torch.randn(1, 2, 9, 16) for _ in range(3))
    keep = torch.ones(1, 1, 1, 9)
    keep[..., [2, 5]] = 0
    out = key_masked_attention(q, k, v, keep, 0.25)
    v2, k2 = v.clone(), k.clone()
    v2[..., [2, 5], :] += 100 * torch.randn(1, 2, 2, 16)
    assert torch.equal(key_masked_attention(q, k, v2, keep, 0.25), out)
    # a masked key's logit still enters softmax(A), only to cancel in the ratio (as the explicit
    # form's row max does, it must stay within exp's range of the kept logits)
    k2[..., [2, 5], :] += 3 * torch.randn(1, 2, 2, 16)
    assert torch.allclose(key_masked_attention(q, k2, v, keep, 0.25), out, atol=1e-6)
    assert torch.equal(key_masked_attention(q, k, v, torch.zeros(1, 1, 1, 9), 0.25),
                       torch.zeros_like(out))


def test_fused_key_mask_under_bf16_autocast_is_as_accurate_as_explicit():
    q, k, v = (torch.randn(2, 3, 17, 32) for _ in range(3))
    keep = (torch.rand(1, 1, 1, 17) > 0.3).float()
    exact = explicit(q.double(), k.double(), v.double(), keep.double(), 32 ** -0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fused = key_masked_attention(q, k, v, keep, 32 ** -0.5)
        reference = explicit(q, k, v, keep, 32 ** -0.5)
    assert fused.dtype == torch.bfloat16
    assert (fused.double() - exact).abs().max() <= 1.5 * (reference.double() - exact).abs().max()


class _Spy:
    """Wraps a function and records the arguments of its calls."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, *args):
        self.calls.append(args)
        return self.fn(*args)


LAYERS = {  # backbone, index of the maskable layer, its input (B, N, C)
    "vit": ("vit_micro", 0, (2, 17, 96)),
    "cait_class_attention": ("cait_micro", -1, (2, 17, 96)),
}


def _masked_layer(case):
    name, index, shape = LAYERS[case]
    attn = make_maskable(create_backbone(name))[index].train()
    mask = TaskMask((16,), GumbelRule(init="paper", gamma=2.0))
    mask.add_task(0)
    mask.set_task(0)
    attn.token_mask = mask
    return attn, torch.randn(shape, requires_grad=True)


def _layer_grads(attn, x):
    """Output, gradients to the input and the mask logits, under a fixed Gumbel sample."""
    torch.manual_seed(3)
    out = attn(x)
    assert attn.token_mask.last_sample.min() == 0  # some keys are dropped
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    logits = attn.token_mask.trainable["0"]
    return out, torch.autograd.grad((out * w).sum(), (x, logits))


@pytest.mark.parametrize("case", list(LAYERS))
def test_training_token_masks_take_the_fused_path_and_match_explicit(case, monkeypatch):
    attn, x = _masked_layer(case)
    fused = _Spy(key_masked_attention)
    monkeypatch.setattr(attention, "key_masked_attention", fused)
    out, (gx, gm) = _layer_grads(attn, x)
    assert len(fused.calls) == 1
    monkeypatch.setattr(attention, "key_masked_attention", explicit)
    ref, (rx, rm) = _layer_grads(attn, x)
    assert (out - ref).abs().max() < 1e-5
    assert (gx - rx).abs().max() < 1e-5 and (gm - rm).abs().max() < 1e-5
    assert gm.abs().max() > 0


@pytest.mark.parametrize("variant", ["dropkey", "keep_diagonal", "attn_drop"])
def test_query_dependent_keeps_and_attention_dropout_use_the_explicit_path(variant, monkeypatch):
    attn, x = _masked_layer("vit")
    if variant == "dropkey":
        attn.dropkey_rate = 0.3
    elif variant == "keep_diagonal":
        attn.keep_diagonal = True
    else:
        attn.attn_drop.p = 0.1
    softmax = _Spy(multiplicative_masked_softmax)
    monkeypatch.setattr(attention, "multiplicative_masked_softmax", softmax)
    monkeypatch.setattr(attention, "key_masked_attention", None)  # would fail if called
    torch.manual_seed(3)
    out = attn(x)
    ((_, keep),) = softmax.calls
    assert keep.shape[-2] == (1 if variant == "attn_drop" else 17)
    if variant != "attn_drop":  # (the dropout draw is not reproduced here)
        B, N, _ = x.shape
        qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        ref = explicit(*qkv.unbind(0), keep, attn.scale).transpose(1, 2).reshape(B, N, -1)
        assert torch.allclose(out, attn.proj(ref), atol=1e-6)
