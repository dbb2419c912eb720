"""T2T-ViT (models/t2t.py): the official layout and math, and loading an official checkpoint."""

import argparse
import math

import numpy as np
import pytest
import torch

from models import anatomy
from models.factory import create_backbone, load_checkpoint, save_checkpoint
from models.t2t import TokenPerformer, grid_side, sinusoid_table


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
    """``model``'s weights as the official code saves them: ``tokens_to_token.*`` keys, a
    1000-way head, and query rows for its attention scale embed_dim ** -0.5."""
    heads = model.blocks[0].attn.num_heads
    state = {}
    for key, value in model.state_dict().items():
        if key.endswith("attn.qkv.weight"):
            value = value.clone()
            value[: value.shape[1]] *= heads ** 0.5
        state[key.replace("patch_embed.", "tokens_to_token.", 1)] = value
    state["head.weight"] = torch.randn(1000, model.embed_dim)
    state["head.bias"] = torch.zeros(1000)
    return state


def official_block(block, x: torch.Tensor, qkv_weight: torch.Tensor) -> torch.Tensor:
    """The official ``Block`` on official weights: attention logits scaled by dim ** -0.5."""
    b, n, c = x.shape
    heads = block.attn.num_heads
    h = block.norm1(x)
    qkv = (h @ qkv_weight.T).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    attn = ((qkv[0] @ qkv[1].transpose(-2, -1)) * c ** -0.5).softmax(-1)
    x = x + block.attn.proj((attn @ qkv[2]).transpose(1, 2).reshape(b, n, c))
    return x + block.mlp(block.norm2(x))


def test_an_official_checkpoint_loads_with_its_attention_scale(tmp_path):
    torch.manual_seed(0)
    source = create_backbone("t2t_micro").eval()
    state = official_checkpoint(source)
    torch.save({"epoch": 309, "arch": "t2t_vit_12", "state_dict": state,  # as the official
                "args": argparse.Namespace(model="t2t_vit_12", lr=5e-4)},  # training saves it
               tmp_path / "t2t_official.pth.tar")
    loaded = create_backbone("t2t_micro", pretrained=tmp_path / "t2t_official.pth.tar").eval()
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
