"""What one measurement of ``python -m benchmarks.measure.perf`` times: a strategy's training
step and evaluation forward next to the plain backbone's, on synthetic images, and the runner's
overhead.

For every backbone, the **plain** reference (:class:`Plain`) is the timm backbone with a linear
head in a plain PyTorch loop: a full fine-tuning step (forward, cross-entropy, backward, AdamW
step) and a forward pass. Every strategy (:func:`measure_strategy`) is built by its registered
builder and trained through Avalanche on two synthetic tasks (:func:`synthetic_stream`); it is
measured on the second task, where everything that makes it a continual-learning method is
active (HAT's gradient masks, LwF's distillation, ...), with masks drawn at trained keep rates
(``benchmarks.measure.drawnmasks``):

- **train step**: from ``before_training_iteration`` to ``after_training_iteration`` (forward,
  losses, backward, every plugin's hooks, optimizer step; data loading excluded);
- **outside training**: the passes a run makes over the measured task's data outside its steps
  (``strategies.features.PassMeter``: the probe's features on the strategy's backbone and on a
  random reference, the end-of-task pass), their images and ms per image;
- **eval**: images/s of ``model(x, task)`` under ``torch.inference_mode`` in eval mode, the
  task's masks finished (bit-packed, folded into the weights once); for mask and gate strategies
  also of the per-task **compacted** model (``models.compact``), with its largest absolute
  difference to the masked dense output;
- **peak memory**: ``benchmarks.measure.timing.Memory`` over the training steps (each
  measurement runs in a fresh process: :func:`measure`).

Times are medians over ``repeats`` training steps and ``eval_repeats`` forwards after
``warmup`` (``benchmarks.measure.timing``), the plain reference measured in the same process
right after the strategy (evaluation forwards interleaved with the strategy's), so the drift
between processes on a shared machine cancels in the ratios. **Runner overhead**
(:func:`runner_overhead`): the ``smoke`` suite run by the runner, its wall time split into
training steps, evaluation forwards, probe fitting and the rest.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from benchmarks.config import ROOT
from benchmarks.measure.drawnmasks import DrawnMasks, kept_percent
from benchmarks.measure.timing import Memory, eval_seconds, median_seconds


def image_shape(backbone: str) -> tuple[int, int, int]:
    """(channels, height, width) of the backbone's own configuration."""
    from models.factory import resolve

    _, kwargs = resolve(backbone)
    size = kwargs.get("img_size", 224)
    return (kwargs.get("in_chans", 3), size, size)


def synthetic_stream(shape, n_train: tuple[int, int], n_eval: int, n_classes: int = 10):
    """Two tasks of random images (task 0 short, task 1 = the measured one)."""
    from benchmarks.data.datasets import TensorImages
    from benchmarks.data.streams import Stream, Task

    g = torch.Generator().manual_seed(0)

    def data(n):
        return TensorImages(torch.rand(n, *shape, generator=g),
                            torch.arange(n) % n_classes)

    tasks = [Task(f"synthetic {i}", [str(c) for c in range(n_classes)], data(n), data(n_eval),
                  data(n_eval)) for i, n in enumerate(n_train)]
    return Stream("synthetic", 0, tasks, None, shape)


