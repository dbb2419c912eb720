"""FLOPs of the paper suite's models: a backbone's forward multiply-accumulates read from its
modules' shapes (:func:`forward_macs`; ViT/DeiT and T2T-ViT), and every strategy's FLOPs per
training and per evaluation image counted by ``torch.utils.flop_counter`` on random images
(:func:`counted_flops`). ``benchmarks.measure.projection`` turns them into GPU hours.
"""

from __future__ import annotations

from contextlib import ExitStack

import torch
from avalanche.core import SupervisedPlugin
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.measure.stepperf import image_shape, synthetic_stream


def block_macs(tokens: int, linears: list[tuple[int, int]], dim: int) -> int:
    """Multiply-accumulates of one transformer block on ``tokens`` tokens: every Linear
    (in x out per token; qkv, proj, fc1, fc2) plus attention, qkᵀ and attention·v, each
    heads x tokens² x head_dim = tokens² x dim."""
    return tokens * sum(i * o for i, o in linears) + 2 * tokens * tokens * dim


def performer_macs(tokens: int, dim_in: int, emb: int, m: int) -> int:
    """Multiply-accumulates of a T2T Performer token layer (``models.t2t.TokenPerformer``) on
    ``tokens`` tokens: kqv (dim_in x 3 emb), the random features of q and k (2 x emb x m), kᵀv
    (m x emb), q(kᵀv) (m x emb), the normalizer (m), proj and the two MLP linears (3 emb²)."""
    return tokens * (dim_in * 3 * emb + 2 * emb * m + 2 * m * emb + m + 3 * emb * emb)


def forward_macs(backbone: torch.nn.Module) -> int:
    """Multiply-accumulates of one image through a ViT/DeiT or T2T-ViT backbone (features, no
    head), read from its modules' shapes: the patch embedding (a convolution with stride =
    kernel; T2T-ViT: two Performer layers on the soft splits and the projection), then every
    block on patches + prefix tokens. Normalizations, softmax and activations are not counted.
    FLOPs = 2 x MACs."""
    from models import anatomy
    from models.t2t import SPLITS, TokensToToken

    embed = backbone.patch_embed
    if isinstance(embed, TokensToToken):
        sides = [embed.img_size[0]]
        for kernel, stride, pad in SPLITS:
            sides.append((sides[-1] + 2 * pad - kernel) // stride + 1)
        macs = sum(performer_macs(side * side, layer.kqv.in_features, layer.emb, layer.m)
                   for side, layer in zip(sides[1:3], (embed.attention1, embed.attention2),
                                          strict=True))
        macs += sides[3] ** 2 * embed.project.in_features * embed.project.out_features
    else:
        conv = embed.proj
        macs = anatomy.num_patches(backbone) * conv.weight[0].numel() * conv.out_channels
    tokens = anatomy.num_patches(backbone) + anatomy.prefix_tokens(backbone)
    for block in anatomy.blocks(backbone):
        attn, (fc1, fc2) = block.attn, anatomy.ffn_pair(block)
        linears = [(m.in_features, m.out_features) for m in (attn.qkv, attn.proj, fc1, fc2)]
        macs += block_macs(tokens, linears, attn.proj.in_features)
    return macs


class CountFlops(SupervisedPlugin):
    """FLOPs of the first training step of experience ``experience`` (forward, every plugin's
    losses, backward, optimizer step), counted by ``torch.utils.flop_counter`` with attention in
    its math form: the fused attention kernels' matmuls are otherwise not seen on the CPU."""

    def __init__(self, experience: int = 1):
        super().__init__()
        self.experience, self.flops, self.stack, self.counter = experience, None, None, None

    def before_training_iteration(self, strategy, **kwargs):
        if strategy.experience.current_experience == self.experience and self.flops is None:
            self.stack = ExitStack()
            self.stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
            self.counter = self.stack.enter_context(FlopCounterMode(display=False))

    def after_training_iteration(self, strategy, **kwargs):
        if self.stack is not None:
            self.stack.close()
            self.stack, self.flops = None, self.counter.get_total_flops()


def counted_flops(backbone: str, name: str, device: str = "cpu", batch: int = 2,
                  head_init: str = "probe") -> dict:
    """FLOPs per image of ``name`` on ``backbone``, counted (:class:`CountFlops`) on random
    images: ``train`` of a training step on the second of two tasks (where every mechanism of
    the strategy is active: LwF's previous model, prompt queries, masks); ``eval`` of the
    finished task's evaluation forward; ``trains``: whether the strategy takes training steps at
    all with ``head_init`` (``classifier`` with probe heads does not: its backbone passes are the
    run's fixed ones). Precision does not change the count."""
    from models.factory import create_backbone
    from strategies import get_strategy
    from strategies.registry import TrainSettings

    shape = image_shape(backbone)
    bench = synthetic_stream(shape, (batch, batch), batch).to_benchmark()
    count = CountFlops()
    info = get_strategy(name)
    settings = TrainSettings(epochs=1, steps_per_task=1, batch_size=batch, eval_batch_size=batch,
                             device=device, head_init=head_init, plugins=[count])
    strategy = info.build(create_backbone(backbone), dict(info.hparams), settings)
    trains = strategy.train_epochs > 0
    for exp in bench.train_stream:
        strategy.train(exp)
    model = strategy.model.eval()
    x = torch.rand(batch, *shape, device=device)
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel([SDPBackend.MATH]):  # not under no_grad: see backbone_card
        model(x, 1)
    return {"backbone": backbone, "strategy": name, "trains": trains,
            "train": count.flops / batch if trains else 0.0,
            "eval": counter.get_total_flops() / batch}
