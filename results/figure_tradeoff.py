"""Accuracy against storage: final average accuracy with task ids vs what one task adds
(MiB/task), a point per strategy."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

from results.arms import by_arm, task_classes
from results.figure_labels import label_points
from results.figure_style import chance_line, save, strategy_style
from results.metrics import final_chance
from results.storage import mib_per_task


def tradeoff(records: list[dict], out: Path, title: str, name: str) -> list[Path]:
    """Final average accuracy with task ids vs what one task adds (MiB/task, the base model
    excluded, ``results.storage.mib_per_task``; log x), one panel per backbone, over the chance
    level; every point named beside it (:func:`label_points`), with what the strategy keeps once
    for all tasks where it keeps something; error bars = std over seeds (none for a single
    run)."""
    backbones = sorted({r["config"]["backbone"] for r in records})
    fig, axes = plt.subplots(1, len(backbones), figsize=(5.2 * len(backbones), 4.4),
                             squeeze=False, sharey=True)
    chance = 100 * final_chance(task_classes(records[0]))["final_avg_acc"]
    points = {}
    for ax, backbone in zip(axes[0], backbones, strict=True):
        points[ax] = []
        for strat, recs in by_arm([r for r in records
                                   if r["config"]["backbone"] == backbone]).items():
            acc = [100 * r["metrics"]["final_avg_acc"] for r in recs]
            mib = float(np.mean([mib_per_task(r) for r in recs]))
            shared = float(np.mean([r["storage"].get("shared_mib", 0.0) for r in recs]))
            color, marker = strategy_style(strat)
            ax.errorbar(mib, np.mean(acc), yerr=np.std(acc, ddof=1) if len(acc) > 1 else None,
                        fmt=marker, color=color, ms=6, capsize=3, alpha=0.85)
            points[ax].append((mib, float(np.mean(acc)), strat + (
                f" (+{shared:.2g} MiB shared)" if shared else ""), color))
        chance_line(ax, chance, "chance (1/classes of the task)")
        ax.set_xscale("log")
        ax.margins(x=0.15, y=0.08)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("MiB/task: what one task adds (log scale; base model excluded)")
        ax.grid(alpha=0.3, which="both")
        ax.set_title(backbone, fontsize=9)
    for ax, pts in points.items():  # once the shared y range is final
        label_points(ax, pts)
    axes[0][0].set_ylabel("final average accuracy % with task ids\n(± std over seeds)")
    fig.suptitle(f"Accuracy vs storage per task — {title}")
    return save(fig, out, name)
