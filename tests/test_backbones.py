"""CaiT, DropKey and LaViT through the one attention mechanism, and every strategy on them."""

import pytest
import torch
from conftest import FixedMask, fitting_hparams

from models.attention import (
    MaskableClassAttn,
    MaskableTalkingHeadAttn,
    dropkey_rates,
    make_maskable,
    set_dropkey,
)
from models.factory import create_backbone, family
from models.lavit import LaViT, Stage, diagonality_loss
from models.losses import auxiliary_loss, loss_sources
from models.multitask import MultiTaskViT
from strategies import STRATEGIES, get_strategy
from strategies.meat import MEATPlugin
from strategies.registry import TrainSettings, refusal, resolve_hparams


def _perturb_token(x, j):
    y = x.clone()
    y[:, j] += 5 * torch.randn_like(y[:, j])
    return y


# -- CaiT -----------------------------------------------------------------------------------
@pytest.mark.parametrize("keep_dtype", [torch.float32, torch.bool])
def test_cait_talking_heads_masked_key_contributes_nothing(keep_dtype):
    torch.manual_seed(0)
    model = create_backbone("cait_micro")
    attn = make_maskable(model)[0]
    assert isinstance(attn, MaskableTalkingHeadAttn) and attn.num_prefix_tokens == 0
    with torch.no_grad():  # a visible post-softmax bias: the case where re-masking matters
        attn.proj_w.bias.fill_(0.3)
    m = torch.ones(16)
    m[5] = 0
    attn.token_mask = FixedMask(m.to(keep_dtype))
    x = torch.randn(2, 16, 96)
    with torch.no_grad():
        a, b = attn(x), attn(_perturb_token(x, 5))
    others = [i for i in range(16) if i != 5]  # token 5's own query row may change
    assert torch.allclose(a[:, others], b[:, others], atol=1e-6)
    attn.token_mask = FixedMask(torch.ones(16).to(keep_dtype))
    with torch.no_grad():  # without the mask the perturbed token is read by everyone
        a, b = attn(x), attn(_perturb_token(x, 5))
    assert not torch.allclose(a[:, others], b[:, others], atol=1e-3)


def test_cait_class_attention_masks_patches_and_keeps_the_class_token():
    torch.manual_seed(0)
    model = create_backbone("cait_micro")
    attns = make_maskable(model)
    ca = attns[-1]
    assert isinstance(ca, MaskableClassAttn) and ca.num_prefix_tokens == 1
    assert len(attns) == 6  # 4 talking-heads + 2 class-attention layers
    m = torch.ones(16)
    m[[2, 9]] = 0
    ca.token_mask = FixedMask(m)
    u = torch.randn(2, 17, 96)  # [cls; patches]
    with torch.no_grad():
        a = ca(u)
        b = ca(_perturb_token(_perturb_token(u, 1 + 2), 1 + 9))
        c = ca(_perturb_token(u, 1 + 3))
    assert a.shape == (2, 1, 96)
    assert torch.allclose(a, b, atol=1e-6) and not torch.allclose(a, c, atol=1e-3)


# -- DropKey --------------------------------------------------------------------------------
def test_dropkey_schedules():
    assert dropkey_rates(0.3, 4) == pytest.approx([0.3, 0.2, 0.1, 0.0])
    assert dropkey_rates(0.3, 4, "constant") == [0.3] * 4
    with pytest.raises(ValueError):
        dropkey_rates(1.0, 4)
    with pytest.raises(ValueError):
        dropkey_rates(0.1, 4, "cosine")


@pytest.mark.parametrize("name", ["vit_nano", "cait_micro", "lavit_micro", "t2t_micro"])
def test_dropkey_is_training_only_and_safe_when_every_key_is_dropped(name):
    torch.manual_seed(0)
    model = create_backbone(name)
    x = torch.randn(2, 1, 28, 28)
    model.eval()
    with torch.no_grad():
        plain = model(x)
    rates = set_dropkey(model, 0.5)
    assert rates[0] == 0.5 and rates[-1] == 0.0
    with torch.no_grad():
        assert torch.equal(model(x), plain)  # off in evaluation
        model.train()
        assert not torch.equal(model(x), plain)  # (CaiT: LayerScale 1e-5 keeps it small)
        for layer in make_maskable(model):
            layer.dropkey_rate = 0.999999  # (nearly) every key of every row dropped
        assert torch.isfinite(model(x)).all()
        model.half()
        assert torch.isfinite(model(x.half())).all()


def test_dropkey_composes_with_token_masks():
    torch.manual_seed(0)
    attn = make_maskable(create_backbone("vit_nano"))[0]
    attn.dropkey_rate = 0.3
    m = torch.ones(16)
    m[4] = 0
    attn.token_mask = FixedMask(m)
    attn.train()
    x = torch.randn(2, 17, 64)
    y = _perturb_token(x, 1 + 4)
    torch.manual_seed(1)
    a = attn(x)
    torch.manual_seed(1)  # the same dropped keys
    b = attn(y)
    others = [i for i in range(17) if i != 1 + 4]
    assert torch.allclose(a[:, others], b[:, others], atol=1e-6)
    torch.manual_seed(2)
    assert not torch.allclose(attn(x), a)  # DropKey is active


