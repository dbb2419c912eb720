"""The GPU check: what the paper suite costs on this machine's GPU, and whether it is correct there.

    python -m benchmarks.measure.gpucheck [--out results] [--budget-s 540]
                                          (what `make gpu-check` runs)
    python -m benchmarks.measure.gpucheck --projection-only --device cpu
                                          (no GPU: the projection only)

Writes ``<out>/gpu.md`` (and ``gpu.json``) with:

1. **SIGKILL and resume on CUDA** (``benchmarks.measure.resumecheck``): the paper-mini pipeline
   for MEAT, killed after its second task and resumed, bit for bit against an uninterrupted run
   (``--deterministic``; without it CUDA runs agree only up to their run-to-run spread:
   ``docs/sweeps.md``).
2. **bf16 vs fp32 in training** per strategy (``benchmarks.measure.bf16check``): loss and
   gradients on a training batch both ways, next to first-order bounds from bf16's unit
   roundoff; and the finished task's evaluation logits both ways.
3. **FLOPs counted** per training image and per evaluation image of every strategy on every
   backbone, next to the backbone's forward FLOPs (``benchmarks.measure.flops``).
4. **Training throughput** (images/s of training steps, median after warm-up, bf16, drawn masks
   at the paper's keep rates as in ``benchmarks.measure.perf``) and **peak memory** per strategy
   for DeiT-Ti, DeiT-S and T2T-ViT-12 next to plain fine-tuning, each measured after garbage
   collection and a reset of the CUDA allocator's peak
   (``benchmarks.measure.timing.release_memory``).
5. **Projection** of the whole ``--suite paper`` (``benchmarks.measure.projection``): every
   run's training images and fixed forward passes times the counted FLOPs, turned into GPU hours
   by the measured throughputs where there are some, else by an assumed sustained rate (stated in
   the report). Labelled as a projection.

The report is written by ``benchmarks.measure.gpureport``. The resume check, the agreement and
the FLOP counts run first; throughput measurements stop when ``--budget-s`` is spent (what was
measured is written). With ``--device cpu`` and small settings it runs anywhere (the test suite
runs it so, on a tiny backbone); throughputs are only meaningful on the GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.config import ROOT
from benchmarks.measure.bf16check import agreement
from benchmarks.measure.drawnmasks import KEEP_TOKENS, KEEP_WEIGHTS
from benchmarks.measure.flops import counted_flops, forward_macs
from benchmarks.measure.gpureport import markdown
from benchmarks.measure.projection import PAPER_BACKBONES, paper_configs, projection
from benchmarks.measure.resumecheck import kill_and_resume
from benchmarks.measure.stepperf import measure_plain, measure_strategy
from benchmarks.measure.timing import release_memory


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
            "keep_tokens": KEEP_TOKENS, "keep_weights": KEEP_WEIGHTS,
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
            row = (measure_plain(backbone, opts) if name == "plain"
                   else measure_strategy(backbone, name, opts))
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
