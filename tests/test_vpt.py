"""VPT-deep (models/prompts.py, strategies/vpt.py): where prompts go, how they meet token masks,
their bill, and the backbones that refuse them."""

import pytest
import torch
from conftest import FixedMask

from benchmarks.suitefile import load_suite
from benchmarks.suites import expand
from models.factory import create_backbone
from models.prompts import add_task_prompts, prompt_params, promptable_blocks
from strategies import get_strategy
from strategies.registry import resolve_hparams


def prompted_nano(length=3):
    torch.manual_seed(0)
    backbone = create_backbone("vit_nano").eval()
    prompts = add_task_prompts(backbone, length)
    for p in prompts:
        p.add_task(0)
        p.set_task(0)
    return backbone, prompts


def test_prompts_enter_every_block_after_the_class_token_and_leave_after_it():
    backbone, prompts = prompted_nano(length=3)
    seen = []
    for block in backbone.blocks:
        block.attn.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        prompted = backbone.forward_features(x)
    assert seen == [1 + 3 + 16] * len(backbone.blocks)  # class, 3 prompts, 16 patches
    assert prompted.shape[1] == 1 + 16  # the sequence leaves the blocks as it came
    for p in prompts:
        p.set_task(1)  # a task without prompts: the frozen backbone, untouched
    seen.clear()
    with torch.no_grad():
        plain = backbone.forward_features(x)
    assert seen == [17] * len(backbone.blocks) and not torch.equal(plain, prompted)


def test_a_token_mask_never_masks_prompts_and_a_masked_patch_gets_no_attention():
    backbone, prompts = prompted_nano(length=3)
    block = backbone.blocks[0]
    m = torch.ones(16, dtype=torch.bool)
    m[5] = False
    block.attn.token_mask = FixedMask(m)
    x = torch.randn(2, 17, 64)

    def run(tokens, prompt_shift=0.0):
        with torch.no_grad():
            prompts[0].per_task["task_0"].tokens.add_(prompt_shift)
            out = block(tokens)
            prompts[0].per_task["task_0"].tokens.sub_(prompt_shift)
        return out

    base = run(x)
    moved = x.clone()
    moved[:, 1 + 5] += 10.0  # patch 5 (after the class token)
    others = [i for i in range(17) if i != 6]
    assert torch.allclose(run(moved)[:, others], base[:, others], atol=1e-5)
    # the prompts sit where patches 0-2 would be without the prefix shift: they stay visible
    assert not torch.allclose(run(x, torch.randn(3, 64))[:, 0], base[:, 0], atol=1e-3)
    # the same in training (float mask through the fused masked attention)
    block.attn.token_mask = FixedMask(m.float())
    block.train()
    with torch.no_grad():
        assert torch.allclose(block(moved)[:, others], block(x)[:, others], atol=1e-5)


def test_the_storage_bill_counted_by_hand():
    vit = create_backbone("vit_nano")  # dim 64, 2 blocks
    assert prompt_params(vit, 10) == 2 * 10 * 64
    cait = create_backbone("cait_micro")  # prompts in the self-attention stage only
    assert prompt_params(cait, 5) == len(cait.blocks) * 5 * cait.num_features
    prompts, head = get_strategy("vpt").storage(vit, 10, {**resolve_hparams("vpt"), "length": 4})
    assert (prompts.entries, prompts.bits, head.entries) == (2 * 4 * 64, 32, 10 * 65)


def test_lavit_is_refused_by_the_mechanism_and_skipped_by_suites_with_the_reason():
    with pytest.raises(ValueError, match="prompt tokens cannot be inserted"):
        promptable_blocks(create_backbone("lavit_micro"), "vpt")
    lines = []
    suite = {**load_suite("standard"), "strategies": ["vpt", "classifier"],
             "hparams_from": "registered"}
    configs = expand(suite, say=lines.append)
    assert {(c.strategy, c.backbone) for c in configs} == {
        ("vpt", "vit_micro"), ("classifier", "vit_micro"), ("classifier", "lavit_micro")}
    assert lines == ["vpt on lavit_micro: not run (LaViT's less-attention layers map N x N "
                     "scores through learned N x N transforms tied to the token grid: prompt "
                     "tokens cannot be inserted)"]
