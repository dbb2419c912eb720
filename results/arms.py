"""Which runs are one arm, how records group, and a record's tasks as a person reads them.

An arm is a strategy with its settings on one (stream, backbone): its runs differ only in the
seed (or the machine) and are averaged together; runs that differ in anything else are different
arms, never averaged as if they were seeds.
"""

from __future__ import annotations

import json

import numpy as np

SAME_ARM_IGNORES = ("seed", "stream", "backbone", "suite", "device", "data_root",
                    "hparams_source")


def arm_labels(records: list[dict]) -> list[str]:
    """A label per record naming its strategy; where runs of one strategy on the same stream and
    backbone differ in anything but the seed or the machine (hyperparameters, epochs,
    DropKey...), the label adds the differing settings, so different settings are never
    averaged as if they were seeds."""
    def settings(r):
        cfg = {k: v for k, v in r["config"].items() if k not in SAME_ARM_IGNORES}
        flat = {**{k: v for k, v in cfg.items() if k != "hparams"}, **cfg.get("hparams", {})}
        return {k: json.dumps(v, sort_keys=True) for k, v in flat.items()}

    flats = [settings(r) for r in records]
    labels = []
    for r, flat in zip(records, flats, strict=True):
        name, where = r["config"]["strategy"], (r["config"]["stream"], r["config"]["backbone"])
        peers = [f for f, q in zip(flats, records, strict=True)
                 if q["config"]["strategy"] == name
                 and (q["config"]["stream"], q["config"]["backbone"]) == where]
        differing = sorted(k for k in flat if any(p.get(k) != flat[k] for p in peers))
        labels.append(name if not differing else
                      f"{name} ({', '.join(f'{k}={flat[k]}' for k in differing)})")
    return labels


def by_arm(records: list[dict]) -> dict[str, list[dict]]:
    """Records grouped by :func:`arm_labels`, in first-seen order."""
    out: dict[str, list[dict]] = {}
    for label, r in zip(arm_labels(records), records, strict=True):
        out.setdefault(label, []).append(r)
    return out


def group_records(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """Records grouped by (stream, backbone), in first-seen order."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["config"]["stream"], r["config"]["backbone"]), []).append(r)
    return groups


def task_mean(values) -> float:
    """Mean over tasks of a per-task list; NaN if the record lacks it (an older record)."""
    return float(np.mean(values)) if values and None not in values else np.nan


def task_label(task: dict) -> str:
    """A task as a person reads it: a split stream's "mnist5k 2/8" (classes 2 and 8, not "2 of
    8") becomes "classes 2, 8"; other names stay."""
    classes = [str(c) for c in task.get("classes") or []]
    if classes and task["name"].endswith(" " + "/".join(classes)):
        return "classes " + ", ".join(classes)
    return task["name"]


def task_classes(record: dict) -> list[int]:
    """The number of classes of each task of a record."""
    return [len(t["classes"]) for t in record["tasks"]]
