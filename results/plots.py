"""matplotlib figures from run records (PNG and PDF), one consistent color per strategy.

Every function takes records (and for the token-mask figure, a run folder) and writes
``<name>.png`` and ``<name>.pdf`` into ``out``; it returns the written paths.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.lines  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from models.tasks import load_task_file  # noqa: E402
from results.tables import by_arm, group_records, safe_name, strategy_train_s  # noqa: E402

COLORS = {"meat": "tab:red", "piggyback": "tab:blue", "hat": "tab:orange",
          "adapter": "tab:green", "lwf": "tab:purple", "finetune": "tab:brown",
          "individual": "tab:pink", "classifier": "tab:gray", "supsup": "tab:olive",
          "lora": "tab:cyan", "vpt": "teal", "l2p": "navy", "dualprompt": "maroon",
          "coda-prompt": "gold"}
PALETTE = ("black", "lime", "indigo", "salmon", "darkkhaki", "crimson")  # others, by name hash
MARKERS = "osD^v<>Pp*"


def strategy_color(label: str):
    """The strategy's color in every figure (fixed for the suite's strategies; others by a
    stable hash); ``label`` may carry settings after the name ("meat (tau=4.0)")."""
    name = label.split(" (")[0]
    if name in COLORS:
        return COLORS[name]
    return PALETTE[int(hashlib.md5(name.encode()).hexdigest(), 16) % len(PALETTE)]


def save(fig, out: Path, name: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=130, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def mean_matrix(records: list[dict]) -> np.ndarray:
    """Mean accuracy matrix (%) over the records' seeds; NaN where not evaluated."""
    mats = [np.array([[np.nan if v is None else v for v in row] for row in r["acc_matrix"]])
            for r in records]
    return 100 * np.mean(mats, axis=0)


def heatmaps(records: list[dict], out: Path, title: str, name: str) -> list[Path]:
    """One accuracy-matrix heatmap per strategy: row = after training task i, column = task j."""
    groups = by_arm(records)
    n = len(groups)
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols + 1.0, 3.0 * rows), squeeze=False,
                             layout="constrained")
    for k, (ax, (strat, recs)) in enumerate(zip(axes.flat, groups.items(), strict=False)):
        m = mean_matrix(recs)
        im = ax.imshow(m, vmin=0, vmax=100, cmap="viridis")
        for (i, j), v in np.ndenumerate(m):
            if not np.isnan(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if v < 60 else "black")
        ax.set_title(strat, color=strategy_color(strat), fontsize=10)
        if k % cols == 0:
            ax.set_ylabel("after training task i")
        if k >= n - cols:
            ax.set_xlabel("evaluated task j")
        ax.set_xticks(range(m.shape[1]), [str(j + 1) for j in range(m.shape[1])])
        ax.set_yticks(range(m.shape[0]), [str(i + 1) for i in range(m.shape[0])])
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.colorbar(im, ax=axes, shrink=0.7, label="accuracy %")
    fig.suptitle(f"Accuracy matrices (%, mean over seeds) — {title}")
    return save(fig, out, name)


def task_curves(records: list[dict], out: Path, title: str, name: str) -> list[Path]:
    """Accuracy on each task (one panel per task) as later tasks are learned. Strategies differ
    in color and marker and are dodged sideways, so curves that coincide (every strategy that
    cannot forget is flat) stay visible."""
    groups = by_arm(records)
    T = len(records[0]["acc_matrix"])
    task_names = [t["name"] for t in records[0]["tasks"]]
    fig, axes = plt.subplots(1, T, figsize=(2.6 * T, 2.8), sharey=True, squeeze=False)
    dodge = 0.5 / max(len(groups), 1)
    for j, ax in enumerate(axes[0]):
        for k, (strat, recs) in enumerate(groups.items()):
            m = mean_matrix(recs)
            x = np.arange(j, T) + (k - (len(groups) - 1) / 2) * dodge
            ax.plot(x, m[j:, j], marker=MARKERS[k % len(MARKERS)], ms=3.5,
                    lw=1, color=strategy_color(strat), label=strat)
        ax.set_title(f"task {j + 1}: {task_names[j]}", fontsize=8)
        ax.set_xlabel("after task")
        ax.set_xticks(range(T), [str(t + 1) for t in range(T)])
        ax.set_xlim(-0.5, T - 0.5)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy %")
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle(f"Accuracy on each task across the sequence — {title}", y=1.04)
    return save(fig, out, name)


