"""The GPU check: what the paper suite costs on this machine's GPU, and whether it is correct there.

    python -m benchmarks.measure.gpucheck [--out results] [--budget-s 540]
                                          (what `make gpu-check` runs)
    python -m benchmarks.measure.gpucheck --projection-only --device cpu
                                          (no GPU: the projection only)

Writes ``<out>/gpu.md`` (and ``gpu.json``) with:

1. **SIGKILL and resume on CUDA**: the paper-mini pipeline (generated data) for MEAT, killed
   after its second task and run again; the resumed run must say where it resumed (the runner's
   line, :func:`resumed_at`) and finish with the first tasks' rows as they were; both runs use
   ``--deterministic``, so its accuracy matrix must equal an uninterrupted run's bit for bit
   (without it CUDA runs agree only up to their run-to-run spread: ``docs/sweeps.md``).
2. **bf16 vs fp32 in training** per strategy (:func:`agreement`): a few fp32 training steps on
   random images, then on the last step's batch, in training mode with the same random draws,
   the task loss and the gradient of every trainable parameter in fp32 and under bf16 autocast
   (relative loss difference, gradient cosine), next to first-order bounds from bf16's unit
   roundoff (:func:`bf16_bounds`); and the finished task's evaluation logits both ways.
3. **FLOPs counted** per training image and per evaluation image of every strategy on every
   backbone (:func:`counted_flops`), next to the backbone's forward FLOPs (:func:`forward_macs`).
4. **Training throughput** (images/s of training steps, median after warm-up, bf16, drawn masks
   at the paper's keep rates as in ``benchmarks.measure.perf``) and **peak memory** per strategy for
   DeiT-Ti, DeiT-S and T2T-ViT-12 next to plain fine-tuning, each measured after garbage
   collection and a reset of the CUDA allocator's peak (:func:`release_memory`).
5. **Projection** of the whole ``--suite paper`` (:func:`projection`): every run's training
   images and fixed forward passes (:func:`run_images`) times the counted FLOPs, turned into GPU
   hours by the measured throughputs where there are some, else by an assumed sustained rate
   (:data:`ASSUMED_TFLOPS`, stated in the report). Labelled as a projection.

The resume check, the agreement and the FLOP counts run first; throughput measurements stop when
``--budget-s`` is spent (what was measured is written). With ``--device cpu`` and small settings
it runs anywhere (the test suite runs it so, on a tiny backbone); throughputs are only meaningful
on the GPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from avalanche.core import SupervisedPlugin
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.measure import perf
from benchmarks.measure.dataperf import PAPER_SPLITS

ROOT = Path(__file__).resolve().parent.parent
# the paper's three backbones (configs/paper.yaml: its own, then the two given by --backbone)
PAPER_BACKBONES = ("deit_tiny_patch16_224", "deit_small_patch16_224", "t2t_vit_12")
U_BF16 = 2.0 ** -8  # unit roundoff of bfloat16: 8 significand bits (7 stored)
# Sustained bf16 rates assumed when no throughput was measured: eager PyTorch training of ViTs
# at width 192-384 keeps an H100 (989 TFLOPS dense bf16 peak) at roughly 50-130 TFLOPS (small
# matmuls, elementwise kernels, launch overhead). An assumption, replaced by `make gpu-check`.
ASSUMED_TFLOPS = (50.0, 130.0)

# the runner's progress lines (benchmarks.runner.Run.resume and Run.save)
RESUME_LINE = re.compile(r"resuming at task (\d+)/(\d+)")
DONE_LINE = re.compile(r"task (\d+)/(\d+) done")


def resumed_at(text: str) -> tuple[int, int] | None:
    """(N, T) of the runner's ``resuming at task N/T`` line in ``text`` (N: the first task it
    trains again, 1-based), or None when the run did not resume."""
    m = RESUME_LINE.search(text)
    return (int(m[1]), int(m[2])) if m else None


# ----------------------------------------------------------------------------- FLOPs
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

    shape = perf.image_shape(backbone)
    bench = perf.synthetic_stream(shape, (batch, batch), batch).to_benchmark()
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


# ----------------------------------------------------------------------------- images
def validation_count(n: int, fraction: float) -> int:
    """Images a task's training split holds out for validation: ceil(fraction x n), sklearn's
    rounding of a float ``test_size`` (``benchmarks.data.datasets.stratified_split``)."""
    return math.ceil(fraction * n)


@dataclass(frozen=True)
class RunImages:
    """Images through the backbone in one run. ``train``: training images (forward and backward);
    ``forwards``: evaluation-mode forwards of the strategy's model; ``reference``: forwards of
    the random reference backbone (``strategies.heads``: its probe's features), made by the
    first run of a (backbone, seed) only: the sweep's feature cache serves the others."""

    train: int
    forwards: int
    reference: int


def run_images(splits: dict[str, tuple[int, int]], epochs: int, val_fraction: float) -> RunImages:
    """Per task with training split n (n - v images trained on, v = :func:`validation_count`)
    and test split t: ``epochs`` x (n - v) training images; forwards of the probe's features of
    the training, validation and test images (n + t) on the run's backbone and as many on the
    reference backbone (``strategies.heads.ProbeHeadPlugin``); one pass over the training images
    after training (n - v, ``strategies.common.ContinualTemplate.final_pass``: the head's
    calibration and the training accuracy); and the evaluation of every task so far (the test
    splits up to this one). ``epochs`` = 0 for a strategy that takes no training step. (A
    strategy whose backbone is still the starting one at a task's start, e.g. ``classifier``,
    also reads its probe's features from the cache: counted here as computed.)"""
    train = forwards = reference = seen_test = 0
    for n, t in splits.values():
        fit = n - validation_count(n, val_fraction)
        seen_test += t
        train += epochs * fit
        reference += n + t
        forwards += n + t + fit + seen_test
    return RunImages(train, forwards, reference)


def paper_configs(backbones=PAPER_BACKBONES, strategies: list[str] | None = None) -> list:
    """The resolved run configs of ``--suite paper`` on each backbone (``--backbone B``), in the
    suite's order; only ``strategies`` when given. Each has the suite's seeds."""
    from benchmarks.suitefile import load_suite
    from benchmarks.suites import expand

    suite = load_suite("paper")
    return [c for b in backbones for c in expand({**suite, "backbone": b})
            if strategies is None or c.strategy in strategies]


def run_flops(images: RunImages, cost: dict) -> float:
    """FLOPs of one run: training images x counted training FLOPs, the strategy's forwards x
    its counted evaluation FLOPs (the shared reference is counted per (backbone, seed))."""
    return images.train * cost["train"] + images.forwards * cost["eval"]


def projection(configs: list, costs: dict, plain_eval: dict, measured: dict | None = None,
               tflops=ASSUMED_TFLOPS) -> dict:
    """GPU hours of ``configs`` (the paper suite's runs). ``costs[(backbone, strategy)]``: the
    :func:`counted_flops` row; ``plain_eval[backbone]``: forward FLOPs of the plain backbone.
    Hours at each assumed sustained rate in ``tflops`` = FLOPs / rate; from measurements, where
    ``measured[(backbone, strategy)]`` has training and evaluation images/s and ``measured[
    (backbone, "plain")]`` the reference forward's: training images / train img/s + forwards /
    eval img/s, plus per (backbone, seed) the reference forwards x the plain forward's FLOPs /
    plain eval img/s (one run computes them, the sweep's cache serves the rest). Images per
    run: :func:`run_images` over the paper datasets' splits."""
    measured = measured or {}
    pairs: dict = {}
    reference = {"pflop": 0.0, "measured_hours": 0.0}
    for c in sorted({(c.backbone, c.seed): c for c in configs}.values(),
                    key=lambda c: (c.backbone, c.seed)):
        images = run_images(PAPER_SPLITS, c.epochs, c.val_fraction).reference
        reference["pflop"] += images * plain_eval[c.backbone] / 1e15
        plain = measured.get((c.backbone, "plain"))
        if plain is not None:
            reference["measured_hours"] += images / plain["eval_img_s"] / 3600
    for c in configs:
        key = (c.backbone, c.strategy)
        if key not in pairs:
            cost = costs[key]
            images = run_images(PAPER_SPLITS, c.epochs if cost["trains"] else 0, c.val_fraction)
            flops = run_flops(images, cost)
            row = {"backbone": c.backbone, "strategy": c.strategy, "runs": 0,
                   "train_images": images.train, "forwards": images.forwards,
                   "pflop_per_run": flops / 1e15,
                   "assumed_hours_per_run": [flops / (t * 1e12) / 3600 for t in tflops]}
            rate = measured.get(key)
            if rate is not None:
                row["measured_hours_per_run"] = (images.train / rate["train_img_s"]
                                                 + images.forwards / rate["eval_img_s"]) / 3600
            pairs[key] = row
        pairs[key]["runs"] += 1
    rows = list(pairs.values())
    pflop = reference["pflop"] + sum(r["runs"] * r["pflop_per_run"] for r in rows)
    out = {"runs": sum(r["runs"] for r in rows), "rows": rows, "tflops": list(tflops),
           "reference_pflop": reference["pflop"], "pflop": pflop,
           "assumed_hours": [pflop * 1e15 / (t * 1e12) / 3600 for t in tflops]}
    first = configs[0]  # the suite's runs share epochs and validation fraction
    out["images"] = {"trains": asdict(run_images(PAPER_SPLITS, first.epochs, first.val_fraction)),
                     "no_steps": asdict(run_images(PAPER_SPLITS, 0, first.val_fraction))}
    done = [r for r in rows if "measured_hours_per_run" in r]
    out["measured_runs"] = sum(r["runs"] for r in done)
    out["measured_hours"] = sum(r["runs"] * r["measured_hours_per_run"] for r in done) + (
        reference["measured_hours"] if done else 0.0)
    return out


# ----------------------------------------------------------------------------- bf16
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

    shape = perf.image_shape(backbone)
    bench = perf.synthetic_stream(shape, (batch * steps,), batch).to_benchmark()
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


# ----------------------------------------------------------------------------- checks
def release_memory(device: str) -> None:
    """Free what earlier measurements left (Avalanche templates hold reference cycles, so their
    CUDA tensors wait for the cycle collector) and restart the CUDA allocator's peak, so a
    strategy's peak is its own."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def kill_and_resume(device: str, work: Path) -> dict:
    """MEAT on the paper-mini pipeline: killed after task 2, resumed; vs uninterrupted."""
    from benchmarks.data.synthetic import write_paper_layouts, write_random_checkpoint
    from results.records import find_records

    data = write_paper_layouts(work / "data", classes=2, train=4, test=2)
    ckpt = write_random_checkpoint(work / "deit_tiny.pth")
    base = [sys.executable, str(ROOT / "run_benchmark.py"), "--suite", "paper-mini",
            "--strategies", "meat", "--data-root", str(data), "--pretrained", str(ckpt),
            "--device", device, "--cache", str(work / "cache"), "--quiet", "--deterministic"]
    killed = work / "killed"
    proc = subprocess.Popen([*base, "--out", str(killed)], stderr=subprocess.PIPE, text=True)
    rows_before, tasks = None, None
    for line in proc.stderr:
        done = DONE_LINE.search(line)
        if done and int(done[1]) == 2:
            proc.send_signal(signal.SIGKILL)
            tasks = int(done[2])
            break
    proc.wait()
    record = next(killed.glob("*/record.json"), None)
    if record is not None:
        rows_before = json.loads(record.read_text())["acc_matrix"][:2]
    resumed = subprocess.run([*base, "--out", str(killed)], capture_output=True, text=True)
    straight = subprocess.run([*base, "--out", str(work / "straight")], capture_output=True,
                              text=True)
    at = resumed_at(resumed.stderr)
    out = {"killed_after_task": 2, "resumed_exit": resumed.returncode,
           "resumed_at": None if at is None else f"{at[0]}/{at[1]}",
           "resumed_at_task_3": at == (3, tasks),
           "uninterrupted_exit": straight.returncode}
    if resumed.returncode == 0 and straight.returncode == 0:
        a = find_records([killed])[0]["acc_matrix"]
        b = find_records([work / "straight"])[0]["acc_matrix"]
        out.update(first_rows_kept=a[:2] == rows_before, same_matrix=a == b,
                   max_matrix_diff=max(abs(x - y) for ra, rb in zip(a, b, strict=True)
                                       for x, y in zip(ra, rb, strict=True)
                                       if x is not None and y is not None))
    return out


# ----------------------------------------------------------------------------- report
def projection_lines(proj: dict, costs: dict, plain_eval: dict) -> list[str]:
    """The projection section of gpu.md: its assumptions, FLOPs, images and hours."""
    rates = " and ".join(f"{t:g}" for t in proj["tflops"])
    trains, fixed = proj["images"]["trains"], proj["images"]["no_steps"]
    lines = ["## Projection of `--suite paper` (computed, not measured)", "",
             f"{proj['runs']} runs: every (backbone, strategy) of the table below x its seeds. "
             "Per run, on the six paper datasets' splits "
             "(`benchmarks.measure.dataperf.PAPER_SPLITS`): "
             f"training images = epochs x (training split - validation), {trains['train']:,} "
             "for a strategy that trains (the validation images are never trained on); fixed "
             "forward passes of the strategy's model: the probe's features of training, "
             "validation and test images, one pass over the trained-on images after training "
             "(the head's calibration and the training accuracy), the evaluation of every "
             f"task so far after each task ({trains['forwards']:,}; {fixed['forwards']:,} "
             "without training steps); and the probe's features on the random reference "
             f"backbone ({trains['reference']:,}), once per (backbone, seed): the sweep's "
             "feature cache serves the other runs "
             f"({proj['reference_pflop']:,.1f} PFLOP in all). `classifier` takes no training "
             "step (its "
             "head is the converged probe): its backbone passes are the fixed ones. FLOPs per "
             "image are counted (training: one step of the second "
             "task, forward + every loss + backward; evaluation: one forward), attention "
             "included; normalizations, softmax and activations are not counted.", "",
             "| backbone | forward GFLOP | strategy | train GFLOP/image | eval GFLOP/image | "
             "runs | PFLOP/run | " + " | ".join(f"h/run at {t:g} TFLOPS (assumed)"
                                               for t in proj["tflops"])
             + " | h/run from measured img/s |",
             "|---|---|---|---|---|---|---|" + "---|" * len(proj["tflops"]) + "---|"]
    for r in proj["rows"]:
        cost = costs[(r["backbone"], r["strategy"])]
        measured = r.get("measured_hours_per_run")
        lines.append(
            f"| {r['backbone']} | {plain_eval[r['backbone']] / 1e9:.2f} | {r['strategy']} | "
            f"{cost['train'] / 1e9:.2f} | {cost['eval'] / 1e9:.2f} | {r['runs']} | "
            f"{r['pflop_per_run']:.1f} | "
            + " | ".join(f"{h:.2f}" for h in r["assumed_hours_per_run"])
            + f" | {'' if measured is None else f'{measured:.2f}'} |")
    hours = " and ".join(f"{h:.0f}" for h in proj["assumed_hours"])
    lines += ["", f"**Suite: {proj['runs']} runs, {proj['pflop']:,.0f} PFLOP: {hours} GPU hours "
              f"at an assumed sustained {rates} TFLOPS** (a projection: no rate assumed here "
              "was measured)."]
    if proj["measured_runs"]:
        lines.append(f"From the measured throughputs above: {proj['measured_hours']:.1f} GPU "
                     f"hours for the {proj['measured_runs']} of {proj['runs']} runs whose "
                     "(backbone, strategy) was measured (synthetic inputs, no data loading).")
    return [*lines, ""]


def markdown(env: dict, agree: list, throughput: list, resume: dict | None, proj: dict,
             costs: dict, plain_eval: dict) -> str:
    lines = ["# GPU check (`make gpu-check`)", "",
             f"Device: {env['device']}; torch {env['torch']}; {env['date']}; "
             f"{env['seconds']:.0f} s.", ""]
    if not (agree or throughput or resume):
        lines += ["**Nothing was measured on a GPU here** (`--projection-only`): the FLOPs "
                  "below are counted, the hours assume the stated rates. `make gpu-check` on a "
                  "GPU machine replaces this file with measurements.", ""]
    if agree:
        lines += ["## bf16 vs fp32 (random weights and images, a few fp32 training steps)", "",
                  "Training mode, the last step's batch, same random draws: task loss and the "
                  "gradient of every trainable parameter under bf16 autocast vs fp32; bounds: "
                  "first-order worst case from bf16's unit roundoff 2^-8 (0 = the bound says "
                  "nothing at this depth). Evaluation: the finished task's logits.", "",
                  "| backbone | strategy | loss rel. diff | bound | grad rel. diff | bound | "
                  "grad cosine | bound | eval max logit diff / max logit | eval same "
                  "prediction % |", "|---|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {a['backbone']} | {a['strategy']} | {a['loss_rel_diff']:.2e} | "
                  f"{a['bounds']['loss_rel']:.2e} | {a['grad_rel_diff']:.2e} | "
                  f"{a['bounds']['grad_rel']:.2e} | {a['grad_cosine']:.5f} | "
                  f"{a['bounds']['cosine']:.3f} | {a['eval_rel_max_diff']:.2e} | "
                  f"{100 * a['eval_same_prediction']:.1f} |" for a in agree]
        lines.append("")
    if throughput:
        lines += [f"## Training throughput (batch {env['batch']}, {env['precision']}, drawn "
                  "masks: tokens and weights kept at the paper's rates)", "",
                  "Peak memory: `max_memory_allocated` over the strategy's training steps, "
                  "after garbage collection, `empty_cache` and a reset of the peak.", "",
                  "Next to plain fine-tuning measured in the same process: the training step's "
                  "ratio, and the passes outside training (the probe's features on the "
                  "strategy's backbone and a random reference, the end-of-task pass; "
                  "`benchmarks.measure.perf`) in ms per image and over the plain step's time per "
                  "image (a forward-only pass at the device's speed is about 1/3).", "",
                  "| backbone | strategy | train img/s | x plain step | eval img/s | "
                  "outside training ms/img | x plain step/img | peak GiB |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in throughput:
            plain_per_img = r["plain_train_step_ms"] / r["batch"]
            fixed = (f"{r['fixed_ms_per_img']:.4f} | "
                     f"{r['fixed_ms_per_img'] / plain_per_img:.2f}"
                     if "fixed_ms_per_img" in r else " | ")
            lines.append(f"| {r['backbone']} | {r['strategy']} | "
                         f"{r['batch'] / (r['train_step_ms'] / 1e3):.0f} | "
                         f"{r['train_step_ms'] / r['plain_train_step_ms']:.2f} | "
                         f"{r['eval_img_s']:.0f} | {fixed} | {r['peak_mib'] / 1024:.2f} |")
        lines.append("")
    if resume is not None:
        lines += ["## SIGKILL and resume on this device", ""]
        lines += [*(f"- {k}: {v}" for k, v in resume.items()), ""]
    return "\n".join(lines + projection_lines(proj, costs, plain_eval))


def main(argv=None) -> int:
    from models.factory import create_backbone
    from strategies import STRATEGIES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "results")
    p.add_argument("--device", default="cuda")
    p.add_argument("--backbones", default=",".join(PAPER_BACKBONES),
                   help="measured and projected (the paper suite run on each)")
    p.add_argument("--strategies", default="all")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--agreement-batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--budget-s", type=float, default=540)
    p.add_argument("--no-resume", action="store_true", help="skip the kill-and-resume check")
    p.add_argument("--projection-only", action="store_true",
                   help="count FLOPs and project at the assumed rates; measure nothing")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("no CUDA device here: run this on a GPU machine (or pass --device cpu)")
    start = time.time()
    names = list(STRATEGIES) if args.strategies == "all" else args.strategies.split(",")
    backbones = args.backbones.split(",")
    configs = paper_configs(backbones, names)
    opts = {"device": args.device, "batch": args.batch, "eval_batch": args.batch,
            "repeats": args.repeats, "eval_repeats": args.repeats, "warmup": 3, "threads": 0,
            "keep_tokens": perf.KEEP_TOKENS, "keep_weights": perf.KEEP_WEIGHTS,
            "precision": args.precision}
    left = lambda: args.budget_s - (time.time() - start)  # noqa: E731
    resume, agree, throughput = None, [], []
    measure = not args.projection_only
    if measure and not args.no_resume:  # correctness first; throughputs fill the budget
        with tempfile.TemporaryDirectory() as tmp:
            resume = kill_and_resume(args.device, Path(tmp))
    if measure:  # every strategy on the first backbone; fine-tuning on the others
        agree = [agreement(b, n, args.device, args.agreement_batch)
                 for b in backbones for n in (names if b == backbones[0] else ["finetune"])]
    plain_eval = {b: 2 * forward_macs(create_backbone(b)) for b in backbones}
    heads = {(c.backbone, c.strategy): c.head_init for c in configs}
    costs = {k: counted_flops(*k, args.device, head_init=h) for k, h in heads.items()}
    for name in ["plain", *names] if measure else []:  # every backbone before the next strategy
        for backbone in backbones:
            if left() < 0:
                break
            release_memory(args.device)
            row = (perf.measure_plain(backbone, opts) if name == "plain"
                   else perf.measure_strategy(backbone, name, opts))
            throughput.append({**row, "backbone": backbone, "batch": args.batch})
            print(json.dumps(throughput[-1]), flush=True)
    measured = {(r["backbone"], r["strategy"]): {
        "train_img_s": r["batch"] / (r["train_step_ms"] / 1e3), "eval_img_s": r["eval_img_s"]}
        for r in throughput}
    proj = projection(configs, costs, plain_eval, measured)
    device = (torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU")
    env = {"device": device, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
           "seconds": time.time() - start, "batch": args.batch, "precision": args.precision}
    text = markdown(env, agree, throughput, resume, proj, costs, plain_eval)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.md").write_text(text)
    (args.out / "gpu.json").write_text(json.dumps(
        {"env": env, "agreement": agree, "throughput": throughput, "resume": resume,
         "flops": list(costs.values()), "forward_flops": plain_eval, "projection": proj},
        indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
