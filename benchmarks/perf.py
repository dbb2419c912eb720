"""Speed of mask strategies relative to the plain backbone, measured side by side in one run.

    python -m benchmarks.perf [--backbone vit_micro] [--batch 64] [--eval-batch 512]
                              [--repeats 20] [--device cpu]

Training step: forward + backward + optimizer step on one batch (plain = full fine-tuning of the
timm backbone with a linear head). Evaluation: images/s of a forward pass under
``torch.inference_mode``. Medians over ``repeats`` timed runs after warm-up. Prints a table with
each number's ratio to the plain backbone. A script, not a test: timings on shared machines are
noisy.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from models.factory import create_backbone
from models.multitask import MultiTaskViT
from strategies.meat import MEATPlugin


class _Exp:
    def __init__(self, task: int, n_classes: int):
        self.task_labels = [task]
        self.task_label = task
        self.classes_in_this_experience = list(range(n_classes))


def median_time(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def plain_model(backbone: str, n_classes: int, device) -> MultiTaskViT:
    model = MultiTaskViT(create_backbone(backbone)).to(device).train()
    model.adaptation(_Exp(0, n_classes))
    return model


def meat_model(backbone: str, n_classes: int, device) -> tuple[MultiTaskViT, MEATPlugin]:
    model = plain_model(backbone, n_classes, device)
    plugin = MEATPlugin(init="paper")  # ~half of the entries dropped: a realistic mask
    plugin.install(model)
    for m in plugin.masks:
        m.add_task(0, device)
    return model, plugin


def train_step_time(model, x, y, repeats: int) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    model.train()

    def step():
        loss = nn.functional.cross_entropy(model(x, 0), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return median_time(step, repeats)


def eval_throughput(model, x, repeats: int) -> float:
    model.eval()

    @torch.inference_mode()
    def forward():
        model(x, 0)

    return len(x) / median_time(forward, repeats)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbone", default="vit_micro")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--eval-batch", type=int, default=512)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    probe = create_backbone(args.backbone)
    shape = (probe.patch_embed.proj.in_channels, *probe.patch_embed.img_size)
    x = torch.rand(args.batch, *shape, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    xe = torch.rand(args.eval_batch, *shape, device=device)

    rows = []
    plain = plain_model(args.backbone, 10, device)
    base_step = train_step_time(plain, x, y, args.repeats)
    base_eval = eval_throughput(plain, xe, args.repeats)
    rows.append(("plain (fine-tune)", base_step, base_eval))
    model, plugin = meat_model(args.backbone, 10, device)
    rows.append(("meat", train_step_time(model, x, y, args.repeats), None))
    for m in plugin.masks:
        m.finish_task(0)
    rows[-1] = ("meat", rows[-1][1], eval_throughput(model, xe, args.repeats))

    print(f"backbone {args.backbone}, batch {args.batch} (train) / {args.eval_batch} (eval), "
          f"device {device}, median of {args.repeats}")
    print(f"{'strategy':<20}{'train step ms':>14}{'x plain':>9}{'eval img/s':>12}{'x plain':>9}")
    for name, step, thr in rows:
        print(f"{name:<20}{1000 * step:>14.1f}{step / base_step:>9.2f}{thr:>12.0f}"
              f"{thr / base_eval:>9.2f}")


if __name__ == "__main__":
    main()