def tradeoff(records: list[dict], out: Path, title: str, name: str) -> list[Path]:
    """Final average accuracy vs total storage (log x), one panel per backbone, every point named
    beside it (:func:`label_points`); error bars = std over seeds (none for a single run)."""
    backbones = sorted({r["config"]["backbone"] for r in records})
    fig, axes = plt.subplots(1, len(backbones), figsize=(5.2 * len(backbones), 4.4),
                             squeeze=False, sharey=True)
    for ax, backbone in zip(axes[0], backbones, strict=True):
        points = []
        for strat, recs in by_arm([r for r in records
                                   if r["config"]["backbone"] == backbone]).items():
            acc = [100 * r["metrics"]["final_avg_acc"] for r in recs]
            mib = float(np.mean([r["storage"]["total_mib"] for r in recs]))
            color = strategy_color(strat)
            ax.errorbar(mib, np.mean(acc), yerr=np.std(acc, ddof=1) if len(acc) > 1 else None,
                        fmt="o", color=color, ms=6, capsize=3, alpha=0.85)
            points.append((mib, float(np.mean(acc)), strat, color))
        ax.set_xscale("log")
        ax.margins(x=0.15, y=0.08)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel("total storage after all tasks (MiB, log scale)")
        ax.grid(alpha=0.3, which="both")
        ax.set_title(backbone, fontsize=9)
        label_points(ax, points)
    axes[0][0].set_ylabel("final average accuracy % (± std over seeds)")
    fig.suptitle(f"Accuracy vs storage — {title}")
    return save(fig, out, name)


def task_agnostic(records: list[dict], out: Path, title: str, name: str) -> list[Path]:
    """Per backbone, every strategy evaluated without task ids: final accuracy with task ids
    (filled circle), without them (class-incremental, open square; a line joins the two) and the
    task-inference accuracy (cross); means over seeds with std bars; strategies ordered by
    class-incremental accuracy."""
    records = [r for r in records if "cil_final_avg_acc" in r["metrics"]]
    backbones = sorted({r["config"]["backbone"] for r in records})
    fig, axes = plt.subplots(1, len(backbones), figsize=(5.6 * len(backbones), 4.4),
                             squeeze=False, sharey=True)
    for ax, backbone in zip(axes[0], backbones, strict=True):
        arms = by_arm([r for r in records if r["config"]["backbone"] == backbone])

        def stat(recs, metric):
            v = 100 * np.array([r["metrics"][metric] for r in recs])
            return v.mean(), (v.std(ddof=1) if len(v) > 1 else None)

        order = sorted(arms, key=lambda a: stat(arms[a], "cil_final_avg_acc")[0], reverse=True)
        for x, label in enumerate(order):
            color = strategy_color(label)
            (til, til_sd), (cil, cil_sd), (ti, ti_sd) = (
                stat(arms[label], m) for m in ("final_avg_acc", "cil_final_avg_acc",
                                               "task_inference_acc"))
            ax.plot([x, x], [cil, til], color=color, lw=1.5, alpha=0.6)
            ax.errorbar(x, til, yerr=til_sd, fmt="o", color=color, ms=7, capsize=3)
            ax.errorbar(x, cil, yerr=cil_sd, fmt="s", color=color, mfc="white", ms=7,
                        capsize=3)
            ax.errorbar(x, ti, yerr=ti_sd, fmt="x", color=color, ms=7, capsize=2)
        ax.set_xticks(range(len(order)), order, rotation=45, ha="right", fontsize=8)
        ax.set_title(backbone, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("final average accuracy % (± std over seeds)")
    handles = [matplotlib.lines.Line2D([], [], color="gray", marker=m, ls="", mfc=f, ms=7,
                                       label=text)
               for m, f, text in (("o", "gray", "with task ids (task-incremental)"),
                                  ("s", "white", "without (class-incremental)"),
                                  ("x", "gray", "task inferred right"))]
    axes[0][-1].legend(handles=handles, fontsize=7, loc="best")
    fig.suptitle(f"With and without task ids at test time — {title}")
    return save(fig, out, name)


LABEL_GAP = 0.055  # axes heights between two labels' centres


def label_points(ax, points: list[tuple[float, float, str, str]]) -> None:
    """Write each (x, y, text, color) point's text beside it: right of the point, left of it in
    the axes' right third; labels on a side are spread vertically to be >= ``LABEL_GAP`` apart,
    each tied to its point by a thin line."""
    ax.autoscale_view()
    to_axes = ax.transScale + ax.transLimits  # data -> axes fraction, with the log scale
    placed = [(*to_axes.transform((x, y)), text, color) for x, y, text, color in points]
    for right in (True, False):
        side = sorted((p for p in placed if (p[0] < 0.67) == right), key=lambda p: p[1])
        ys = []
        for _, y, _, _ in side:
            ys.append(max(y, ys[-1] + LABEL_GAP) if ys else y)
        overflow = (ys[-1] - 0.97) if ys else 0
        if overflow > 0:  # shift the column down, keeping the gaps
            ys = [y - overflow for y in ys]
        for (x, y, text, color), label_y in zip(side, ys, strict=True):
            ax.annotate(text, xy=(x, y), xycoords="axes fraction", fontsize=7, color=color,
                        xytext=(x + (0.05 if right else -0.05), label_y),
                        textcoords="axes fraction", va="center", ha="left" if right else "right",
                        arrowprops={"arrowstyle": "-", "lw": 0.5, "color": color, "alpha": 0.6})


def train_time(records: list[dict], out: Path, title: str, name: str) -> list[Path]:
    """Training seconds per strategy without the probe fit (mean over seeds, std as error bar),
    grouped by backbone."""
    backbones = sorted({r["config"]["backbone"] for r in records})
    strategies = list(by_arm(records))
    width = 0.8 / len(backbones)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(strategies)), 3.6))
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
               hatch=["", "//", "..", "xx"][b_idx % 4], edgecolor="black", linewidth=0.5)
    ax.set_xticks(range(len(strategies)))
    ax.set_xticklabels(strategies, rotation=30, ha="right")
    ax.set_ylabel("training time (s)")
    if len(backbones) > 1:
        ax.legend(fontsize=7, title="backbone (hatch)")
    ax.set_title(f"Training time per strategy — {title}")
    return save(fig, out, name)


