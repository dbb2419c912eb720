"""Storage as the report shows it: what one task adds (MiB/task, the base model and what is kept
once for all tasks excluded), and the storage bills of ``run_benchmark.py storage`` as a
table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from results.formats import as_text, to_csv


def mib_per_task(rec: dict) -> float:
    """What one task adds (MiB/task): the mean over tasks of ``per_task_mib``, the base model and
    what is kept once for all tasks (``shared_mib``, e.g. L2P's prompt pool) excluded."""
    per_task = rec["storage"]["per_task_mib"]
    return float(np.mean(per_task)) if per_task else 0.0


def storage_frame(bills: dict[str, dict], classes: list[int]) -> pd.DataFrame:
    """Long format: one row per (strategy, task numbered from 1) of ``storage`` bills
    (``strategies.storage.strategy_bill``)."""
    rows = []
    for name, b in bills.items():
        for t, n in enumerate(classes):
            rows.append({"strategy": name, "task": t + 1, "classes": n,
                         "bits": b["per_task_bits"][t], "mib": b["per_task_mib"][t],
                         "pct_of_backbone": b["per_task_pct_of_backbone"][t],
                         "total_mib": b["total_mib"], "forgets": b["forgets"]})
    return pd.DataFrame(rows)


def format_storage(bills: dict[str, dict], classes: list[int], fmt: str) -> str:
    """The storage bill as a table (per task in MiB, % of the backbone, what is kept once for all
    tasks, total), JSON or CSV."""
    if fmt == "json":
        keys = ("total_mib", "total_bits", "base_mib", "shared_mib", "per_task_bits",
                "per_task_mib", "per_task_pct_of_backbone", "forgets", "keeps")
        return json.dumps({n: {k: b[k] for k in keys} for n, b in bills.items()}, indent=2)
    df = storage_frame(bills, classes)
    if fmt == "csv":
        return to_csv(df, index=False).rstrip("\n")
    table = df.pivot(index="strategy", columns="task", values="mib").loc[list(bills)]
    table.columns = [f"task {t + 1} ({n} cl.) MiB" for t, n in enumerate(classes)]
    table["per task % of backbone"] = [float(np.mean(b["per_task_pct_of_backbone"]))
                                       for b in bills.values()]
    table["shared MiB"] = [b["shared_mib"] for b in bills.values()]  # kept once for all tasks
    table["total MiB"] = [b["total_mib"] for b in bills.values()]
    table["can forget"] = ["yes" if b["forgets"] else "no" for b in bills.values()]
    base = next(iter(bills.values()))["base_mib"]
    return (f"base model (fp32, with its original head): {base:.2f} MiB\n"
            + as_text(table, float_format=lambda v: f"{v:.4f}"))
