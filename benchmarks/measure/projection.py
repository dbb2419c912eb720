"""The projection of the whole ``--suite paper`` on a GPU, computed, not measured
(:func:`projection`): the suite's runs on the paper's backbones (:func:`paper_configs`), the
images each run puts through the backbone (:func:`run_images`) times the counted FLOPs
(``benchmarks.measure.flops``), turned into GPU hours by measured throughputs where there are
some, else by an assumed sustained rate (:data:`ASSUMED_TFLOPS`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from benchmarks.measure.dataperf import PAPER_SPLITS

# the paper's three backbones (configs/paper.yaml: its own, then the two given by --backbone)
PAPER_BACKBONES = ("deit_tiny_patch16_224", "deit_small_patch16_224", "t2t_vit_12")
# Sustained bf16 rates assumed when no throughput was measured: eager PyTorch training of ViTs
# at width 192-384 keeps an H100 (989 TFLOPS dense bf16 peak) at roughly 50-130 TFLOPS (small
# matmuls, elementwise kernels, launch overhead). An assumption, replaced by `make gpu-check`.
ASSUMED_TFLOPS = (50.0, 130.0)


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
    ``benchmarks.measure.flops.counted_flops`` row; ``plain_eval[backbone]``: forward FLOPs of
    the plain backbone. Hours at each assumed sustained rate in ``tflops`` = FLOPs / rate; from
    measurements, where ``measured[(backbone, strategy)]`` has training and evaluation images/s
    and ``measured[(backbone, "plain")]`` the reference forward's: training images / train
    img/s + forwards / eval img/s, plus per (backbone, seed) the reference forwards x the plain
    forward's FLOPs / plain eval img/s (one run computes them, the sweep's cache serves the
    rest). Images per run: :func:`run_images` over the paper datasets' splits."""
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