class Plain:
    """The plain reference: the timm backbone + a linear head, full fine-tuning in a plain
    PyTorch loop. Every strategy is measured next to one in the same process, so the machine's
    drift between processes (large on shared CPUs) cancels in the ratios."""

    def __init__(self, backbone: str, args: dict):
        from models.factory import create_backbone

        self.device = torch.device(args["device"])
        self.args = args
        shape = image_shape(backbone)
        net = create_backbone(backbone)
        self.model = nn.Sequential(net, nn.Linear(net.num_features, 10)).to(self.device)
        self.x = torch.rand(args["batch"], *shape, device=self.device)
        self.y = torch.arange(args["batch"], device=self.device) % 10
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16,
                              enabled=self.args.get("precision") == "bf16")

    def step(self) -> None:
        with self.autocast():
            logits = self.model(self.x)
        loss = nn.functional.cross_entropy(logits.float(), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def train_step_seconds(self) -> float:
        self.model.train()
        return median_seconds(self.step, self.args["repeats"], self.args["warmup"], self.device)

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.model.eval()(x)


def measure_plain(backbone: str, args: dict) -> dict:
    """The plain reference alone (its own peak memory)."""
    device = torch.device(args["device"])
    mem = Memory(device)
    mem.start()
    plain = Plain(backbone, args)
    train = plain.train_step_seconds()
    peak = mem.peak()
    xe = torch.rand(args["eval_batch"], *image_shape(backbone), device=device)
    evaluation = eval_seconds({"plain": lambda: plain.forward(xe)}, args["eval_repeats"],
                              args["warmup"], device)["plain"]
    return {"strategy": "plain", "train_step_ms": 1e3 * train, "plain_train_step_ms": 1e3 * train,
            "eval_img_s": args["eval_batch"] / evaluation,
            "plain_eval_img_s": args["eval_batch"] / evaluation, "peak_mib": peak}


def measure_strategy(backbone: str, name: str, args: dict) -> dict:
    """One strategy trained through Avalanche on two synthetic tasks, measured on the second,
    then the plain reference in the same process (evaluation interleaved with it)."""
    from benchmarks.plugins import StepTimer
    from models.compact import compact_for_task
    from models.factory import create_backbone
    from strategies import get_strategy
    from strategies.features import PassMeter
    from strategies.heads import ProbeHeadPlugin
    from strategies.registry import TrainSettings

    device = torch.device(args["device"])
    shape = image_shape(backbone)
    steps = args["warmup"] + args["repeats"]
    bench = synthetic_stream(shape, (args["batch"] * 2, args["batch"] * steps),
                             args["eval_batch"]).to_benchmark()
    mem = Memory(device)
    mem.start()
    timer = StepTimer(sync=device)  # synchronized on CUDA
    info = get_strategy(name)
    drawn = DrawnMasks(args["keep_tokens"], args["keep_weights"])
    meter = PassMeter()  # the passes outside training, as a run makes them (no feature cache)
    probe = ProbeHeadPlugin(bench, "random", reference=create_backbone(backbone), meter=meter)
    settings = TrainSettings(epochs=1, batch_size=args["batch"], eval_batch_size=args["eval_batch"],
                             device=args["device"], head_init="random",
                             plugins=[timer, drawn, probe], fixed_passes=meter,
                             precision=args.get("precision", "fp32"))
    strategy = info.build(create_backbone(backbone), dict(info.hparams), settings)
    strategy.train(bench.train_stream[0])
    timer.train_times.clear()
    meter.take()
    strategy.train(bench.train_stream[1])
    train = statistics.median(timer.train_times[args["warmup"]:])
    fixed_images, fixed_s = meter.take()
    peak = mem.peak()

    plain = Plain(backbone, args)
    plain_train = plain.train_step_seconds()
    model = strategy.model.eval()
    xe = torch.rand(args["eval_batch"], *shape, device=device)

    @torch.inference_mode()
    def forward():
        with strategy.autocast():
            return model(xe, 1)

    forwards = {"plain": lambda: plain.forward(xe), "strategy": forward}
    counts = {}
    if info.mask_kinds:
        compacted, counts = compact_for_task(model, 1)
        counts.update(kept_percent(model, 1))
        head = model.heads["1"]

        @torch.inference_mode()
        def compact_forward():
            with strategy.autocast():
                return head(compacted(xe))

        forwards["compacted"] = compact_forward
        counts["compact_max_abs_diff"] = float((compact_forward() - forward()).abs().max())
    seconds = eval_seconds(forwards, args["eval_repeats"], args["warmup"], device)
    row = {"strategy": name, "train_step_ms": 1e3 * train,
           "plain_train_step_ms": 1e3 * plain_train,
           "eval_img_s": args["eval_batch"] / seconds["strategy"],
           "plain_eval_img_s": args["eval_batch"] / seconds["plain"], "peak_mib": peak,
           "fixed_images": fixed_images, "fixed_ms_per_img": 1e3 * fixed_s / fixed_images,
           **counts}
    if "compacted" in seconds:
        row["compact_img_s"] = args["eval_batch"] / seconds["compacted"]
    return row


def measure(job: tuple) -> dict:
    """Entry point of a measuring process: ``(backbone, strategy or "plain", args)``."""
    backbone, name, args = job
    torch.manual_seed(0)
    if args["threads"]:
        torch.set_num_threads(args["threads"])
    row = measure_plain(backbone, args) if name == "plain" else measure_strategy(backbone, name,
                                                                                   args)
    return {"backbone": backbone, **row}


def runner_overhead(cache: Path) -> dict:
    """The smoke suite through the CLI; its records' timing split (seconds, summed over runs)."""
    import subprocess

    from results.records import find_records

    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "run_benchmark.py"), "--suite", "smoke",
                        "--out", out, "--cache", str(cache), "--quiet"], check=True,
                       capture_output=True)
        suite_wall = time.perf_counter() - t
        records = find_records([out])
    total = {k: sum(r["timing"][k] for r in records)
             for k in ("wall_s", "train_step_s", "eval_step_s", "probe_s", "pretrain_s")}
    total["runs"] = len(records)
    total["suite_wall_s"] = suite_wall
    total["other_s"] = (total["wall_s"] - total["train_step_s"] - total["eval_step_s"]
                        - total["probe_s"] - total["pretrain_s"])
    return total
