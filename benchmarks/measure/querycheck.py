"""How often a prompt-pool method chooses other prompts when its query is computed under bf16
autocast instead of in fp32 (the model computes it under the run's autocast, ``models.prompts``;
the similarities are fp32 either way), over the test set of every task of a trained run.

    python -m benchmarks.measure.querycheck [--strategies l2p,dualprompt,coda-prompt] [--seed 0]
                                    [--steps-per-task N] [--out DIR] [--cache DIR]

Each strategy is first trained as ``--suite standard`` trains it on ``mnist5k-nuisance5`` with
``vit_micro`` (tuned hyperparameters, the cached base pre-training, fp32 on the CPU), so its keys
are trained ones. Then every test image's query is computed both ways
(``models.prompts.query_features``) and a sample counts as flipped when

- L2P: its set of top_n prompts differs (chosen per sample: ``batchwise_prompt`` is off);
- DualPrompt: the expert its key chooses without a task id differs (given a task id, that
  task's expert serves: there is no choice);
- CODA-Prompt has no discrete choice (its prompt is the alpha-weighted sum of all components,
  alpha = cos(q A, K)): the largest |alpha_bf16 - alpha_fp32| is reported instead.

Prints one JSON line per strategy and task and one per strategy over all tasks.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader

STREAM, BACKBONE = "mnist5k-nuisance5", "vit_micro"
PROMPT_POOLS = ("l2p", "dualprompt", "coda-prompt")


def trained_run(strategy: str, seed: int, steps_per_task: int | None, out: Path, cache: Path):
    """The finished :class:`benchmarks.runner.Run` of ``strategy`` on the standard suite's
    stream and backbone (fp32, CPU, task-incremental evaluation only)."""
    from benchmarks.runner import Run
    from benchmarks.suitefile import load_suite
    from benchmarks.suites import expand

    suite = load_suite("standard")
    changes = {"stream": STREAM, "backbone": BACKBONE, "strategies": [strategy], "seeds": [seed],
               "task_agnostic": False, "device": "cpu", "precision": "fp32"}
    if steps_per_task is not None:
        changes["steps_per_task"] = steps_per_task
    (config,) = expand({**suite, **changes})
    run = Run(config, out / config.run_id, cache, progress=False)
    run.folder.mkdir(parents=True)
    run.run()
    return run


def choices(backbone: torch.nn.Module, q: torch.Tensor) -> torch.Tensor:
    """What the backbone's prompt pool takes from queries ``q``: L2P's sorted top_n indices
    (B, N), DualPrompt's expert without a task id (B, 1), CODA-Prompt's weights (B, n_layers M)."""
    from models.prompt_pools import CodaPrefixes, ExpertPrefixes, L2PPool

    for pool in backbone.modules():
        if isinstance(pool, L2PPool):
            return pool.choose(q)[0].sort(dim=1).values
        if isinstance(pool, ExpertPrefixes):
            return pool.closest(q)[:, None]
        if isinstance(pool, CodaPrefixes):
            return pool.weights(q).permute(1, 0, 2).flatten(1)
    raise ValueError("the backbone has no prompt pool")


def compare(run, batch_size: int = 500) -> list[dict]:
    """Per task: test samples, samples whose choice differs between the fp32 and the bf16 query
    (``flipped``, L2P and DualPrompt) or the largest weight difference (``max_abs_alpha``,
    CODA-Prompt)."""
    from models.precision import fp32_region
    from models.prompts import query_features

    backbone = run.strategy.model.backbone
    inputs = run.strategy.inputs
    rows = []
    for j, task in enumerate(run.stream.tasks):
        flipped, n, largest = 0, 0, 0.0
        for x, *_ in DataLoader(task.test, batch_size=batch_size):
            x = inputs(x, False) if inputs is not None else x
            with fp32_region(x.device):
                full = choices(backbone, query_features(backbone, x))
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                half = choices(backbone, query_features(backbone, x))
            n += len(x)
            if full.is_floating_point():
                largest = max(largest, (half - full).abs().max().item())
            else:
                flipped += int((half != full).any(dim=1).sum())
        row = {"strategy": run.config.strategy, "task": j, "n": n}
        row.update({"max_abs_alpha": largest} if full.is_floating_point()
                   else {"flipped": flipped, "flip_rate": flipped / n})
        rows.append(row)
    return rows


def summary(rows: list[dict]) -> dict:
    """The rows of one strategy over all its tasks."""
    n = sum(r["n"] for r in rows)
    out = {"strategy": rows[0]["strategy"], "task": "all", "n": n}
    if "flipped" in rows[0]:
        flipped = sum(r["flipped"] for r in rows)
        out.update(flipped=flipped, flip_rate=flipped / n)
    else:
        out["max_abs_alpha"] = max(r["max_abs_alpha"] for r in rows)
    return out


def main(argv: list[str] | None = None) -> int:
    from benchmarks.config import DEFAULT_CACHE

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--strategies", default=",".join(PROMPT_POOLS),
                   help=f"comma list of {', '.join(PROMPT_POOLS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps-per-task", type=int, default=None,
                   help="training steps per task (default: the standard suite's)")
    p.add_argument("--out", type=Path, default=None,
                   help="where the runs' folder goes, deleted afterwards (default: the system's "
                        "temporary folder)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                   help="base pre-training and probe cache (default: run_benchmark.py's)")
    args = p.parse_args(argv)
    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    bad = [s for s in names if s not in PROMPT_POOLS]
    if bad:
        p.error(f"not a prompt-pool strategy: {bad[0]!r}; valid: {', '.join(PROMPT_POOLS)}")
    with tempfile.TemporaryDirectory(dir=args.out) as out:
        for name in names:
            run = trained_run(name, args.seed, args.steps_per_task, Path(out), args.cache)
            rows = compare(run)
            for row in [*rows, summary(rows)]:
                print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
