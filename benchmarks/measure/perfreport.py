"""``perf.md``: the speed targets of the mask strategies, the strategy tables and the runner
overhead (:func:`markdown`), and the file's sections (:func:`write_section`: the strategy and
the data-path measurements each rewrite their own)."""

from __future__ import annotations

from pathlib import Path

import torch

from benchmarks.measure.drawnmasks import MASK_SEED

TRAIN_TARGET, EVAL_TARGET = 1.3, 1.05
SECTIONS = ("strategies", "data")


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
