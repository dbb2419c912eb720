"""``gpu.md``: the bf16 agreement, the throughputs, the resume check and the projection of the
paper suite (:func:`markdown`; the projection's section: :func:`projection_lines`)."""

from __future__ import annotations


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