def token_mask_figure(run_dir: Path, record: dict, out: Path, name: str) -> list[Path]:
    """For a run with token masks (MEAT): for its last task, the kept patch tokens of every
    masked layer drawn over the task's example image (dropped patches greyed out), and the kept
    fraction per layer for every task."""
    masks = token_masks(run_dir, len(record["acc_matrix"]))
    if not masks or not masks[-1]:
        return []
    examples = torch.load(run_dir / "examples.pt", map_location="cpu",
                          weights_only=True)["images"]
    last = len(masks) - 1
    layers = masks[last]
    fig, axes = plt.subplots(1, len(layers) + 1, figsize=(2.2 * (len(layers) + 1), 2.6),
                             squeeze=False, gridspec_kw={"width_ratios": [1] * len(layers) + [1.6]})
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
        ax.plot(range(len(frac)), frac, marker="o", ms=3, label=f"task {t + 1}")
    ax.set_xlabel("masked layer")
    ax.set_ylabel("kept fraction")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    cfg = record["config"]
    fig.suptitle(f"{cfg['strategy']} token masks, task {last + 1} "
                 f"({record['tasks'][last]['name']}), "
                 f"{cfg['backbone']} / {cfg['stream']} seed {cfg['seed']}; "
                 + ("red = dropped" if any(not bool(m.all()) for m in layers.values())
                    else "no token dropped in any layer"),
                 fontsize=8, y=1.05)
    return save(fig, out, name)


def token_masks(run_dir: Path, n_tasks: int) -> list[dict[str, torch.Tensor]]:
    """Per task, {layer: boolean token mask} read from the run's per-task files
    (``models.tasks.save_task_file``: tensors of kind "token" are token masks)."""
    out = []
    for t in range(n_tasks):
        path = run_dir / "tasks" / f"task_{t}.pt"
        if not path.exists():
            break
        layers = {}
        for key, tensor in load_task_file(path).items():
            if tensor.kind == "token":
                label = key.split(".token_mask.")[0].removeprefix("backbone.")
                layers[label.replace(".attn", "")] = tensor.decoded()
        out.append(layers)
    return out


def all_figures(records: list[dict], run_dirs: dict[str, Path], out: Path) -> list[Path]:
    """Every figure for a set of records; ``run_dirs`` maps run_id -> its folder."""
    paths: list[Path] = []
    for (stream, backbone), recs in group_records(records).items():
        title = f"{backbone} / {stream}"
        tag = safe_name(f"{stream}_{backbone}")
        paths += heatmaps(recs, out, title, f"heatmap_{tag}")
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
