"""With and without task ids at test time: per strategy, final accuracy in both settings and the
task-inference accuracy over their chance levels, beside the class-incremental references."""

from __future__ import annotations

from pathlib import Path

import matplotlib.lines
import matplotlib.pyplot as plt
import numpy as np

from results.arms import by_arm, task_classes
from results.figure_labels import keep_inside, to_axes
from results.figure_style import save, strategy_color
from results.metrics import final_average_accuracy, final_chance
from results.task_agnostic import collapse_label

REFERENCE_COLORS = {"simplecil": "tab:green", "joint": "tab:purple"}


def reference_levels(records: list[dict]) -> dict[str, float]:
    """The class-incremental references' final average accuracy (%), mean over the seeds of
    ``records`` (one run per seed: every run of a seed computes the same ones)."""
    per_seed = {r["config"]["seed"]: r for r in records if r.get("simplecil_acc_matrix")}
    return {ref: 100 * float(np.mean([final_average_accuracy(r[f"{ref}_acc_matrix"])
                                      for r in per_seed.values()]))
            for ref in REFERENCE_COLORS if per_seed}


def task_agnostic(records: list[dict], out: Path, title: str, name: str) -> list[Path]:
    """Per backbone, every strategy evaluated without task ids: final accuracy with task ids
    (filled circle), without them (class-incremental, open square; a line joins the two) and the
    task-inference accuracy (cross), each over its chance level (``results.metrics.final_chance``;
    solid, dashed and dotted lines) and, for runs that computed them, the class-incremental
    references SimpleCIL and the joint probe (dash-dotted); means over seeds with std bars;
    strategies ordered by class-incremental accuracy; a strategy whose task inference collapsed
    onto one task is named so beside its square."""
    records = [r for r in records if "cil_final_avg_acc" in r["metrics"]]
    backbones = sorted({r["config"]["backbone"] for r in records})
    chance = final_chance(task_classes(records[0]))
    lines = {"final_avg_acc": "-", "cil_final_avg_acc": "--", "task_inference_acc": ":"}
    fig, axes = plt.subplots(1, len(backbones), figsize=(5.6 * len(backbones), 4.4),
                             squeeze=False, sharey=True)
    flagged = {}
    for ax, backbone in zip(axes[0], backbones, strict=True):
        arms = by_arm([r for r in records if r["config"]["backbone"] == backbone])

        def stat(recs, metric):
            v = 100 * np.array([r["metrics"][metric] for r in recs])
            return v.mean(), (v.std(ddof=1) if len(v) > 1 else None)

        for metric, ls in lines.items():
            ax.axhline(100 * chance[metric], color="gray", ls=ls, lw=1, gid="chance")
        for ref, value in reference_levels(
                [r for r in records if r["config"]["backbone"] == backbone]).items():
            ax.axhline(value, color=REFERENCE_COLORS[ref], ls="-.", lw=1.2, gid=ref)
        order = sorted(arms, key=lambda a: stat(arms[a], "cil_final_avg_acc")[0], reverse=True)
        flagged[ax] = []
        for x, label in enumerate(order):
            color = strategy_color(label)
            (til, til_sd), (cil, cil_sd), (ti, ti_sd) = (
                stat(arms[label], m) for m in lines)
            ax.plot([x, x], [cil, til], color=color, lw=1.5, alpha=0.6)
            ax.errorbar(x, til, yerr=til_sd, fmt="o", color=color, ms=7, capsize=3)
            ax.errorbar(x, cil, yerr=cil_sd, fmt="s", color=color, mfc="white", ms=7,
                        capsize=3)
            ax.errorbar(x, ti, yerr=ti_sd, fmt="x", color=color, ms=7, capsize=2)
            collapse = collapse_label(arms[label])
            if collapse != "--":
                flagged[ax].append((x, cil, max(cil, ti), collapse))
        ax.set_xlim(-0.6, len(order) - 0.4)
        ax.set_xticks(range(len(order)), order, rotation=45, ha="right", fontsize=8)
        ax.set_title(backbone, fontsize=9)
        ax.grid(alpha=0.3)
    for ax, marks in flagged.items():  # once the shared y range is final
        texts = []
        for x, cil, above, collapse in marks:
            ax_x, ax_y = to_axes(ax, x, above)
            texts.append(ax.annotate(
                "every sample to\n" + collapse.replace(" (", "\n("), xy=(x, cil),
                xytext=(ax_x, ax_y + 0.05), textcoords="axes fraction", ha="center",
                va="bottom", fontsize=6, color="red",
                bbox={"fc": "white", "ec": "none", "alpha": 0.85, "pad": 1},
                arrowprops={"arrowstyle": "->", "lw": 0.6, "color": "red"}))
        keep_inside(ax, texts)
    axes[0][0].set_ylabel("final average accuracy % (± std over seeds)")
    pct = {m: f"{100 * chance[m]:.1f}%" for m in lines}
    handles = [matplotlib.lines.Line2D([], [], color="gray", marker=m, ls="", mfc=f, ms=7,
                                       label=text)
               for m, f, text in (("o", "gray", "with task ids (task-incremental)"),
                                  ("s", "white", "without (class-incremental)"),
                                  ("x", "gray", "task inferred right"))]
    handles += [matplotlib.lines.Line2D([], [], color="gray", ls=lines[m], lw=1, label=text)
                for m, text in (
                    ("final_avg_acc", f"chance with task ids, 1/classes of the task "
                                      f"({pct['final_avg_acc']})"),
                    ("cil_final_avg_acc", f"chance without, 1/classes seen "
                                          f"({pct['cil_final_avg_acc']})"),
                    ("task_inference_acc", f"chance of task inference, 1/tasks "
                                           f"({pct['task_inference_acc']})"))]
    handles += [matplotlib.lines.Line2D([], [], color=REFERENCE_COLORS[ref], ls="-.", lw=1.2,
                                        label=text)
                for ref, text in (("simplecil", "SimpleCIL on the frozen backbone, without "
                                                "task ids (reference)"),
                                  ("joint", "joint probe over all classes, frozen backbone"))
                if any(ref in reference_levels([r]) for r in records)]
    axes[0][-1].legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle(f"With and without task ids at test time — {title}")
    return save(fig, out, name)
