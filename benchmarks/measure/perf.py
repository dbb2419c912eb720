"""Speed and memory of every strategy next to the plain backbone, measured side by side.

    python -m benchmarks.measure.perf [--backbones vit_micro,cait_micro,lavit_micro]
                              [--strategies all] [--batch 64] [--eval-batch 512] [--repeats 20]
                              [--device cpu]
                              [--keep-tokens 0.9] [--keep-weights 0.97] [--precision fp32]
                              [--out results]        (writes <out>/perf.md and <out>/perf.json)
    python -m benchmarks.measure.perf --data [--data-images 48]
                              (the data path: benchmarks.measure.dataperf)

``results/perf.md`` has one section per mode; each run rewrites its own section
(``benchmarks.measure.perfreport``).

Every (backbone, strategy) and each backbone's plain reference is measured in a fresh process
(``benchmarks.measure.stepperf``: the training step, the passes outside training, the evaluation
forward and the compacted model's, peak memory), the mask strategies with masks drawn at trained
keep rates (``benchmarks.measure.drawnmasks``); ratios are strategy time / plain time (> 1 =
slower), against a plain reference measured in the same process right after the strategy, so the
drift between processes on a shared machine cancels. Then the ``smoke`` suite through the runner
gives the **runner overhead** (``--no-overhead`` skips it). A script, not a test: timings on
shared machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

from benchmarks.config import ROOT
from benchmarks.measure.drawnmasks import KEEP_TOKENS, KEEP_WEIGHTS
from benchmarks.measure.perfreport import markdown, write_section
from benchmarks.measure.stepperf import measure, runner_overhead
from vocab import PRECISIONS


def main(argv=None) -> int:
    from strategies import STRATEGIES

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", default="vit_micro,cait_micro,lavit_micro")
    p.add_argument("--strategies", default="all")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--eval-batch", type=int, default=512)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--eval-repeats", type=int, default=40,
                   help="timed evaluation forwards (interleaved with the plain reference)")
    p.add_argument("--keep-tokens", type=float, default=KEEP_TOKENS,
                   help="fraction of patch tokens the drawn MEAT token masks keep per layer")
    p.add_argument("--keep-weights", type=float, default=KEEP_WEIGHTS,
                   help="fraction of weights the drawn MEAT FFN and Piggyback masks keep")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=ROOT / "results")
    p.add_argument("--cache", type=Path, default=ROOT / ".cache" / "pretrained")
    p.add_argument("--no-overhead", action="store_true", help="skip the runner-overhead run")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--data", action="store_true",
                   help="measure the data path instead (benchmarks/measure/dataperf.py): "
                        "decoding on every access vs the image cache; writes its section of "
                        "perf.md")
    p.add_argument("--data-images", type=int, default=48,
                   help="--data: generated images per dataset")
    args = p.parse_args(argv)
    if args.data:
        from benchmarks.measure import dataperf

        rows = dataperf.measure(args.data_images)
        text = dataperf.markdown(rows, dataperf.projection(rows))
        write_section(args.out / "perf.md", "data", text)
        (args.out / "perf_data.json").write_text(json.dumps(rows, indent=1))
        print(text)
        return 0
    if not (0 < args.keep_tokens <= 1 and 0 < args.keep_weights <= 1):
        p.error("--keep-tokens and --keep-weights must be in (0, 1]")
    names = list(STRATEGIES) if args.strategies == "all" else args.strategies.split(",")
    device = torch.device(args.device)
    opts = {"device": args.device, "batch": args.batch, "eval_batch": args.eval_batch,
            "repeats": args.repeats, "eval_repeats": args.eval_repeats, "warmup": args.warmup,
            "threads": args.threads, "keep_tokens": args.keep_tokens,
            "keep_weights": args.keep_weights, "precision": args.precision,
            "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                            else f"CPU ({torch.get_num_threads()} threads available)")}
    from models.factory import family
    from strategies.registry import refusal

    jobs = []
    for b in args.backbones.split(","):
        jobs.append((b, "plain", opts))
        for s in names:
            why = refusal(s, family(b))
            if why is None:
                jobs.append((b, s, opts))
            else:
                print(f"{s} on {b}: not measured ({why})", flush=True)
    rows = []
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn"),
                             max_tasks_per_child=1) as pool:
        for row in pool.map(measure, jobs):
            print(json.dumps(row), flush=True)
            rows.append(row)
    overhead = None if args.no_overhead else runner_overhead(args.cache)
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(rows, overhead, opts)
    write_section(args.out / "perf.md", "strategies", text)
    (args.out / "perf.json").write_text(json.dumps({"settings": opts, "rows": rows,
                                                    "runner_overhead": overhead}, indent=1))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
