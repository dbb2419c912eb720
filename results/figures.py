"""matplotlib figures from run records (PNG and PDF): every figure of a report.

Every figure function takes records (and for the token-mask figure, a run folder) and writes
``<name>.png`` and ``<name>.pdf`` into ``out``; it returns the written paths. Every strategy has
one color and marker in every figure (``results.figure_style``); every accuracy figure draws its
chance level (artists with gid ``"chance"``, ``results.figure_style.CHANCE``), and every label
drawn inside an axes stays inside it (``results.figure_labels``). Tasks and layers are numbered
from 1.
"""

from __future__ import annotations

from pathlib import Path

from results.arms import group_records
from results.figure_accuracy import heatmaps, task_curves
from results.figure_task_agnostic import task_agnostic
from results.figure_time import train_time
from results.figure_tokens import token_mask_figure
from results.figure_tradeoff import tradeoff
from results.formats import safe_name


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
