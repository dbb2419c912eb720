"""Storage bills on a ViT small enough to count by hand (vit_nano: dim 64, depth 2, MLP 256,
16 patches of 7x7, one input channel)."""

import pytest

from models.factory import create_backbone
from strategies import get_strategy
from strategies.registry import resolve_hparams
from strategies.storage import MIB, StorageItem, param_count, storage_summary, task_bill


@pytest.fixture(scope="module")
def nano():
    return create_backbone("vit_nano")


def _bits(strategy, backbone, n_classes=3):
    items = get_strategy(strategy).storage(backbone, n_classes, resolve_hparams(strategy))
    return {i.name: i.total_bits for i in items}


def test_nano_parameter_count_by_hand(nano):
    d, mlp, n_tok = 64, 256, 17
    patch = 49 * d + d
    block = 2 * (2 * d) + (d * 3 * d + 3 * d) + (d * d + d) + (d * mlp + mlp) + (mlp * d + d)
    total = patch + d + n_tok * d + 2 * block + 2 * d  # + cls token, pos embed, final norm
    assert sum(p.numel() for p in nano.parameters()) == total


def test_head_only_strategies(nano):
    head = 3 * (64 + 1) * 32
    assert _bits("classifier", nano) == {"head": head}
    assert _bits("finetune", nano) == {"head": head}


def test_individual_keeps_a_full_fp32_backbone(nano):
    n = sum(p.numel() for p in nano.parameters())
    assert _bits("individual", nano) == {"backbone copy": 32 * n, "head": 3 * 65 * 32}


def test_meat_counts_one_bit_per_token_and_ffn_weight(nano):
    bits = _bits("meat", nano)
    assert bits["token masks"] == 2 * 16  # 2 layers x 16 patch tokens
    assert bits["ffn masks"] == 2 * (64 * 256 + 256 * 64)
    assert bits["head"] == 3 * 65 * 32


def test_packed_bytes_round_up_per_item_and_summary_totals(nano):
    items = [StorageItem("mask", 9, 1), StorageItem("head", 2, 32)]
    bill = task_bill(items)
    assert bill["bits"] == 9 + 64 and bill["packed_bytes"] == 2 + 8
    s = storage_summary(param_count(nano), base_head_params=5 * 65, per_task=[items, items])
    n = sum(p.numel() for p in nano.parameters())
    assert s["base_bits"] == 32 * (n + 5 * 65)
    assert s["per_task_bits"] == [73, 73]
    assert s["total_mib"] == pytest.approx((s["base_bits"] + 146) / 8 / MIB)
    assert s["per_task_pct_of_backbone"][0] == pytest.approx(100 * 73 / (32 * n))


def test_piggyback_one_bit_per_block_linear_weight(nano):
    d, mlp = 64, 256
    per_block = d * 3 * d + d * d + d * mlp + mlp * d  # qkv, proj, fc1, fc2
    assert _bits("piggyback", nano) == {"weight masks": 2 * per_block, "head": 3 * 65 * 32}
    hp = resolve_hparams("piggyback", {"patch_embed": True})
    items = get_strategy("piggyback").storage(nano, 3, hp)
    assert items[0].total_bits == 2 * per_block + 49 * d  # + the 7x7 patch projection


def test_hat_one_bit_per_gated_unit_and_shared_adapters_once(nano):
    # default: gates on each block's shared adapter, 64 bottleneck + 64 output units
    assert _bits("hat", nano) == {"unit gates": 2 * (64 + 64), "head": 3 * 65 * 32}
    info, hp = get_strategy("hat"), resolve_hparams("hat")
    shared = info.shared_storage(nano, hp)
    per_block = (64 * 64 + 64) + (64 * 64 + 64)
    assert [(i.name, i.total_bits) for i in shared] == [("shared adapters", 32 * 2 * per_block)]
    own = resolve_hparams("hat", {"units": "backbone"})
    bits = {i.name: i.total_bits for i in info.storage(nano, 3, own)}
    assert bits == {"unit gates": 2 * (3 * 64 + 64 + 256 + 64), "head": 3 * 65 * 32}
    assert info.shared_storage(nano, own) == []


def test_shared_items_count_once_and_the_base_is_the_untouched_backbone(nano):
    from strategies.storage import strategy_bill

    hp = resolve_hparams("hat")
    bill = strategy_bill(get_strategy("hat"), nano, [3, 3], base_head_params=0, hparams=hp)
    n = sum(p.numel() for p in nano.parameters())
    shared = 32 * 2 * ((64 * 64 + 64) * 2)
    assert bill["base_bits"] == 32 * n and bill["shared_bits"] == shared
    assert bill["total_bits"] == 32 * n + shared + 2 * (2 * 128 + 3 * 65 * 32)


def test_adapter_keeps_fp32_bottlenecks(nano):
    per_block = (64 * 64 + 64) + (64 * 64 + 64)  # down and up projections with biases
    assert _bits("adapter", nano) == {"adapters": 32 * 2 * per_block, "head": 3 * 65 * 32}


def test_lwf_keeps_only_heads(nano):
    assert _bits("lwf", nano) == {"head": 3 * 65 * 32}
