"""Accuracy-matrix figures: one heatmap per strategy (with task ids or without), and each task's
accuracy as later tasks are learned, over their chance levels."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from results.arms import by_arm, task_classes, task_label
from results.figure_style import CHANCE, save, strategy_color, strategy_style
from results.metrics import class_incremental_chance, task_incremental_chance
from results.task_agnostic import collapse_label

PROTOCOLS = {"acc_matrix": "with task ids (task-incremental)",  # what each matrix measures
             "cil_acc_matrix": "without task ids (class-incremental)"}


def mean_matrix(records: list[dict], key: str = "acc_matrix") -> np.ndarray:
    """Mean accuracy matrix (%, ``key``: or ``cil_acc_matrix``) over the records' seeds; NaN
    where not evaluated."""
    mats = [np.array([[np.nan if v is None else v for v in row] for row in r[key]])
            for r in records]
    return 100 * np.mean(mats, axis=0)


def heatmaps(records: list[dict], out: Path, title: str, name: str,
             key: str = "acc_matrix") -> list[Path]:
    """One accuracy-matrix heatmap per strategy (``key``: with task ids, or ``cil_acc_matrix``
    without): row = after training task i, column = task j. Red lines on the colorbar mark
    chance: 1/classes of task j with task ids, 1/classes seen through task i without
    (``results.metrics``); without task ids a panel names the task that task inference
    collapsed onto."""
    groups = by_arm(records)
    classes = task_classes(records[0])
    with_ids = key == "acc_matrix"
    chance = (task_incremental_chance if with_ids else class_incremental_chance)(classes)
    n = len(groups)
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols + 1.4, 3.0 * rows + 0.3),
                             squeeze=False, layout="constrained")
    for k, (ax, (strat, recs)) in enumerate(zip(axes.flat, groups.items(), strict=False)):
        m = mean_matrix(recs, key)
        im = ax.imshow(m, vmin=0, vmax=100, cmap="viridis")
        for (i, j), v in np.ndenumerate(m):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if v < 60 else "black")
        collapse = "--" if with_ids else collapse_label(recs)
        ax.set_title(strat + ("" if collapse == "--" else f"\nevery sample to {collapse}"),
                     color=strategy_color(strat) if collapse == "--" else "red",
                     fontsize=10 if collapse == "--" else 7)
        if k % cols == 0:
            ax.set_ylabel("after training task i")
        if k >= n - cols:
            ax.set_xlabel("evaluated task j")
        ax.set_xticks(range(m.shape[1]), [str(j + 1) for j in range(m.shape[1])])
        ax.set_yticks(range(m.shape[0]), [str(i + 1) for i in range(m.shape[0])])
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    bar = fig.colorbar(im, ax=axes, shrink=0.9, aspect=15 * rows)
    levels = sorted({100 * c for c in chance}, reverse=True)
    for v in levels:
        bar.ax.axhline(v, color="red", lw=2.5, gid="chance")
    bar.set_label("accuracy % (red: chance)")
    fig.suptitle(f"Accuracy matrices {PROTOCOLS[key]}, % (mean over seeds) — {title}\n"
                 f"chance (red on the colorbar) = 1/classes "
                 + ("of task j" if with_ids else "seen through task i") + ": "
                 + ", ".join(f"{round(v, 1):g}%" for v in levels), fontsize=10)
    return save(fig, out, name)


def task_curves(records: list[dict], out: Path, title: str, name: str) -> list[Path]:
    """Accuracy on each task with task ids (one panel per task) as later tasks are learned, over
    the chance level 1/classes of the task. Strategies differ in color and marker and are dodged
    sideways, so curves that coincide (every strategy that cannot forget is flat) stay
    visible."""
    groups = by_arm(records)
    T = len(records[0]["acc_matrix"])
    chance = task_incremental_chance(task_classes(records[0]))
    fig, axes = plt.subplots(1, T, figsize=(2.6 * T, 2.8), sharey=True, squeeze=False)
    dodge = 0.5 / max(len(groups), 1)
    for j, ax in enumerate(axes[0]):
        ax.axhline(100 * chance[j], **CHANCE, label="chance (1/classes of the task)")
        for k, (strat, recs) in enumerate(groups.items()):
            m = mean_matrix(recs)
            x = np.arange(j, T) + (k - (len(groups) - 1) / 2) * dodge
            color, marker = strategy_style(strat)
            ax.plot(x, m[j:, j], marker=marker, ms=3.5, lw=1, color=color, label=strat)
        ax.set_title(f"task {j + 1}: {task_label(records[0]['tasks'][j])}", fontsize=8)
        ax.set_xlabel("after task")
        ax.set_xticks(range(T), [str(t + 1) for t in range(T)])
        ax.set_xlim(-0.5, T - 0.5)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy % with task ids")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(f"Accuracy on each task across the sequence, {PROTOCOLS['acc_matrix']} — "
                 f"{title}", y=1.04)
    return save(fig, out, name)
