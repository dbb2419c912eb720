"""T2T-ViT (models/t2t.py): the official layout and math, and loading an official checkpoint."""

import argparse
import math

import numpy as np
import pytest
import timm
import torch
from avalanche.core import SupervisedPlugin
from conftest import fitting_hparams
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets

from benchmarks.measure import validate
from benchmarks.measure.stepperf import synthetic_stream
from models import anatomy
from models.attention import set_dropkey
from models.factory import create_backbone, load_checkpoint, save_checkpoint
from models.prompts import query_features
from models.t2t import IMAGENET, TokenPerformer, grid_side, sinusoid_table
from strategies import get_strategy
from strategies.registry import TrainSettings


def official_performer_attention(layer: TokenPerformer, x: torch.Tensor) -> torch.Tensor:
    """``Token_performer.single_attn`` of the official code, einsum for einsum."""
    def prm_exp(t):
        xd = ((t * t).sum(dim=-1, keepdim=True)).repeat(1, 1, layer.m) / 2
        wtx = torch.einsum("bti,mi->btm", t.float(), layer.w)
        return torch.exp(wtx - xd) / math.sqrt(layer.m)

    k, q, v = torch.split(layer.kqv(x), layer.emb, dim=-1)
    kp, qp = prm_exp(k), prm_exp(q)
    d = torch.einsum("bti,bi->bt", qp, kp.sum(dim=1)).unsqueeze(dim=2)
    kptv = torch.einsum("bin,bim->bnm", v.float(), kp)
    y = torch.einsum("bti,bni->btn", qp, kptv) / (d.repeat(1, 1, layer.emb) + layer.epsilon)
    return v + layer.dp(layer.proj(y))


def test_token_performer_is_the_official_computation():
    torch.manual_seed(0)
    layer = TokenPerformer(dim=12, emb=8).eval()
    x = torch.randn(2, 10, 12)
    torch.testing.assert_close(layer.attention(x), official_performer_attention(layer, x))


