"""bf16 vs fp32 in training, per strategy (:func:`agreement`): a few fp32 training steps on
random images, then on the last step's batch, in training mode with the same random draws, the
task loss and the gradient of every trainable parameter in fp32 and under bf16 autocast
(:func:`compare_precisions`: relative loss difference, gradient cosine), next to first-order
bounds from bf16's unit roundoff (:func:`bf16_bounds`); and the finished task's evaluation
logits both ways.
"""

from __future__ import annotations

import math

import torch
from avalanche.core import SupervisedPlugin

from benchmarks.measure.stepperf import image_shape, synthetic_stream

U_BF16 = 2.0 ** -8  # unit roundoff of bfloat16: 8 significand bits (7 stored)


def chained_products(backbone: torch.nn.Module) -> int:
    """Products in bf16 on the longest path from image to features: six per block (qkv, qkᵀ,
    attention·v, proj, fc1, fc2) and the patch embedding (one convolution; T2T-ViT: per
    Performer layer kqv, the features, kᵀv, q(kᵀv), proj and two MLP linears, then the
    projection). The heads compute in fp32 (``models.multitask.MultiTaskViT.logits``)."""
    from models import anatomy
    from models.t2t import TokensToToken

    embed = 15 if isinstance(backbone.patch_embed, TokensToToken) else 1
    return 6 * len(anatomy.blocks(backbone)) + embed


def bf16_bounds(products: int, max_logit: float, loss: float) -> dict:
    """First-order worst-case differences between bf16 autocast (fp32 accumulation) and fp32
    along a chain of ``products`` matmuls: each rounds its two operands by at most u = 2^-8, so
    the logits z move by at most 2ku relative, i.e. by 2ku max|z|; cross-entropy is 2-Lipschitz
    in max-norm (its gradient p - onehot has 1-norm <= 2), so the loss moves by at most
    4ku max|z| (``loss_rel``: over ``loss``); the backward chains as many products again, so a
    gradient moves by at most e = 4ku relative and its cosine with the fp32 one is at least
    sqrt(1 - e²) (0 once e >= 1: the bound says nothing)."""
    e = 4 * products * U_BF16
    return {"loss_rel": e * max_logit / loss, "grad_rel": e,
            "cosine": math.sqrt(1 - e * e) if e < 1 else 0.0}


def compare_precisions(strategy, seed: int = 0) -> dict:
    """On the strategy's current batch, in training mode: the task loss (cross-entropy through
    the strategy's forward; plugins' penalties left out) and the gradients of the trainable
    parameters, in fp32 and under bf16 autocast, with the same random draws (masks, dropout).
    The RNG and the gradients are left as found, the precision setting restored."""
    model, device = strategy.model, strategy.device
    params = [p for p in model.parameters() if p.requires_grad]
    saved, precision = [p.grad for p in params], strategy.precision
    out = {}
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for name in ("fp32", "bf16"):
            strategy.precision = name
            torch.manual_seed(seed)
            for p in params:
                p.grad = None
            logits = strategy.forward()
            loss = torch.nn.functional.cross_entropy(logits, strategy.mb_y)
            loss.backward()
            out[name] = (loss.item(), logits.detach().abs().max().item(), torch.cat(
                [(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                 for p in params]))
    strategy.precision = precision
    for p, g in zip(params, saved, strict=True):
        p.grad = g
    (l32, z32, g32), (l16, _, g16) = out["fp32"], out["bf16"]
    return {"loss_fp32": l32, "loss_bf16": l16, "loss_rel_diff": abs(l16 - l32) / abs(l32),
            "grad_cosine": float(torch.nn.functional.cosine_similarity(g32, g16, dim=0)),
            "grad_rel_diff": float((g16 - g32).norm() / g32.norm()), "max_logit": z32}


class ComparePrecisions(SupervisedPlugin):
    """Runs :func:`compare_precisions` after training step ``step`` (counted from 1)."""

    def __init__(self, step: int):
        super().__init__()
        self.step, self.seen, self.result = step, 0, None

    def after_training_iteration(self, strategy, **kwargs):
        self.seen += 1
        if self.seen == self.step:
            self.result = compare_precisions(strategy)


def agreement(backbone: str, name: str, device: str = "cpu", batch: int = 8,
              steps: int = 3) -> dict:
    """bf16 vs fp32 for ``name`` on ``backbone`` (random weights, random images, random heads):
    ``steps`` fp32 training steps of one task, the last one's batch compared in training mode
    (:func:`compare_precisions`, with :func:`bf16_bounds`); then, the task finished, the
    evaluation logits of a batch of random images with and without autocast: largest
    difference over the largest logit, and the share of equal predictions."""
    from models.factory import create_backbone
    from strategies import get_strategy
    from strategies.registry import TrainSettings

    shape = image_shape(backbone)
    bench = synthetic_stream(shape, (batch * steps,), batch).to_benchmark()
    check = ComparePrecisions(steps)
    info = get_strategy(name)
    settings = TrainSettings(epochs=1, batch_size=batch, device=device, head_init="random",
                             plugins=[check])
    net = create_backbone(backbone)
    strategy = info.build(net, dict(info.hparams), settings)
    strategy.train(bench.train_stream[0])
    row = {"backbone": backbone, "strategy": name, **check.result}
    row["bounds"] = bf16_bounds(chained_products(net), row["max_logit"], row["loss_fp32"])
    model = strategy.model.eval()
    x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.inference_mode():
        full = model(x, 0).float()
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            half = model(x, 0).float()
    row["eval_rel_max_diff"] = float((full - half).abs().max() / full.abs().max().clamp_min(1e-6))
    row["eval_same_prediction"] = float((full.argmax(1) == half.argmax(1)).float().mean())
    return row
