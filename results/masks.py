"""How far masks moved in training: per run, task and mask kind, the fraction of entries changed
from the task's initial mask (where nothing changed, the mask method was not tested)."""

from __future__ import annotations

import pandas as pd

from results.arms import arm_labels


def movement_rows(records: list[dict]) -> pd.DataFrame:
    """Long format: per run, task (numbered from 1) and mask kind, the fraction of entries
    changed from the task's initial mask and the fraction kept."""
    rows = []
    for label, r in zip(arm_labels(records), records, strict=True):
        cfg = r["config"]
        for task, kinds in enumerate(r.get("mask_movement") or [], start=1):
            for kind, m in kinds.items():
                rows.append({"stream": cfg["stream"], "backbone": cfg["backbone"],
                             "strategy": label, "seed": cfg["seed"], "task": task,
                             "kind": kind, "entries": m["entries"], "changed": m["changed"],
                             "kept": m["kept"]})
    return pd.DataFrame(rows)


def movement_table(records: list[dict]) -> pd.DataFrame:
    """Per (stream, backbone, strategy, task, kind): % of mask entries changed from their
    initial state and % kept, means over seeds, and on how many seeds nothing changed."""
    df = movement_rows(records)
    if df.empty:
        return df
    g = df.groupby(["stream", "backbone", "strategy", "task", "kind"], sort=False)
    out = pd.DataFrame({"changed %": 100 * g["changed"].mean(), "kept %": 100 * g["kept"].mean(),
                        "static seeds": g["changed"].agg(lambda c: int((c == 0).sum())),
                        "seeds": g.size()})
    return out.reset_index()


def movement_label(records: list[dict], stream: str, backbone: str) -> str:
    """"token 9.1, ffn 0.0!": mean % of entries changed per mask kind over tasks and seeds;
    "!" where some task of some seed changed nothing (the method was not tested there)."""
    df = movement_rows([r for r in records
                        if (r["config"]["stream"], r["config"]["backbone"]) == (stream, backbone)])
    if df.empty:
        return ""
    parts = []
    for kind, rows in df.groupby("kind", sort=False):
        mark = "!" if (rows["changed"] == 0).any() else ""
        parts.append(f"{kind} {100 * rows['changed'].mean():.1f}{mark}")
    return ", ".join(parts)
