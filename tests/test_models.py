import pytest
import timm
import torch

from models.factory import BackboneError, create_backbone, save_checkpoint
from models.multitask import MultiTaskViT


def test_micro_backbone_shapes():
    m = create_backbone("vit_micro")
    assert m.patch_embed.num_patches == 16
    assert m(torch.randn(3, 1, 28, 28)).shape == (3, 96)


def test_timm_name_with_size_overrides():
    m = create_backbone("deit_tiny_patch16_224", img_size=32, in_chans=1)
    assert m(torch.randn(2, 1, 32, 32)).shape == (2, 192)


def test_patch_size_must_divide_image_size():
    with pytest.raises(BackboneError, match="does not divide"):
        create_backbone("vit_micro", img_size=30)


def test_unknown_backbone_names_valid_choices():
    with pytest.raises(BackboneError, match="vit_micro"):
        create_backbone("resnet50")


def test_local_checkpoint_round_trip(tmp_path):
    a = create_backbone("vit_micro").eval()
    path = tmp_path / "ck.pt"
    save_checkpoint({**a.state_dict(), "head.weight": torch.zeros(5, 96),
                     "head.bias": torch.zeros(5)}, path)
    b = create_backbone("vit_micro", pretrained=path).eval()
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(a(x), b(x))


def test_timm_checkpoint_file_with_1000_class_head_loads(tmp_path):
    ref = timm.create_model("vit_tiny_patch16_224", img_size=28, patch_size=7, embed_dim=96,
                            depth=4, num_heads=3, in_chans=1, num_classes=1000).eval()
    path = tmp_path / "timm.pth"
    torch.save(ref.state_dict(), path)
    b = create_backbone("vit_micro", pretrained=path).eval()
    x = torch.randn(2, 1, 28, 28)
    assert torch.allclose(ref.forward_head(ref.forward_features(x), pre_logits=True), b(x))


def test_missing_or_mismatched_checkpoint_is_an_error(tmp_path):
    with pytest.raises(BackboneError, match="not found"):
        create_backbone("vit_micro", pretrained=tmp_path / "nope.pt")
    path = tmp_path / "other.pt"
    torch.save(create_backbone("vit_nano").state_dict(), path)
    with pytest.raises((BackboneError, RuntimeError)):
        create_backbone("vit_micro", pretrained=path)


class _Exp:
    def __init__(self, task, n):
        self.task_labels = [task]
        self.classes_in_this_experience = list(range(n))


def test_multitask_mixed_batch_pads_with_minus_inf():
    model = MultiTaskViT(create_backbone("vit_nano")).train()
    model.adaptation(_Exp(0, 2))
    model.adaptation(_Exp(1, 5))
    model.eval()
    x = torch.randn(4, 1, 28, 28)
    out = model(x, torch.tensor([0, 1, 0, 1]))
    assert out.shape == (4, 5)
    assert torch.isinf(out[[0, 2], 2:]).all()
    assert torch.allclose(out[1], model(x[1:2], 1)[0])
    assert (out[[0, 2]].argmax(1) < 2).all()


def test_base_pretraining_is_cached_per_config(tmp_path):
    from benchmarks.data.streams import build_stream
    from benchmarks.pretrain import pretrained_checkpoint

    base = build_stream("mnist5k-split5", seed=0).base
    kw = {"img_size": 28, "in_chans": 1}
    args = ("vit_nano", kw, "digits", base.train, base.test, base.n_classes)
    recipe = {"epochs": 1}
    path, meta = pretrained_checkpoint(*args, seed=0, cache_dir=tmp_path, recipe=recipe)
    stamp = path.stat().st_mtime_ns
    again, meta2 = pretrained_checkpoint(*args, seed=0, cache_dir=tmp_path, recipe=recipe)
    assert again == path and path.stat().st_mtime_ns == stamp and meta2 == meta
    other, _ = pretrained_checkpoint(*args, seed=1, cache_dir=tmp_path, recipe=recipe)
    assert other != path
    a = create_backbone("vit_nano", pretrained=path).eval()
    b = create_backbone("vit_nano", pretrained=again).eval()
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(a(x), b(x))
    assert 0.0 <= meta["base_test_acc"] <= 1.0
