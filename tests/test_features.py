"""Passes outside training: the meter, the weights key and the shared feature cache."""

from __future__ import annotations

import torch

from models.factory import create_backbone
from models.multitask import MultiTaskViT
from strategies import get_strategy
from strategies.features import FeatureCache, PassMeter, task_features, weights_key
from strategies.registry import TrainSettings, resolve_hparams


def _data(n=10):
    from benchmarks.data.datasets import TensorImages

    return TensorImages(torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(0)),
                        torch.arange(n) % 3)


def test_task_features_count_their_images_and_keep_order():
    backbone = create_backbone("vit_nano").eval()
    meter = PassMeter()
    feats, labels = task_features(backbone, _data(), "cpu", batch_size=4, meter=meter)
    assert feats.shape == (10, backbone.num_features) and labels.tolist() == [0, 1, 2, 0, 1, 2,
                                                                             0, 1, 2, 0]
    with torch.no_grad():
        assert torch.allclose(feats[:4], backbone(_data()[:4][0]), atol=1e-6)
    assert meter.images == 10 and meter.take()[0] == 10 and meter.images == 0


def test_weights_key_follows_the_state_and_refuses_what_the_state_does_not_fix():
    torch.manual_seed(0)
    a = create_backbone("vit_nano")
    b = create_backbone("vit_nano")
    b.load_state_dict(a.state_dict())
    assert weights_key(a) == weights_key(b)
    with torch.no_grad():
        b.blocks[0].mlp.fc1.bias[0] += 1e-3
    assert weights_key(a) != weights_key(b)
    handle = a.blocks[0].register_forward_hook(lambda *args: None)
    assert weights_key(a) is None  # a hook may change the output whatever the state
    handle.remove()
    meat = get_strategy("meat").build(a, resolve_hparams("meat"), TrainSettings())
    assert isinstance(meat.model, MultiTaskViT) and weights_key(meat.model.backbone) is None


def test_feature_cache_computes_once_and_shares_between_runs(tmp_path):
    computed = []

    def compute():
        computed.append(True)
        return torch.arange(6.0).reshape(3, 2), torch.tensor([0, 1, 2])

    first, second = FeatureCache(tmp_path, "data A"), FeatureCache(tmp_path, "data A")
    out = first.get("w1", "task0-train", "cpu", compute)
    again = second.get("w1", "task0-train", "cpu", compute)
    assert len(computed) == 1 and second.hits == 1
    assert torch.equal(out[0], again[0]) and torch.equal(out[1], again[1])
    FeatureCache(tmp_path, "data B").get("w1", "task0-train", "cpu", compute)  # other data
    second.get("w2", "task0-train", "cpu", compute)  # other weights
    second.get("w1", "task0-test", "cpu", compute)  # other split
    assert len(computed) == 4
    FeatureCache(None, "data A").get("w1", "task0-train", "cpu", compute)  # no folder: no cache
    assert len(computed) == 5
