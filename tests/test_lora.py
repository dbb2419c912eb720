"""LoRA (models/lora.py, strategies/lora.py): the update's formula, its zero start, its bill."""

import torch

from models.factory import create_backbone
from models.lora import LowRank, add_lora, lora_params
from strategies import get_strategy
from strategies.registry import resolve_hparams


def test_the_update_is_alpha_over_r_times_b_a_x():
    update = LowRank(3, 2, rank=2, alpha=3.0)
    with torch.no_grad():
        update.A.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]]))
        update.B.copy_(torch.tensor([[1.0, 1.0], [0.0, 2.0]]))
    x = torch.tensor([[1.0, 2.0, 3.0]])
    # A x = (7, 2); B A x = (9, 4); times alpha / r = 1.5
    assert torch.equal(update(x), torch.tensor([[13.5, 6.0]]))


def test_a_new_task_starts_from_the_frozen_features_and_only_its_task_moves():
    torch.manual_seed(0)
    backbone = create_backbone("vit_nano").eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        plain = backbone(x)
        updates = add_lora(backbone, "attention", rank=4, alpha=8.0)
        for u in updates:
            u.add_task(0)
            u.set_task(0)
        assert torch.equal(backbone(x), plain)  # B = 0
        for u in updates:
            u.per_task["task_0"].B.normal_()
        moved = backbone(x)
        for u in updates:
            u.set_task(1)  # a task without updates: the frozen backbone
        assert not torch.equal(moved, plain) and torch.equal(backbone(x), plain)


def test_the_storage_bill_counted_by_hand():
    backbone = create_backbone("vit_nano")  # dim 64, 2 blocks: qkv 64 -> 192, proj 64 -> 64
    assert lora_params(backbone, "attention", rank=4) == 2 * (4 * (64 + 192) + 4 * (64 + 64))
    assert lora_params(backbone, "all", rank=4) == 2 * (4 * (64 + 192) + 4 * (64 + 64)
                                                        + 4 * (64 + 256) + 4 * (256 + 64))
    hp = {**resolve_hparams("lora"), "rank": 4}
    (lora, head) = get_strategy("lora").storage(backbone, 10, hp)
    assert (lora.entries, lora.bits) == (3072, 32) and head.entries == 10 * 65