# -- LaViT ----------------------------------------------------------------------------------
def test_lavit_less_attention_layers_reuse_scores_and_compute_no_qk():
    torch.manual_seed(0)
    model = LaViT(img_size=28, patch_size=7, in_chans=1,
                  stages=(Stage(depth=3, dim=32, num_heads=2, l_va=1),
                          Stage(depth=2, dim=48, num_heads=3, l_va=1)))
    blocks = model.anatomy_blocks()
    assert [b.attn.vanilla for b in blocks] == [True, False, False, True, False]
    less = blocks[1].attn
    assert not hasattr(less, "qkv") and less.theta.weight.shape == (16, 16)
    prev = torch.randn(2, 2, 16, 16)
    x = torch.randn(2, 16, 32)
    _, scores = less(x, prev)
    assert torch.allclose(scores, prev)  # identity-initialized transforms: scores reused
    with torch.no_grad():
        less.theta.weight.copy_(torch.randn(16, 16))
        less.psi.weight.copy_(torch.randn(16, 16))
    _, scores = less(x, prev)
    expected = less.psi.weight @ prev @ less.theta.weight.T  # W_psi^T A W_theta in Linear terms
    assert torch.allclose(scores, expected, atol=1e-4)


def test_lavit_stage_residual_and_shapes():
    torch.manual_seed(0)
    model = create_backbone("lavit_micro")
    assert [b.attn.n_tokens for b in model.anatomy_blocks()] == [16, 16, 4, 4]
    scores = torch.randn(3, 2, 16, 16)
    down = model.downsamples[0]
    with torch.no_grad():
        down.head_mix.fill_(1.0)
    out = down(scores, 4)
    assert out.shape == (3, 3, 4, 4)
    # 2x2 pooling of both grids: entry (0, 0) averages queries {0,1,4,5} x keys {0,1,4,5}
    idx = torch.tensor([0, 1, 4, 5])
    pooled = scores[:, :, idx][:, :, :, idx].mean((-1, -2)).sum(1)
    assert torch.allclose(out[:, 0, 0, 0], pooled, atol=1e-5)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 96)


def test_diagonality_loss_rewards_a_strong_symmetric_diagonal():
    n = 6
    diagonal = torch.eye(n)[None, None]
    uniform = torch.full((1, 1, n, n), 1 / n)
    skew = torch.roll(torch.eye(n), 1, dims=1)[None, None]
    assert diagonality_loss(diagonal) < diagonality_loss(uniform) < diagonality_loss(skew)
    assert diagonality_loss(diagonal).item() == pytest.approx(-1.0)


def test_lavit_auxiliary_loss_only_in_training_and_cleared_when_read():
    model = create_backbone("lavit_micro")
    x = torch.randn(2, 1, 28, 28)
    sources = loss_sources(model)
    assert sources == [model]
    model.eval()
    model(x)
    assert auxiliary_loss(sources) is None
    model.train()
    model(x)
    loss = auxiliary_loss(sources)
    assert loss is not None and loss.requires_grad
    assert auxiliary_loss(sources) is None


def test_meat_token_masks_act_in_less_attention_layers():
    torch.manual_seed(0)
    model = MultiTaskViT(create_backbone("lavit_micro"))
    plugin = MEATPlugin()
    plugin.install(model)
    assert [m.shape for m in plugin.token_masks] == [(16,), (16,), (4,), (4,)]
    less = model.backbone.anatomy_blocks()[1].attn
    m = torch.ones(16)
    m[7] = 0
    less.token_mask = FixedMask(m)
    prev = torch.randn(2, 2, 16, 16)
    x = torch.randn(2, 16, 64)
    with torch.no_grad():
        a, _ = less(x, prev)
        b, _ = less(_perturb_token(x, 7), prev)
    others = [i for i in range(16) if i != 7]
    assert torch.allclose(a[:, others], b[:, others], atol=1e-6)


# -- every strategy on every backbone family ------------------------------------------------
@pytest.fixture(scope="module")
def split_bench():
    from benchmarks.data.streams import build_stream

    return build_stream("mnist5k-split5", seed=0).to_benchmark()


@pytest.mark.parametrize("backbone", ["cait_micro", "lavit_micro", "t2t_micro"])
@pytest.mark.parametrize("strategy", list(STRATEGIES))
@pytest.mark.slow
def test_every_strategy_trains_on_cait_lavit_and_t2t(strategy, backbone, split_bench):
    torch.manual_seed(0)
    settings = TrainSettings(epochs=1, batch_size=128, head_init="random")
    bb = create_backbone(backbone)
    set_dropkey(bb, 0.1)
    if refusal(strategy, family(backbone)):  # the mechanism itself refuses, with the reason
        with pytest.raises(ValueError, match="cannot be inserted"):
            get_strategy(strategy).build(bb, resolve_hparams(strategy), settings)
        return
    st = get_strategy(strategy).build(bb, fitting_hparams(strategy, backbone), settings)
    x = torch.stack([split_bench.test_stream[0].dataset[i][0] for i in range(16)])
    st.train(split_bench.train_stream[0])
    st.model.eval()
    with torch.inference_mode():
        first = st.model(x, 0).clone()
    assert torch.isfinite(first).all()
    st.train(split_bench.train_stream[1])
    st.model.eval()
    with torch.inference_mode():
        after = st.model(x, 0)
    if not STRATEGIES[strategy].forgets:
        assert torch.equal(after, first), f"{strategy} changed task 0 on {backbone}"


def test_lavit_needs_a_grid_it_can_halve():
    from models.factory import BackboneError, resolve

    resolve("lavit_micro", img_size=28)
    with pytest.raises(BackboneError, match="token grid"):
        resolve("lavit_micro", img_size=21)  # 3x3 tokens


@pytest.mark.parametrize("name", ["vit_nano", "cait_micro", "lavit_micro", "t2t_micro"])
def test_backbone_card_counts_params_and_flops(name):
    from models.factory import backbone_card

    card = backbone_card(name)
    model = create_backbone(name)
    assert card["params_m"] == pytest.approx(sum(p.numel() for p in model.parameters()) / 1e6)
    assert card["gflops"] > 0 and card["token_masks"] and card["dropkey"]
    assert card["img_size"] == 28 and card["tokens"] == (4 if name == "t2t_micro" else 16)
