"""The GPU check: what a paper run costs on this machine's GPU, and whether it is correct there.

    python -m benchmarks.gpucheck [--out results] [--budget-s 540]      (what `make gpu-check` runs)

Writes ``<out>/gpu.md`` (and ``gpu.json``) with:

1. **bf16 vs fp32 agreement** per strategy on DeiT-Ti (random weights, 224x224): every strategy
   trains one short task in fp32, then the same batch is evaluated with and without bf16
   autocast — largest logit difference relative to the logits' scale, and the share of equal
   predictions.
2. **Training throughput** (images/s of training steps, median after warm-up, batch 256, bf16,
   drawn masks at the paper's keep rates as in ``benchmarks.perf``) and **peak memory**
   (``max_memory_allocated``) per strategy for DeiT-Ti and DeiT-S, next to plain fine-tuning.
3. **SIGKILL and resume on CUDA**: the paper-mini pipeline (generated data) for MEAT, killed
   after its second task and run again; the resumed run must finish with the first tasks' rows
   as they were, and its accuracy matrix is compared with an uninterrupted run.
4. **Projection** of one paper run and of the 80-run grid (8 strategies x 2 backbones x 5
   seeds) in GPU hours, from the measured throughputs and the paper run's image count
   (:func:`benchmarks.dataperf.paper_run_decodes`); labelled as a projection.

The resume check and the agreement run first; throughput measurements stop when ``--budget-s``
is spent (what was measured is written). With
``--device cpu`` and small settings it runs anywhere (the test suite runs it so, on a tiny
backbone); numbers are only meaningful on the GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import perf
from benchmarks.dataperf import PAPER_SPLITS, paper_run_decodes

ROOT = Path(__file__).resolve().parent.parent
GRID_SEEDS, GRID_BACKBONES = 5, 2


def agreement(backbone: str, name: str, args: dict) -> dict:
    """Train ``name`` briefly in fp32, then compare its fp32 and bf16 evaluation logits."""
    from models.factory import create_backbone
    from strategies import get_strategy
    from strategies.registry import TrainSettings

    shape = perf.image_shape(backbone)
    bench = perf.synthetic_stream(shape, (args["batch"] * 2, args["batch"] * 2),
                                  args["batch"]).to_benchmark()
    info = get_strategy(name)
    settings = TrainSettings(epochs=1, batch_size=args["batch"], device=args["device"],
                             head_init="random")
    strategy = info.build(create_backbone(backbone), dict(info.hparams), settings)
    strategy.train(bench.train_stream[0])
    model = strategy.model.eval()
    x = torch.rand(args["batch"], *shape, generator=torch.Generator().manual_seed(1))
    x = x.to(args["device"])
    with torch.inference_mode():
        full = model(x, 0).float()
        with torch.autocast(torch.device(args["device"]).type, dtype=torch.bfloat16):
            half = model(x, 0).float()
    scale = full.abs().max().clamp_min(1e-6)
    return {"strategy": name, "rel_max_diff": float((full - half).abs().max() / scale),
            "same_prediction": float((full.argmax(1) == half.argmax(1)).float().mean())}


def kill_and_resume(device: str, work: Path) -> dict:
    """MEAT on the paper-mini pipeline: killed after task 2, resumed; vs uninterrupted."""
    from benchmarks.synthetic import write_paper_layouts, write_random_checkpoint
    from results.records import find_records

    data = write_paper_layouts(work / "data", classes=2, train=4, test=2)
    ckpt = write_random_checkpoint(work / "deit_tiny.pth")
    base = [sys.executable, str(ROOT / "run_benchmark.py"), "--suite", "paper-mini",
            "--strategies", "meat", "--data-root", str(data), "--pretrained", str(ckpt),
            "--device", device, "--cache", str(work / "cache"), "--quiet"]
    killed = work / "killed"
    proc = subprocess.Popen([*base, "--out", str(killed)], stderr=subprocess.PIPE, text=True)
    rows_before = None
    for line in proc.stderr:
        if "task 2/6 done" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait()
    record = next(killed.glob("*/record.json"), None)
    if record is not None:
        rows_before = json.loads(record.read_text())["acc_matrix"][:2]
    resumed = subprocess.run([*base, "--out", str(killed)], capture_output=True, text=True)
    straight = subprocess.run([*base, "--out", str(work / "straight")], capture_output=True,
                              text=True)
    out = {"killed_after_task": 2, "resumed_exit": resumed.returncode,
           "resumed_message": "resuming at task 2" in resumed.stderr,
           "uninterrupted_exit": straight.returncode}
    if resumed.returncode == 0 and straight.returncode == 0:
        a = find_records([killed])[0]["acc_matrix"]
        b = find_records([work / "straight"])[0]["acc_matrix"]
        out.update(first_rows_kept=a[:2] == rows_before, same_matrix=a == b,
                   max_matrix_diff=max(abs(x - y) for ra, rb in zip(a, b, strict=True)
                                       for x, y in zip(ra, rb, strict=True)
                                       if x is not None and y is not None))
    return out


def projection(throughput: list[dict]) -> dict:
    """GPU hours of one paper run per (backbone, strategy) and of the grid, from training
    images/s (every training image of 30 epochs) and evaluation images/s (probe features and
    the evaluations after each task)."""
    train_images = 30 * sum(n for n, _ in PAPER_SPLITS.values())
    eval_images = paper_run_decodes(30) - train_images
    out = {}
    for r in throughput:
        if r["strategy"] == "plain":
            continue
        train_ips = r["batch"] / (r["train_step_ms"] / 1e3)
        hours = (train_images / train_ips + eval_images / r["eval_img_s"]) / 3600
        out.setdefault(r["backbone"], {})[r["strategy"]] = hours
    per_seed = sum(sum(v.values()) for v in out.values())
    grid = per_seed * GRID_SEEDS * GRID_BACKBONES / max(len(out), 1)
    return {"run_hours": out, "grid_hours": grid}


def markdown(env: dict, agree: list, throughput: list, resume: dict | None, proj: dict) -> str:
    lines = ["# GPU check (`make gpu-check`)", "",
             f"Device: {env['device']}; torch {env['torch']}; measured {env['date']}; "
             f"{env['seconds']:.0f} s.", "",
             "## bf16 vs fp32 (DeiT-Ti, random weights, one short fp32 task, same batch)", "",
             "| strategy | max logit diff / max logit | same prediction % |", "|---|---|---|"]
    lines += [f"| {a['strategy']} | {a['rel_max_diff']:.2e} | {100 * a['same_prediction']:.1f} |"
              for a in agree]
    lines += ["", f"## Training throughput (batch {env['batch']}, {env['precision']}, drawn "
              "masks: tokens and weights kept at the paper's rates)", "",
              "| backbone | strategy | train img/s | eval img/s | peak GiB |",
              "|---|---|---|---|---|"]
    for r in throughput:
        lines.append(f"| {r['backbone']} | {r['strategy']} | "
                     f"{r['batch'] / (r['train_step_ms'] / 1e3):.0f} | {r['eval_img_s']:.0f} | "
                     f"{r['peak_mib'] / 1024:.2f} |")
    lines += ["", "## SIGKILL and resume on this device", ""]
    lines += [f"- {k}: {v}" for k, v in (resume or {"not run": "--no-resume"}).items()]
    lines += ["", "## Projection (computed from the throughputs above, not measured)", "",
              "One paper run = 30 epochs over the six datasets' training images plus probe "
              "features and evaluations; the grid = 8 strategies x 2 backbones x 5 seeds.", "",
              "| backbone | strategy | GPU hours per run |", "|---|---|---|"]
    for backbone, runs in proj["run_hours"].items():
        lines += [f"| {backbone} | {s} | {h:.2f} |" for s, h in runs.items()]
    lines += ["", f"Grid: {proj['grid_hours']:.1f} GPU hours (projection).", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    from strategies import STRATEGIES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "results")
    p.add_argument("--device", default="cuda")
    p.add_argument("--backbones", default="deit_tiny_patch16_224,deit_small_patch16_224")
    p.add_argument("--strategies", default="all")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--budget-s", type=float, default=540)
    p.add_argument("--no-resume", action="store_true", help="skip the kill-and-resume check")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        p.error("no CUDA device here: run this on a GPU machine (or pass --device cpu)")
    start = time.time()
    names = list(STRATEGIES) if args.strategies == "all" else args.strategies.split(",")
    backbones = args.backbones.split(",")
    opts = {"device": args.device, "batch": args.batch, "eval_batch": args.batch,
            "repeats": args.repeats, "eval_repeats": args.repeats, "warmup": 3, "threads": 0,
            "keep_tokens": perf.KEEP_TOKENS, "keep_weights": perf.KEEP_WEIGHTS,
            "precision": args.precision}
    left = lambda: args.budget_s - (time.time() - start)  # noqa: E731
    resume = None
    if not args.no_resume:  # correctness first; throughputs fill the rest of the budget
        with tempfile.TemporaryDirectory() as tmp:
            resume = kill_and_resume(args.device, Path(tmp))
    agree = [agreement(backbones[0], n, opts) for n in names]
    throughput = []
    for backbone in backbones:
        for name in ["plain", *names]:
            if left() < 0:
                break
            if name == "plain":
                row = perf.measure_plain(backbone, opts)
            else:
                row = perf.measure_strategy(backbone, name, opts)
            throughput.append({**row, "backbone": backbone, "batch": args.batch})
            print(json.dumps(throughput[-1]), flush=True)
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    device = (torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU")
    env = {"device": device, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
           "seconds": time.time() - start, "batch": args.batch, "precision": args.precision}
    proj = projection(throughput)
    text = markdown(env, agree, throughput, resume, proj)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.md").write_text(text)
    (args.out / "gpu.json").write_text(json.dumps(
        {"env": env, "agreement": agree, "throughput": throughput, "resume": resume,
         "projection": proj}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
