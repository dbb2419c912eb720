"""Token masks (MEAT): the patches each masked layer keeps, drawn over the task's example image,
and the kept fraction per layer for every task."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from results.arms import task_label
from results.figure_style import save
from results.records import read_token_masks


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
