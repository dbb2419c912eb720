"""Per-task compacted inference equals the masked dense model, and removes what it claims."""

import pytest
import torch

from models import anatomy
from models.compact import compact_for_task
from models.factory import create_backbone
from models.multitask import MultiTaskViT
from strategies.hat import HATPlugin
from strategies.meat import MEATPlugin
from strategies.piggyback import PiggybackPlugin


def masked_model(backbone_name: str, plugin, edit=None) -> MultiTaskViT:
    """A model with two finished tasks of ``plugin``'s masks; ``edit(plugin)`` may set task 1's
    trainable tensors before they are binarized."""
    torch.manual_seed(0)
    model = MultiTaskViT(create_backbone(backbone_name))
    plugin.install(model)
    for task in (0, 1):
        for m in plugin.masks:
            m.add_task(task)
        if edit is not None and task == 1:
            edit(plugin)
        for m in plugin.masks:
            m.finish_task(task)
    return model.eval()


def dense_and_compact(model, task):
    x = torch.rand(6, 1, 28, 28)
    with torch.inference_mode():
        dense = model.features(x, task)
        compacted, counts = compact_for_task(model, task)
        return dense, compacted(x), counts


def empty_first_unit_rows(plugin):
    """Task 1 of MEAT's FFN masks: fc1 row 0 dropped (a constant unit), fc2 column 1 dropped (a
    dead unit), in every block."""
    with torch.no_grad():
        for fc1_mask, fc2_mask in zip(plugin.ffn_masks[::2], plugin.ffn_masks[1::2], strict=True):
            fc1_mask.trainable["1"][0] = -10.0
            fc2_mask.trainable["1"][:, 1] = -10.0


@pytest.mark.parametrize("backbone", ["vit_micro", "cait_micro", "lavit_micro", "t2t_micro"])
def test_meat_compacted_equals_masked_dense(backbone):
    model = masked_model(backbone, MEATPlugin(init="paper"), edit=empty_first_unit_rows)
    for task in (0, 1):
        dense, compacted, counts = dense_and_compact(model, task)
        torch.testing.assert_close(compacted, dense, rtol=1e-5, atol=1e-5)
    n_blocks = len(anatomy.blocks(model.backbone))
    assert counts["ffn_units_removed"] >= 2 * n_blocks  # task 1: the constant and the dead unit
    if backbone == "vit_micro":  # every layer's dropped keys leave the attention
        assert counts["keys_dropped"] > 0


def test_compacted_ffn_really_is_smaller():
    model = masked_model("vit_micro", MEATPlugin(init="paper"), edit=empty_first_unit_rows)
    compacted, _ = compact_for_task(model, 1)
    hidden = model.backbone.blocks[0].mlp.fc1.out_features
    assert compacted.blocks[0].mlp.fc1.out_features == hidden - 2
    assert compacted.blocks[0].attn.kept_keys.numel() < 1 + anatomy.num_patches(model.backbone)
    assert not any(n.endswith("token_mask") for n, _ in compacted.named_modules())


def test_hat_compacted_drops_gated_off_units():
    model = masked_model("vit_micro", HATPlugin(units="backbone"))
    dense, compacted, counts = dense_and_compact(model, 1)
    torch.testing.assert_close(compacted, dense, rtol=1e-5, atol=1e-5)
    assert counts["ffn_units_removed"] > 0  # gates start N(0, 1): about half are off


def test_hat_on_adapters_compacts_to_the_same_outputs():
    model = masked_model("vit_micro", HATPlugin())
    with torch.no_grad():  # non-zero adapters, so the gates matter
        for layer in model.backbone.modules():
            if isinstance(layer, torch.nn.Linear) and hasattr(layer, "output_gate"):
                layer.weight.normal_(0, 0.1)
    for task in (0, 1):
        dense, compacted, _ = dense_and_compact(model, task)
        torch.testing.assert_close(compacted, dense, rtol=1e-5, atol=1e-5)


def test_piggyback_compacted_equals_masked_dense():
    def random_scores(plugin):
        with torch.no_grad():
            for m in plugin.masks:
                m.trainable["1"].uniform_(0, 1e-2)  # about half above the 5e-3 threshold

    model = masked_model("vit_micro", PiggybackPlugin(), edit=random_scores)
    dense, compacted, _ = dense_and_compact(model, 1)
    torch.testing.assert_close(compacted, dense, rtol=1e-5, atol=1e-5)
