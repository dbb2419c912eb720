"""matplotlib figures from run records (PNG and PDF), one consistent color and marker per
strategy.

Every function takes records (and for the token-mask figure, a run folder) and writes
``<name>.png`` and ``<name>.pdf`` into ``out``; it returns the written paths. Every accuracy
figure draws its chance level (artists with gid ``"chance"``, :data:`CHANCE`), and every label
drawn inside an axes stays inside it (:func:`keep_inside`, :func:`label_points`). Tasks and
layers are numbered from 1.
"""

from __future__ import annotations

import hashlib
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.lines  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.text  # noqa: E402
import matplotlib.ticker  # noqa: E402
import matplotlib.transforms  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from results.metrics import (  # noqa: E402
    class_incremental_chance,
    final_average_accuracy,
    final_chance,
    task_incremental_chance,
)
from results.records import read_token_masks  # noqa: E402
from results.tables import (  # noqa: E402
    by_arm,
    collapse_label,
    group_records,
    mib_per_task,
    safe_name,
    strategy_train_s,
    task_classes,
    task_label,
    timing_note,
)

# (color, marker) of the suite's strategies: no two share a marker, and no two colors are closer
# than 30 in CIELAB (Delta E 1976; tests/test_figures.py)
STYLES = {"meat": ("tab:red", "o"), "piggyback": ("tab:blue", "s"), "hat": ("tab:orange", "D"),
          "adapter": ("tab:green", "^"), "lwf": ("tab:purple", "v"),
          "finetune": ("saddlebrown", "<"), "individual": ("deeppink", ">"),
          "classifier": ("tab:gray", "P"), "supsup": ("tab:olive", "p"),
          "lora": ("tab:cyan", "h"), "vpt": ("black", "X"), "l2p": ("navy", "d"),
          "dualprompt": ("magenta", "8"), "coda-prompt": ("darkgoldenrod", "*")}
PALETTE = ("blue", "palevioletred", "darkolivegreen", "blueviolet", "darksalmon", "darkmagenta")
OTHER_MARKERS = ("H", "o", "s", "D")  # other strategies: palette color and marker by name hash
CHANCE = {"color": "black", "ls": ":", "lw": 1.2, "gid": "chance"}  # a chance line's style
PROTOCOLS = {"acc_matrix": "with task ids (task-incremental)",  # what each matrix measures
             "cil_acc_matrix": "without task ids (class-incremental)"}


