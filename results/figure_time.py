"""Training time per strategy and backbone, with a note where the runs' timing conditions are
unknown or differ."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from results.arms import by_arm
from results.figure_labels import keep_inside
from results.figure_style import save, strategy_color
from results.timing import strategy_train_s, timing_note


def train_time(records: list[dict], out: Path, title: str, name: str) -> list[Path]:
    """Training seconds per strategy without the probe fit (mean over seeds, std as error bar),
    grouped by backbone; a note inside the axes where the runs' timing conditions are unknown or
    differ (``results.timing.timing_note``)."""
    backbones = sorted({r["config"]["backbone"] for r in records})
    strategies = list(by_arm(records))
    width = 0.8 / len(backbones)
    fig_width = max(6.0, 0.9 * len(strategies))
    fig, ax = plt.subplots(figsize=(fig_width, 3.6))
    for b_idx, backbone in enumerate(backbones):
        groups = by_arm([r for r in records if r["config"]["backbone"] == backbone])
        xs, means, stds = [], [], []
        for s_idx, strat in enumerate(strategies):
            if strat in groups:
                t = [strategy_train_s(r) for r in groups[strat]]
                xs.append(s_idx + (b_idx - (len(backbones) - 1) / 2) * width)
                means.append(np.mean(t))
                stds.append(np.std(t, ddof=1) if len(t) > 1 else 0)
        ax.bar(xs, means, width, yerr=stds if any(stds) else None, capsize=2, label=backbone,
               color=[strategy_color(s) for s in strategies if s in groups],
               hatch=["", "//", "..", "xx"][b_idx % 4], edgecolor="gray", linewidth=0.5)
    ax.set_xticks(range(len(strategies)))
    ax.set_xticklabels(strategies, rotation=30, ha="right")
    ax.set_ylabel("training time (s)")
    if len(backbones) > 1:
        ax.legend(fontsize=7, title="backbone (hatch)")
    note = timing_note(records)
    if note:
        text = textwrap.fill(note, width=int(8 * fig_width))  # ~ 2/3 of the axes at 7 pt
        ax.set_ylim(top=ax.get_ylim()[1] * (1.12 + 0.1 * text.count("\n")))
        keep_inside(ax, [ax.text(0.01, 0.98, text, transform=ax.transAxes, va="top",
                                 fontsize=7, color="firebrick")])
    ax.set_title(f"Training time per strategy — {title}")
    return save(fig, out, name)
