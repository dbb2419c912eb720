"""Speed and memory of every strategy next to the plain backbone, measured side by side.

    python -m benchmarks.measure.perf [--backbones vit_micro,cait_micro,lavit_micro]
                              [--strategies all] [--batch 64] [--eval-batch 512] [--repeats 20]
                              [--device cpu]
                              [--keep-tokens 0.9] [--keep-weights 0.97] [--precision fp32]
                              [--out results]        (writes <out>/perf.md and <out>/perf.json)
    python -m benchmarks.measure.perf --data [--data-images 48]
                              (the data path: benchmarks.measure.dataperf)

``results/perf.md`` has one section per mode; each run rewrites its own section.

For every backbone, the **plain** reference is the timm backbone with a linear head in a plain
PyTorch loop: a full fine-tuning step (forward, cross-entropy, backward, AdamW step) and a
forward pass. Every strategy is built by its registered builder and trained through Avalanche on
two synthetic tasks; it is measured on the second task, where everything that makes it a
continual-learning method is active (HAT's gradient masks, LwF's distillation, ...):

- **train step**: from ``before_training_iteration`` to ``after_training_iteration`` (forward,
  losses, backward, every plugin's hooks, optimizer step; data loading excluded);
- **outside training**: the passes a run makes over the measured task's data outside its steps
  (``strategies.features.PassMeter``: the probe's features on the strategy's backbone and on a
  random reference, the end-of-task pass), their images and ms per image;
- **eval**: images/s of ``model(x, task)`` under ``torch.inference_mode`` in eval mode, the
  task's masks finished (bit-packed, folded into the weights once); for mask and gate strategies
  also of the per-task **compacted** model (``models.compact``), with its largest absolute
  difference to the masked dense output;
- **masks**: a few synthetic steps do not move masks (every entry starts kept), so the mask
  strategies are measured with masks drawn at the keep rates of trained ones (seeded, an exact
  count per mask): MEAT's token masks keep ``keep_tokens`` = 90% of the patch tokens of every
  layer (its drop-control loss targets lambda = 0.9), MEAT's FFN masks and Piggyback's weight
  masks ``keep_weights`` = 97% of their weights (a few % dropped); HAT's gates are left as
  trained (their N(0, 1) embeddings switch about half the units of a new task off). The draw is
  set on the measured task's logits/scores before its training steps (kept entries at +2 gamma,
  dropped at -2 gamma for MEAT's Gumbel logits, so a training sample differs from the draw
  with probability sigmoid(-2 gamma) = 3e-4; Piggyback's scores at init and mirrored below the
  threshold) and again after them, before they are binarized: the timed steps, the evaluation
  and the compaction all see it. The table reports the kept fractions (tokens over every token
  mask; weights over every masked or gated layer);
- **peak memory**: on CUDA ``max_memory_allocated`` over the training steps; on CPU the growth
  of the measuring process's peak RSS over its size before the model was built (each
  measurement runs in a fresh process).

Times are medians over ``repeats`` training steps and ``eval_repeats`` forwards after
``warmup``; ratios are strategy time / plain time (> 1 = slower), against a plain reference
measured in the same process right after the strategy (evaluation forwards interleaved with the
strategy's), so the drift between processes on a shared machine cancels. **Runner overhead**:
the ``smoke`` suite run by the runner (every strategy, 1 epoch), its wall time split into
training steps, evaluation forwards, probe fitting and the rest (Avalanche callbacks, data
loading, checkpoints, records). A script, not a test: timings on shared machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch
from avalanche.core import SupervisedPlugin
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
TRAIN_TARGET, EVAL_TARGET = 1.3, 1.05
KEEP_TOKENS, KEEP_WEIGHTS = 0.9, 0.97  # kept fractions of drawn masks (module docstring)
MASK_SEED = 0


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Memory:
    """Peak memory of what runs between ``start`` and ``peak`` (see the module docstring)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def start(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self.base = rss_mib()

    def peak(self) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated() / 2**20
        return peak_rss_mib() - self.base


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_seconds(fn, repeats: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


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


def eval_seconds(forwards: dict, repeats: int, warmup: int, device) -> dict[str, float]:
    """Median seconds of each forward, the forwards interleaved round by round."""
    for fn in forwards.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in forwards}
    for _ in range(repeats):
        for name, fn in forwards.items():
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


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


def task_masks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """("tokens", token mask) of every attention layer and ("weights", weight mask) of every
    masked layer of ``model``, in module order."""
    from models.attention import AttentionHooks
    from models.masked_linear import MaskedWeight

    hooks = [("tokens", AttentionHooks, "token_mask"), ("weights", MaskedWeight, "weight_mask")]
    return [(kind, getattr(m, attr)) for m in model.modules() for kind, cls, attr in hooks
            if isinstance(m, cls) and getattr(m, attr, None) is not None]


def kept_and_dropped_values(rule) -> tuple[float, float] | None:
    """The trainable values of a kept and a dropped entry under a mask rule (module docstring);
    None for a rule whose values are left as trained (HAT's gates)."""
    from models.masks import GumbelRule, ThresholdRule

    if isinstance(rule, GumbelRule):
        return 2 * rule.gamma, -2 * rule.gamma
    if isinstance(rule, ThresholdRule):
        return rule.init, 2 * rule.threshold - rule.init
    return None


class DrawnMasks(SupervisedPlugin):
    """Sets the training task's token and weight masks to seeded draws keeping ``keep_tokens``
    and ``keep_weights`` of their entries (round(keep x n) per mask), before its training steps
    and again after them (before the masks are binarized, so training moves nothing)."""

    def __init__(self, keep_tokens: float, keep_weights: float, seed: int = MASK_SEED):
        super().__init__()
        self.keep = {"tokens": keep_tokens, "weights": keep_weights}
        self.seed = seed

    @torch.no_grad()
    def draw(self, strategy) -> None:
        task = str(strategy.experience.task_label)
        g = torch.Generator().manual_seed(self.seed)
        for kind, mask in task_masks(strategy.model):
            values = kept_and_dropped_values(mask.rule)
            if values is None or task not in mask.trainable:
                continue
            n = mask.trainable[task].numel()
            dropped = torch.randperm(n, generator=g)[:n - round(self.keep[kind] * n)]
            drawn = torch.full((n,), values[0])
            drawn[dropped] = values[1]
            mask.trainable[task].copy_(drawn.reshape(mask.shape))

    def before_training_epoch(self, strategy, **kwargs):
        self.draw(strategy)

    def after_training_epoch(self, strategy, **kwargs):
        self.draw(strategy)


def kept_percent(model: nn.Module, task: int) -> dict[str, float]:
    """% of the patch tokens kept by ``task``'s token masks, and of the weights kept by its
    weight masks and output gates (a gate keeps or drops a whole row), over every masked layer."""
    from models.masked_linear import MaskedWeight

    tokens = [mask.binary(task) for kind, mask in task_masks(model) if kind == "tokens"]
    weights = []
    for layer in model.modules():
        if isinstance(layer, MaskedWeight):
            keep = torch.ones(layer.weight.shape, dtype=torch.bool, device=layer.weight.device)
            if getattr(layer, "weight_mask", None) is not None:
                keep &= layer.weight_mask.binary(task)
            if getattr(layer, "output_gate", None) is not None:
                keep &= layer.output_gate.binary(task).reshape(-1, *[1] * (keep.dim() - 1))
            weights.append(keep.flatten())
    return {f"kept_{kind}_pct": 100 * float(torch.cat(masks).float().mean())
            for kind, masks in (("tokens", tokens), ("weights", weights)) if masks}


def measure_strategy(backbone: str, name: str, args: dict) -> dict:
    """One strategy trained through Avalanche on two synthetic tasks, measured on the second,
    then the plain reference in the same process (evaluation interleaved with it)."""
    from benchmarks.runner import StepTimer
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


def mask_strategies() -> list[str]:
    """The registered strategies that learn binary masks: the targets of the speed checks."""
    from strategies import STRATEGIES

    return [name for name, info in STRATEGIES.items() if info.mask_kinds]


def markdown(rows: list[dict], overhead: dict | None, args: dict) -> str:
    """perf.md: one table per backbone with ratios to plain, the targets, the overhead split."""
    lines = ["# Performance: strategies next to the plain backbone", "",
             f"`python -m benchmarks.measure.perf` on {args['device_name']}, torch threads "
             f"{args['threads'] or torch.get_num_threads()}; train batch {args['batch']}, eval "
             f"batch {args['eval_batch']}; medians of {args['repeats']} training steps and "
             f"{args['eval_repeats']} evaluation forwards after {args['warmup']} warm-up steps. "
             "Ratios are time / plain time (eval: plain img/s / img/s), against "
             "the plain reference measured in the same process (evaluation interleaved with it), "
             "so drift between processes cancels; the `plain` row is the reference alone. "
             "Targets: "
             f"eval <= {EVAL_TARGET}x for {', '.join(mask_strategies())}; train step <= "
             f"{TRAIN_TARGET}x plain fine-tuning for the same. Mask strategies run with masks "
             f"drawn to keep {100 * args['keep_tokens']:g}% of the patch tokens and "
             f"{100 * args['keep_weights']:g}% of the masked weights (seed {MASK_SEED}; HAT's "
             "gates as trained): kept tokens and weights are the measured task's fractions. "
             "Outside training: the images the measured task's passes outside training read "
             "(the probe's features on the strategy's backbone and on a random reference, "
             "without the sweep's feature cache, and the end-of-task pass), their ms per image "
             "and that per-image time over the plain training step's (a forward-only pass at "
             "the device's speed is about 1/3). "
             "Timings on a shared machine are noisy (a few %).", ""]
    for backbone in dict.fromkeys(r["backbone"] for r in rows):
        group = [r for r in rows if r["backbone"] == backbone]
        lines += [f"## {backbone}", "",
                  "| strategy | train step ms | x plain | eval img/s | x plain | "
                  "outside training: images | ms/img | x plain step/img | peak MiB | "
                  "kept tokens % | kept weights % | compacted img/s | compacted speedup | "
                  "max abs diff | FFN units removed | keys dropped | targets |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in group:
            tr = r["train_step_ms"] / r["plain_train_step_ms"]
            ev = r["plain_eval_img_s"] / r["eval_img_s"]
            target = ""
            if r["strategy"] in mask_strategies():
                verdict = {True: "met", False: "MISSED"}
                target = (f"train {verdict[tr <= TRAIN_TARGET]}, "
                          f"eval {verdict[ev <= EVAL_TARGET]}")
            kept = [f"{r[k]:.1f}" if k in r else "" for k in ("kept_tokens_pct",
                                                                   "kept_weights_pct")]
            compact = ["", "", "", "", ""]
            if "compact_img_s" in r:
                compact = [f"{r['compact_img_s']:.0f}",
                           f"{r['compact_img_s'] / r['eval_img_s']:.2f}x",
                           f"{r['compact_max_abs_diff']:.1e}", str(r["ffn_units_removed"]),
                           str(r["keys_dropped"])]
            fixed = ["", "", ""]
            if "fixed_images" in r:
                per_img = r["fixed_ms_per_img"] / (r["plain_train_step_ms"] / args["batch"])
                fixed = [f"{r['fixed_images']}", f"{r['fixed_ms_per_img']:.3f}",
                         f"{per_img:.2f}"]
            lines.append(f"| {r['strategy']} | {r['train_step_ms']:.1f} | {tr:.2f} | "
                         f"{r['eval_img_s']:.0f} | {ev:.2f} | " + " | ".join(fixed) +
                         f" | {r['peak_mib']:.0f} | "
                         + " | ".join(kept + compact) + f" | {target} |")
        lines.append("")
    if overhead:
        o = overhead
        lines += ["## Runner overhead", "",
                  f"The `smoke` suite through `run_benchmark.py` ({o['runs']} runs, vit_micro, 1 "
                  f"epoch per task): {o['suite_wall_s']:.0f} s for the command, of which in the "
                  "runs:", "",
                  "| part | seconds | share of run time |", "|---|---|---|"]
        for key, label in (("train_step_s", "training steps (forward, backward, update, hooks)"),
                           ("eval_step_s", "evaluation forwards"),
                           ("probe_s", "probe features and fitting"),
                           ("pretrain_s", "base pre-training / checkpoint loading"),
                           ("other_s", "other: Avalanche callbacks, data loading, checkpoints, "
                                       "records")):
            lines.append(f"| {label} | {o[key]:.1f} | {100 * o[key] / o['wall_s']:.0f}% |")
        lines += ["", f"Outside the runs (imports, suite expansion, report and figures): "
                      f"{o['suite_wall_s'] - o['wall_s']:.0f} s.", ""]
    return "\n".join(lines)


SECTIONS = ("strategies", "data")


def write_section(path: Path, name: str, text: str) -> None:
    """Replace section ``name`` of ``path`` (between ``<!-- name -->`` markers), keeping the
    others: the strategy and the data-path measurements run separately."""
    old = path.read_text() if path.is_file() else ""
    parts = {}
    for key in SECTIONS:
        start, end = f"<!-- {key} -->", f"<!-- /{key} -->"
        if start in old and end in old:
            parts[key] = old[old.index(start) + len(start):old.index(end)].strip("\n")
    if not parts and old.strip() and name != "strategies":
        parts["strategies"] = old.strip("\n")  # a file from before the sections
    parts[name] = text.strip("\n")
    body = "\n\n".join(f"<!-- {k} -->\n{parts[k]}\n<!-- /{k} -->" for k in SECTIONS if k in parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body + "\n")


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
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
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