def test_sinusoid_table_is_the_official_one():
    n, d = 5, 6
    angles = np.array([[p / np.power(10000, 2 * (j // 2) / d) for j in range(d)]
                       for p in range(n)])
    angles[:, 0::2], angles[:, 1::2] = np.sin(angles[:, 0::2]), np.cos(angles[:, 1::2])
    torch.testing.assert_close(sinusoid_table(n, d), torch.tensor(angles).float()[None])


def test_token_grid_follows_the_soft_splits():
    assert grid_side(224) == 14 and grid_side(28) == 2
    model = create_backbone("t2t_micro")
    assert anatomy.num_patches(model) == 4 and anatomy.token_counts(model) == [4, 4]
    assert anatomy.patch_projection(model) is model.patch_embed.project


def official_checkpoint(model) -> dict:
    """``model``'s weights as the official code saves them: ``tokens_to_token.*`` keys and a
    1000-way head."""
    state = {k.replace("patch_embed.", "tokens_to_token.", 1): v
             for k, v in model.state_dict().items()}
    state["head.weight"] = torch.randn(1000, model.embed_dim)
    state["head.bias"] = torch.zeros(1000)
    return state


def official_block(block, x: torch.Tensor, qkv_weight: torch.Tensor) -> torch.Tensor:
    """The official ``Block`` on official weights: ``self.scale = qk_scale or head_dim ** -0.5``
    with ``qk_scale=None``, as the released checkpoints were trained and validated."""
    b, n, c = x.shape
    heads = block.attn.num_heads
    h = block.norm1(x)
    qkv = (h @ qkv_weight.T).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    attn = ((qkv[0] @ qkv[1].transpose(-2, -1)) * (c // heads) ** -0.5).softmax(-1)
    x = x + block.attn.proj((attn @ qkv[2]).transpose(1, 2).reshape(b, n, c))
    return x + block.mlp(block.norm2(x))


def save_official(state: dict, path):
    torch.save({"epoch": 309, "arch": "t2t_vit_12", "state_dict": state,  # as the official
                "args": argparse.Namespace(model="t2t_vit_12", lr=5e-4)},  # training saves it
               path)


def test_an_official_checkpoint_loads_with_its_weights_unchanged(tmp_path):
    torch.manual_seed(0)
    source = create_backbone("t2t_micro").eval()
    for p in source.parameters():  # weights unlike any initialization
        p.data.add_(0.1 * torch.randn_like(p))
    state = official_checkpoint(source)
    save_official(state, tmp_path / "t2t_official.pth.tar")
    loaded = create_backbone("t2t_micro", pretrained=tmp_path / "t2t_official.pth.tar").eval()
    for i, block in enumerate(loaded.blocks):
        assert torch.equal(block.attn.qkv.weight, state[f"blocks.{i}.attn.qkv.weight"])
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), source(x))
        tokens = torch.randn(2, 5, 64)
        torch.testing.assert_close(loaded.blocks[0](tokens),
                                   official_block(loaded.blocks[0], tokens,
                                                  state["blocks.0.attn.qkv.weight"]))
    save_checkpoint(loaded.state_dict(), tmp_path / "ours.pt")  # our layout loads as it is
    again = create_backbone("t2t_micro")
    load_checkpoint(again, tmp_path / "ours.pt")
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), source(x))


def test_the_position_table_is_a_fixed_buffer():
    model = create_backbone("t2t_micro")
    names = dict(model.named_parameters())
    assert "pos_embed" not in names and "pos_embed" in model.state_dict()
    torch.testing.assert_close(model.pos_embed, sinusoid_table(1 + 4, 64))


def test_an_official_checkpoint_at_another_size_gets_its_own_position_table(tmp_path):
    source = create_backbone("t2t_micro")
    torch.save(official_checkpoint(source), tmp_path / "t2t.pth")
    bigger = create_backbone("t2t_micro", img_size=56, pretrained=tmp_path / "t2t.pth")
    assert bigger.pos_embed.shape[1] == 1 + grid_side(56) ** 2
    torch.testing.assert_close(bigger.pos_embed.data, sinusoid_table(1 + grid_side(56) ** 2, 64))


@pytest.mark.parametrize("name, params_m", [("t2t_vit_12", 6.9), ("t2t_vit_14", 21.5)])
def test_official_sizes_have_the_official_parameter_counts(name, params_m):
    model = create_backbone(name)
    head = (model.num_features + 1) * 1000  # the official count includes the 1000-way head
    assert (sum(p.numel() for p in model.parameters()) + head) / 1e6 == pytest.approx(
        params_m, abs=0.05)


class PerformerDropoutMode(SupervisedPlugin):
    """Whether the T2T module's Performer dropout was active in the training steps."""

    def __init__(self):
        super().__init__()
        self.modes = set()

    def before_forward(self, strategy, **kwargs):
        self.modes.add(strategy.model.backbone.patch_embed.attention1.dp.training)


@pytest.mark.parametrize("name, trains_backbone", [("meat", False), ("vpt", False),
                                                   ("finetune", True)])
def test_performer_dropout_is_active_only_where_the_backbone_trains(name, trains_backbone):
    bench = synthetic_stream((1, 28, 28), (8, 8), 4, n_classes=2).to_benchmark()
    seen = PerformerDropoutMode()
    settings = TrainSettings(epochs=1, batch_size=4, head_init="random", plugins=[seen])
    strategy = get_strategy(name).build(create_backbone("t2t_micro"),
                                        fitting_hparams(name, "t2t_micro"), settings)
    strategy.train(bench.train_stream[0])
    assert seen.modes == {trains_backbone}


def test_the_prompt_query_is_computed_in_evaluation_mode():
    """The query is the frozen backbone's evaluation-mode features: the same whatever the RNG,
    with the model in training mode (Performer dropout, DropKey)."""
    settings = TrainSettings(epochs=1, batch_size=4, head_init="random")
    strategy = get_strategy("l2p").build(create_backbone("t2t_micro"),
                                         fitting_hparams("l2p", "t2t_micro"), settings)
    backbone = strategy.model.backbone
    set_dropkey(backbone, 0.5)
    strategy.model.train()
    x = torch.rand(4, 1, 28, 28)
    queries = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        queries.append(query_features(backbone, x))
    assert torch.equal(*queries)
    assert backbone.blocks[0].attn.training  # the modes are restored (DropKey in training)


def test_validate_prints_the_top1_of_an_official_checkpoint(tmp_path, capsys):
    """``benchmarks.measure.validate`` on a generated ImageNet-style folder and official-format
    checkpoint: its top-1 is the source model's (with its own head) on the same images."""
    torch.manual_seed(0)
    source = timm.create_model("t2t_micro", num_classes=3).eval()
    save_official({k.replace("patch_embed.", "tokens_to_token.", 1): v
                   for k, v in source.state_dict().items()}, tmp_path / "t2t.pth.tar")
    rng = np.random.default_rng(0)
    for c, synset in enumerate(["n01", "n02", "n03"]):
        (tmp_path / "val" / synset).mkdir(parents=True)
        for i in range(4):
            pixels = rng.integers(0, 256, (32 + c, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "val" / synset / f"{i}.png")
    code = validate.main(["--backbone", "t2t_micro", "--pretrained", str(tmp_path / "t2t.pth.tar"),
                          "--data", str(tmp_path / "val"), "--workers", "0", "--device", "cpu"])
    assert code == 0
    data = datasets.ImageFolder(tmp_path / "val", validate.evaluation_transform(
        28, validate.T2T_CROP_PCT, (IMAGENET[0][:1], IMAGENET[1][:1]), 1))
    correct, total = validate.top1(source, [next(iter(DataLoader(data, batch_size=12)))], "cpu")
    assert total == 12
    assert f"top-1 {100 * correct / total:.2f}% ({correct}/12 images, 3 classes" in (
        capsys.readouterr().out)


def test_validate_refuses_a_missing_folder_in_one_line(tmp_path, capsys):
    code = validate.main(["--backbone", "t2t_micro", "--pretrained", str(tmp_path / "x.pth"),
                          "--data", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "data folder not found" in err
