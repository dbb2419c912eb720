import copy

import pytest
import timm
import torch
from conftest import FixedMask

from models.attention import MaskableAttention, make_maskable, multiplicative_masked_softmax
from models.factory import create_backbone
from models.masks import GumbelRule, TaskMask
from models.multitask import MultiTaskViT
from models.tasks import pack_bits, unpack_bits
from strategies.meat import MEATPlugin, drop_control_loss


class _Exp:
    def __init__(self, task, n=3):
        self.task_labels = [task]
        self.task_label = task
        self.classes_in_this_experience = list(range(n))


def _attention(n_prefix=1):
    blk = create_backbone("vit_nano").blocks[0]
    attn = make_maskable(blk)[0]
    attn.num_prefix_tokens = n_prefix
    return attn


def _attn_weights(attn, x, keep):
    """Attention probabilities as computed by MaskableAttention's training path."""
    B, N, _ = x.shape
    qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, _ = qkv.unbind(0)
    return multiplicative_masked_softmax((q * attn.scale) @ k.transpose(-2, -1), keep)


def test_masked_key_gets_zero_attention_and_prefix_is_kept():
    attn = _attention()
    m = torch.ones(16)
    m[[3, 7]] = 0
    attn.token_mask = FixedMask(m)
    x = torch.randn(2, 17, 64)
    keep = attn.key_keep(17, x.device)
    assert keep[0, 0, 0, 0] == 1  # class token always kept
    w = _attn_weights(attn, x, keep)
    assert torch.all(w[..., 1 + 3] == 0) and torch.all(w[..., 1 + 7] == 0)
    assert torch.allclose(w.sum(-1), torch.ones_like(w.sum(-1)))
    # a mask of all zeros still leaves the class token: rows stay normalized
    attn.token_mask = FixedMask(torch.zeros(16))
    w = _attn_weights(attn, x, attn.key_keep(17, x.device))
    assert torch.allclose(w[..., 0], torch.ones_like(w[..., 0]))


def test_training_and_fused_eval_paths_agree():
    attn = _attention().eval()
    m = (torch.rand(16) > 0.5).float()
    x = torch.randn(2, 17, 64)
    attn.token_mask = FixedMask(m)
    train_path = attn(x)
    attn.token_mask = FixedMask(m.bool())
    assert torch.allclose(train_path, attn(x), atol=1e-5)


def test_keep_diagonal_variant_lets_dropped_token_attend_to_itself():
    attn = _attention()
    m = torch.ones(16)
    m[2] = 0
    attn.token_mask, attn.keep_diagonal = FixedMask(m), True
    x = torch.randn(1, 17, 64)
    w = _attn_weights(attn, x, attn.key_keep(17, x.device))
    assert torch.all(w[0, :, 3, 3] > 0)
    others = [i for i in range(17) if i != 3]
    assert torch.all(w[0, :, others, 3] == 0)


PLAIN_TIMM = {  # (timm name, overrides, input shape)
    "deit_tiny": ("deit_tiny_patch16_224", {}, (2, 3, 224, 224)),
    "t2t_vit": ("t2t_micro", {"token_dropout": 0.0}, (2, 1, 28, 28)),  # train mode: no noise
    "cait_talking_heads_and_class_attention": (
        "cait_xxs24_224", dict(img_size=28, patch_size=7, embed_dim=96, depth=2,
                               depth_token_only=1, num_heads=3, in_chans=1), (2, 1, 28, 28)),
}


@pytest.mark.parametrize("case", list(PLAIN_TIMM))
def test_all_ones_masks_equal_plain_timm(case):
    torch.manual_seed(0)
    name, overrides, shape = PLAIN_TIMM[case]
    plain = timm.create_model(name, num_classes=0, **overrides).eval()
    model = MultiTaskViT(copy.deepcopy(plain))
    plugin = MEATPlugin()
    plugin.install(model)
    for m in plugin.masks:
        m.add_task(0)
        m.set_task(0)
    model.eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        assert torch.allclose(model.backbone(x), plain(x), atol=1e-5)
        model.train()  # Gumbel samples of d = 2*gamma logits: still ones with prob ~1
        for m in plugin.masks:
            m.trainable["0"].data.fill_(50.0)
        assert torch.allclose(model.backbone(x), plain(x), atol=1e-5)


def test_gumbel_straight_through_reaches_mask_logits_and_nothing_else():
    model = MultiTaskViT(create_backbone("vit_nano"))
    plugin = MEATPlugin(init="paper")
    plugin.install(model)
    model.train()
    model.adaptation(_Exp(0))
    for m in plugin.masks:
        m.add_task(0)
    out = model(torch.randn(4, 1, 28, 28), 0)
    loss = out.logsumexp(1).mean() + plugin.alpha * drop_control_loss(
        [m.last_sample for m in plugin.token_masks], plugin.lam)
    loss.backward()
    for m in plugin.masks:
        g = m.trainable["0"].grad
        assert g is not None and g.abs().sum() > 0
    for p in model.backbone.parameters():
        if not any(p is q for m in plugin.masks for q in m.parameters()):
            assert p.grad is None and not p.requires_grad