def strategy_style(label: str) -> tuple[str, str]:
    """The strategy's (color, marker) in every figure (fixed for the suite's strategies; others
    by a stable hash); ``label`` may carry settings after the name ("meat (tau=4.0)")."""
    name = label.split(" (")[0]
    if name in STYLES:
        return STYLES[name]
    h = int(hashlib.md5(name.encode()).hexdigest(), 16)
    return PALETTE[h % len(PALETTE)], OTHER_MARKERS[h // len(PALETTE) % len(OTHER_MARKERS)]


def strategy_color(label: str):
    """The strategy's color (:func:`strategy_style`)."""
    return strategy_style(label)[0]


def save(fig, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    fig.set_label(name)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=130, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def mean_matrix(records: list[dict], key: str = "acc_matrix") -> np.ndarray:
    """Mean accuracy matrix (%, ``key``: or ``cil_acc_matrix``) over the records' seeds; NaN
    where not evaluated."""
    mats = [np.array([[np.nan if v is None else v for v in row] for row in r[key]])
            for r in records]
    return 100 * np.mean(mats, axis=0)


def to_axes(ax, x: float, y: float) -> tuple[float, float]:
    """Data point -> axes fraction (with the axes' scales), after autoscaling."""
    ax.autoscale_view()
    return tuple((ax.transScale + ax.transLimits).transform((x, y)))


def keep_inside(ax, texts, pad: float = 2.0) -> None:
    """Move each text (positioned in axes fraction) by the least that brings its drawn extent
    ``pad`` pixels inside the axes (the layout is drawn first, so the extents are final)."""
    fig = ax.figure
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    for t in texts:
        ext = text_extent(t, renderer)
        dx = max(0.0, box.x0 + pad - ext.x0) - max(0.0, ext.x1 - box.x1 + pad)
        dy = max(0.0, box.y0 + pad - ext.y0) - max(0.0, ext.y1 - box.y1 + pad)
        x, y = t.get_position()
        t.set_position((x + dx / box.width, y + dy / box.height))


def text_extent(t, renderer):
    """The drawn extent of a text alone (an annotation's without its arrow)."""
    if isinstance(t, matplotlib.text.Annotation):
        t.update_positions(renderer)
    return matplotlib.text.Text.get_window_extent(t, renderer)


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


def chance_line(ax, value: float, text: str) -> None:
    """A horizontal chance line at ``value`` (%), named just above it at the axes' right end."""
    ax.axhline(value, **CHANCE)
    ax.text(0.99, value, f"{text}: {value:.1f}%", transform=ax.get_yaxis_transform(),
            ha="right", va="bottom", fontsize=7, gid="chance")


def tradeoff(records: list[dict], out: Path, title: str, name: str) -> list[Path]:
    """Final average accuracy with task ids vs what one task adds (MiB/task, the base model
    excluded, ``results.tables.mib_per_task``; log x), one panel per backbone, over the chance
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


# where a point's label may go, in points from the point, nearest first: beside it (right or
# left), then further above or below, then further out
LABEL_SPOTS = [(dx, dy) for reach in (10, 40, 80) for dy in
               (0, 9, -9, 18, -18, 27, -27, 36, -36, 54, -54, 72, -72, 96, -96)
               for dx in (reach, -reach)]
POINT_PX = 6.0  # half the side of the box a point's marker (and error bar) keeps free


def label_points(ax, points: list[tuple[float, float, str, str]]) -> None:
    """Name each (x, y, text, color) data point beside it, at the first of :data:`LABEL_SPOTS`
    where the label lies inside the axes and covers no other label or point (failing that,
    where it covers the least), tied to its point by a thin line."""
    fig = ax.figure
    fig.draw_without_rendering()
    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    scale = fig.dpi / 72  # pixels per point
    centres = ax.transData.transform([(x, y) for x, y, _, _ in points])
    taken = [matplotlib.transforms.Bbox.from_extents(cx - POINT_PX, cy - POINT_PX,
                                                     cx + POINT_PX, cy + POINT_PX)
             for cx, cy in centres]

    def cost(ext):
        outside = (max(0, box.x0 - ext.x0) + max(0, ext.x1 - box.x1)
                   + max(0, box.y0 - ext.y0) + max(0, ext.y1 - box.y1))
        overlap = sum(max(0, min(ext.x1, b.x1) - max(ext.x0, b.x0))
                      * max(0, min(ext.y1, b.y1) - max(ext.y0, b.y0)) for b in taken)
        return 1e6 * outside + overlap

    for x, y, text, color in sorted(points):  # left to right
        label = ax.annotate(text, xy=(x, y), xytext=(0, 0), textcoords="offset points", fontsize=7,
                            color=color, va="center",
                            arrowprops={"arrowstyle": "-", "lw": 0.5, "color": color,
                                        "alpha": 0.6, "shrinkA": 1, "shrinkB": POINT_PX / 2})
        best = None
        for dx, dy in LABEL_SPOTS:
            label.set_position((dx, dy))
            label.set_horizontalalignment("left" if dx > 0 else "right")
            ext = text_extent(label, renderer)
            c = cost(ext)
            if best is None or c < best[0]:
                best = (c, dx, dy, ext)
            if c == 0:
                break
        _, dx, dy, ext = best
        label.set_position((dx, dy))
        label.set_horizontalalignment("left" if dx > 0 else "right")
        taken.append(ext.padded(1.5 * scale))


def train_time(records: list[dict], out: Path, title: str, name: str) -> list[Path]:
    """Training seconds per strategy without the probe fit (mean over seeds, std as error bar),
    grouped by backbone; a note inside the axes where the runs' timing conditions are unknown or
    differ (``results.tables.timing_note``)."""
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


def token_mask_figure(run_dir: Path, record: dict, out: Path, name: str) -> list[Path]:
    """For a run with token masks (MEAT): for its last task, the kept patch tokens of every
    masked layer drawn over the task's example image (dropped patches greyed out), and the kept
    fraction per layer for every task (from the run's ``token_masks.json``,
    :func:`results.records.read_token_masks`)."""
    masks = [{layer_label(path): torch.tensor(keep) for path, keep in task.items()}
             for task in read_token_masks(run_dir)[:len(record["acc_matrix"])]]
    if not masks or not masks[-1]:
        return []
    examples = torch.load(run_dir / "examples.pt", map_location="cpu",
                          weights_only=True)["images"]
    last = len(masks) - 1
    layers = masks[last]
    fig, axes = plt.subplots(1, len(layers) + 1, figsize=(2.2 * (len(layers) + 1), 2.6),
                             squeeze=False, layout="constrained",
                             gridspec_kw={"width_ratios": [1] * len(layers) + [1.6]})
    img = examples[last].float()
    img = img.mean(0) if img.shape[0] > 1 else img[0]
    for ax, (layer, m) in zip(axes[0], layers.items(), strict=False):
        side = int(round(np.sqrt(m.numel())))
        keep = m.reshape(side, side).float()
        kept = torch.nn.functional.interpolate(keep[None, None], size=img.shape,
                                               mode="nearest")[0, 0].numpy()
        dropped = np.zeros((*img.shape, 4))
        dropped[kept == 0] = (0.85, 0.1, 0.1, 0.7)  # translucent red over dropped patches
        ax.imshow(img, cmap="gray")
        ax.imshow(dropped)
        ax.set_title(f"{layer}\nkept {int(keep.sum())}/{keep.numel()}", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = axes[0][-1]
    for t, layers_t in enumerate(masks):
        frac = [float(m.float().mean()) for m in layers_t.values()]
        ax.plot(range(1, len(frac) + 1), frac, marker="o", ms=3, label=f"task {t + 1}")
    ax.set_xticks(range(1, len(layers) + 1))
    ax.set_xlabel("masked layer (as the panels)")
    ax.set_ylabel("kept fraction")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    cfg = record["config"]
    fig.suptitle(f"{cfg['strategy']} token masks, task {last + 1} "
                 f"({task_label(record['tasks'][last])}), "
                 f"{cfg['backbone']} / {cfg['stream']} seed {cfg['seed']}; "
                 + ("red = dropped" if any(not bool(m.all()) for m in layers.values())
                    else "no token dropped in any layer"),
                 fontsize=8)
    return save(fig, out, name)


def layer_label(path: str) -> str:
    """A module path as a person reads it, numbered from 1: "blocks.0" -> "block 1",
    "stages.1.0" -> "stage 2.1" (stage 2, its block 1)."""
    words, numbers = [], []
    for part in path.split("."):
        if part.isdigit():
            numbers.append(str(int(part) + 1))
        else:
            words.append(part.removesuffix("s"))
    return " ".join(words) + (" " + ".".join(numbers) if numbers else "")


def all_figures(records: list[dict], run_dirs: dict[str, Path], out: Path) -> list[Path]:
    """Every figure for a set of records; ``run_dirs`` maps run_id -> its folder."""
    paths: list[Path] = []
    for (stream, backbone), recs in group_records(records).items():
        title = f"{backbone} / {stream}"
        tag = safe_name(f"{stream}_{backbone}")
        paths += heatmaps(recs, out, title, f"heatmap_{tag}")
        agnostic = [r for r in recs if "cil_acc_matrix" in r]
        if agnostic:
            paths += heatmaps(agnostic, out, title, f"heatmap_class_incremental_{tag}",
                              "cil_acc_matrix")
        paths += task_curves(recs, out, title, f"task_curves_{tag}")
    for stream in dict.fromkeys(r["config"]["stream"] for r in records):
        recs = [r for r in records if r["config"]["stream"] == stream]
        paths += tradeoff(recs, out, stream, f"tradeoff_{safe_name(stream)}")
        paths += train_time(recs, out, stream, f"train_time_{safe_name(stream)}")
        if any("cil_final_avg_acc" in r["metrics"] for r in recs):
            paths += task_agnostic(recs, out, stream, f"task_agnostic_{safe_name(stream)}")
    shown = set()
    for r in records:
        key = (r["config"]["stream"], r["config"]["backbone"], r["config"]["strategy"])
        folder = run_dirs.get(r.get("run_id", ""))
        if key in shown or folder is None or not (folder / "examples.pt").exists():
            continue
        figs = token_mask_figure(folder, r, out, safe_name("tokens_" + "_".join(key)))
        if figs:
            shown.add(key)
            paths += figs
    return paths
