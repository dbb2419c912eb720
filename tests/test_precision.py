"""bf16 autocast for every strategy: the computation runs in bf16, while parameters (masks,
gates, scores included), gradients and optimizer state stay fp32 and losses are fp32.

The agreement with fp32 is bounded where bf16 arithmetic acts, on the features, by what that
arithmetic allows at the backbone's depth (:func:`bf16_relative_bound`); the heads run in fp32,
so their logits are checked to be exactly the fp32 head on those features. (A bound on the
logits relative to their largest value would depend on the head: a folded standardized head,
W / sigma, amplifies the features' rounding by 1 / sigma, differently for every strategy and
seed.) `make test` runs this file a second time with oneDNN capped below the bf16 instructions
(ONEDNN_MAX_CPU_ISA=AVX512_CORE), so CPUs with and without AVX512-BF16/AMX are both exercised."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from avalanche.core import SupervisedPlugin
from conftest import fitting_hparams

from benchmarks.measure.stepperf import synthetic_stream
from models import anatomy
from models.anatomy import block_linears
from models.factory import create_backbone
from strategies import STRATEGIES, get_strategy
from strategies.registry import TrainSettings

BF16_UNIT_ROUNDOFF = 2.0 ** -8  # 8 significand bits (7 stored): relative rounding error <= u


def bf16_relative_bound(depth: int) -> float:
    """A first-order bound on the relative error of the pooled features under bf16 autocast:
    each result rounded to bf16 carries a relative error <= u, and along the residual stream a
    pre-norm block rounds at most 8 results (qkv, q k^T, attention x v, proj, the residual add;
    fc1, fc2, the residual add) — plus the patch embedding and the final norm. Rounding errors
    add (at worst linearly), and the LayerNorms keep every sub-layer's input at unit scale, so
    the bound is (8 depth + 2) u; a cast that is missing or wrong (a prompt or a mask dropped
    under autocast) moves the features by O(1)."""
    return (8 * depth + 2) * BF16_UNIT_ROUNDOFF


class Seen(SupervisedPlugin):
    """dtypes of the model outputs and losses the strategy's training steps saw."""

    def __init__(self):
        super().__init__()
        self.outputs, self.losses, self.finite = set(), set(), True

    def after_training_iteration(self, strategy, **kwargs):
        self.outputs.add(strategy.mb_output.dtype)
        self.losses.add(strategy.loss.dtype)
        self.finite &= bool(torch.isfinite(strategy.loss).all())


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_bf16_training_keeps_fp32_state(name):
    bench = synthetic_stream((1, 28, 28), (16, 16), 8, n_classes=3).to_benchmark()
    info = get_strategy(name)
    seen = Seen()
    settings = TrainSettings(epochs=1, batch_size=8, head_init="random", precision="bf16",
                             plugins=[seen])
    strategy = info.build(create_backbone("vit_nano"), fitting_hparams(name, "vit_nano"),
                          settings)
    for exp in bench.train_stream:
        strategy.train(exp)
    assert seen.outputs == {torch.float32} and seen.losses == {torch.float32}
    assert seen.finite
    assert all(p.dtype == torch.float32 for p in strategy.model.parameters())
    assert all(v.dtype in (torch.float32, torch.int64) or not v.is_floating_point()
               for state in strategy.optimizer.state.values() for v in state.values()
               if isinstance(v, torch.Tensor))
    model = strategy.model.eval()
    x = torch.rand(8, 1, 28, 28)
    linear_dtypes = set()
    backbone = model.backbone_for(1)
    qkv = block_linears(backbone)[0]
    qkv.register_forward_hook(lambda m, args, out: linear_dtypes.add(out.dtype))
    with torch.inference_mode():
        full = model.features(x, 1)
        linear_dtypes.clear()
        with strategy.autocast():
            half = model.features(x, 1)
            logits = model(x, 1)
    # autocast is on: the backbone ran in bf16 (a prompt pool's query pass too)
    assert torch.bfloat16 in linear_dtypes
    bound = bf16_relative_bound(len(anatomy.blocks(backbone)))
    error = (half.float() - full).norm(dim=-1) / full.norm(dim=-1)
    assert error.max() <= bound, f"relative feature error {error.max():.4f} > {bound:.4f}"
    # the heads run in fp32 on the bf16 features (MultiTaskViT.logits): the same numbers as the
    # head applied to those features outside autocast
    assert logits.dtype == torch.float32
    with torch.inference_mode():
        torch.testing.assert_close(logits, model.logits(1, half.float()))


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        get_strategy("finetune").build(create_backbone("vit_nano"),
                                       dict(STRATEGIES["finetune"].hparams),
                                       TrainSettings(precision="fp16"))


@pytest.mark.parametrize("tf32", [True, False])
def test_cuda_runs_set_tf32_as_configured(tf32):
    from benchmarks.prepare import set_tf32

    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (matmul.allow_tf32, cudnn.allow_tf32)
    try:
        matmul.allow_tf32 = cudnn.allow_tf32 = not tf32
        set_tf32(SimpleNamespace(device="cpu", tf32=tf32))  # a CPU run leaves the flags alone
        assert matmul.allow_tf32 is (not tf32)
        set_tf32(SimpleNamespace(device="cuda", tf32=tf32))
        assert matmul.allow_tf32 is tf32 and cudnn.allow_tf32 is tf32
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = before