def test_hard_samples_are_binary():
    tm = TaskMask((1000,), GumbelRule(init="paper"))
    tm.add_task(0)
    tm.set_task(0)
    s = tm()
    assert set(s.detach().unique().tolist()) <= {0.0, 1.0}
    tm.eval()
    assert tm().dtype == torch.bool


def test_drop_control_loss_on_hand_made_masks():
    m1 = torch.tensor([1.0, 1.0, 0.0, 0.0])  # keeps 0.5
    m2 = torch.tensor([1.0, 1.0, 1.0, 1.0])  # keeps 1.0
    expected = ((0.9 - 0.5) ** 2 + (0.9 - 1.0) ** 2) / 2
    assert drop_control_loss([m1, m2], 0.9).item() == pytest.approx(expected)


def test_packed_masks_round_trip_through_save_and_load(tmp_path):
    bits = torch.rand(5, 13) > 0.5
    packed = pack_bits(bits)
    assert packed.dtype == torch.uint8 and packed.numel() == (65 + 7) // 8
    torch.save({"m": packed}, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt")["m"]
    assert torch.equal(unpack_bits(loaded, (5, 13)), bits)

    tm = TaskMask((5, 13))
    tm.add_task(0)
    tm.trainable["0"].data = torch.where(bits, 1.0, -1.0)
    tm.finish_task(0)
    clone = TaskMask((5, 13))
    clone.register_buffer("packed_0", torch.zeros_like(tm.packed_0))
    clone.load_state_dict(tm.state_dict())
    assert torch.equal(clone.binary(0), bits)


def test_unknown_task_mask_is_an_error():
    tm = TaskMask((3,))
    with pytest.raises(KeyError):
        tm.binary(1)


def test_make_maskable_keeps_state_dict_keys():
    m = create_backbone("vit_nano")
    keys = list(m.state_dict())
    attns = make_maskable(m)
    assert all(isinstance(a, MaskableAttention) for a in attns) and len(attns) == 2
    assert list(m.state_dict()) == keys


def test_meat_plugin_in_a_users_own_template():
    """A user's own script: the plugin installed into a MultiTaskViT, one optimizer group, the
    suite's template (a plain Avalanche template is refused with a clear error)."""
    from avalanche.training import Naive

    from benchmarks.data.streams import build_stream
    from benchmarks.plugins import EvalCounter
    from strategies.common import ContinualTemplate
    from strategies.registry import TrainSettings

    bench = build_stream("mnist5k-split5", seed=0).to_benchmark()
    model = MultiTaskViT(create_backbone("vit_nano"))
    frozen = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    counter, plugin = EvalCounter(), MEATPlugin(init="paper")
    plugin.install(model)
    naive = Naive(model=model, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
                  criterion=torch.nn.CrossEntropyLoss(), plugins=[plugin])
    with pytest.raises(TypeError, match="needs a strategies.common.ContinualTemplate"):
        naive.train(bench.train_stream[0])
    strategy = ContinualTemplate(
        model=model, plugins=[plugin, counter],
        param_groups=lambda m, t: [{"params": [*plugin.trainable(), *m.heads[str(t)].parameters()],
                                    "lr": 1e-2}],
        settings=TrainSettings(epochs=1, batch_size=64, eval_batch_size=256, head_init="random"))
    strategy.train(bench.train_stream[0])
    strategy.eval(bench.test_stream[:1])
    first = counter.counts[0][:2]
    strategy.train(bench.train_stream[1])
    strategy.eval(bench.test_stream[:2])
    assert counter.counts[0][:2] == first  # task 0 bit-identical after task 1
    for m in plugin.masks:  # both tasks kept bit-packed, logits of finished tasks dropped
        assert hasattr(m, "packed_0") and hasattr(m, "packed_1") and len(m.trainable) == 0
    state = model.backbone.state_dict()
    for k, v in frozen.items():  # pre-trained weights never change
        assert torch.equal(state[k], v), k


def test_mixed_task_batch_uses_each_samples_masks_and_head():
    model = MultiTaskViT(create_backbone("vit_nano"))
    plugin = MEATPlugin(init="paper")
    plugin.install(model)
    model.train()
    for t in (0, 1):
        model.adaptation(_Exp(t))
        for m in plugin.masks:
            m.add_task(t)
            m.finish_task(t)
    model.eval()
    x = torch.randn(6, 1, 28, 28)
    tasks = torch.tensor([0, 1, 1, 0, 1, 0])
    with torch.no_grad():
        mixed = model(x, tasks)
        for t in (0, 1):
            sel = tasks == t
            assert torch.allclose(mixed[sel], model(x[sel], t), atol=1e-5)
        assert not torch.allclose(model(x, 0), model(x, 1))


def test_an_attention_class_without_a_maskable_version_is_an_error_not_a_shift():
    """MEAT's per-layer token masks belong to blocks; an unknown attention layer in one block
    must not let the next block's mask land on it."""
    backbone = create_backbone("vit_nano")

    class OwnAttention(torch.nn.Module):
        def forward(self, x):
            return x

    backbone.blocks[0].attn = OwnAttention()
    with pytest.raises(TypeError, match="block 0: attention class OwnAttention has no maskable"):
        MEATPlugin().install(MultiTaskViT(backbone))
