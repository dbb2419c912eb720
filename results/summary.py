"""The summary of a set of runs: per arm, mean ± std over seeds of every metric, the paired
difference to the classifier and how far its masks moved; the hyperparameters each arm ran
with; a note where the budget was a plumbing check."""

from __future__ import annotations

import numpy as np
import pandas as pd

from results.arms import arm_labels, by_arm, task_mean
from results.comparisons import REFERENCE, reference_difference
from results.formats import as_text
from results.masks import movement_label
from results.stats import PairedDifference
from results.storage import mib_per_task
from results.timing import strategy_train_s

SUMMARY_COLUMNS = ("final_avg_acc", "avg_incremental_acc", "forgetting", "bwt", "above_probe",
                   "probe_acc", "random_probe_acc", "pretrain_gain", "head_vs_probe_train",
                   "mib_per_task", "total_mib", "train_s")


def record_row(rec: dict) -> dict:
    """One flat row per run: identity, metrics, the probe references, storage and time.

    ``pretrain_gain`` = probe on the pre-trained features - probe on a randomly initialized
    backbone (mean over tasks); ``head_vs_probe_train`` = the trained model's accuracy on the
    tasks' training data - the probe's (negative: the head did not converge)."""
    cfg, m = rec["config"], rec["metrics"]
    probe = rec.get("probe_acc") or []
    final = rec["acc_matrix"][-1]
    above = (float(np.mean([a - p for a, p in zip(final, probe, strict=True)]))
             if probe and None not in probe else np.nan)
    random_probe = task_mean(rec.get("random_probe_acc"))
    train_acc, probe_train = rec.get("train_acc"), rec.get("probe_train_acc")
    head_gap = (task_mean([a - p for a, p in zip(train_acc, probe_train, strict=True)])
                if train_acc and probe_train and None not in probe_train else np.nan)
    return {
        "stream": cfg["stream"], "backbone": cfg["backbone"], "strategy": cfg["strategy"],
        "seed": cfg["seed"], "hparams_source": cfg.get("hparams_source", "paper"),
        **{k: m[k] for k in ("final_avg_acc", "avg_incremental_acc",
                                                   "forgetting", "bwt")},
        "above_probe": above,
        "probe_acc": task_mean(probe), "random_probe_acc": random_probe,
        "pretrain_gain": task_mean(probe) - random_probe, "head_vs_probe_train": head_gap,
        "mib_per_task": mib_per_task(rec),
        "total_mib": rec["storage"]["total_mib"],
        "train_s": strategy_train_s(rec),
    }


def runs_frame(records: list[dict]) -> pd.DataFrame:
    rows = [record_row(r) for r in records]
    for row, label in zip(rows, arm_labels(records), strict=True):
        row["strategy"] = label
    return pd.DataFrame(rows)


def summary(records: list[dict]) -> pd.DataFrame:
    """Mean and std over seeds per (stream, backbone, strategy), with n = number of seeds; the
    paired difference of final accuracy to the classifier (``vs_classifier`` with its 95%
    interval, ``results.stats``; NaN where there is no classifier run); the mask movement."""
    df = runs_frame(records)
    keys = ["stream", "backbone", "strategy"]
    g = df.groupby(keys, sort=False)
    out = g[list(SUMMARY_COLUMNS)].mean()
    std = g[list(SUMMARY_COLUMNS)].std(ddof=1).fillna(0.0)
    out = out.join(std.add_suffix("_std"))
    out["n"] = g.size()
    out["hparams"] = g["hparams_source"].agg(lambda s: "/".join(dict.fromkeys(s)))
    out = out.reset_index()
    arms = by_arm(records)
    diffs = [reference_difference(records, arms, tuple(r)) for r in out[keys].itertuples(
        index=False)]
    out["vs_classifier"] = [d.mean if d else np.nan for d in diffs]
    out["vs_classifier_low"] = [d.low if d else np.nan for d in diffs]
    out["vs_classifier_high"] = [d.high if d else np.nan for d in diffs]
    out["masks_changed"] = [movement_label(arms[r.strategy], r.stream, r.backbone)
                            for r in out.itertuples(index=False)]
    return out


def readable_summary(df: pd.DataFrame) -> pd.DataFrame:
    """The summary with "mean ± std" strings (accuracies in %), one row per strategy."""
    def pm(row, col, scale, digits):
        mean, std = row[col] * scale, row[f"{col}_std"] * scale
        return f"{mean:.{digits}f} ± {std:.{digits}f}" if row["n"] > 1 else f"{mean:.{digits}f}"

    rows = []
    for _, r in df.iterrows():
        rows.append({
            "stream": r["stream"], "backbone": r["backbone"], "strategy": r["strategy"],
            "final acc %": pm(r, "final_avg_acc", 100, 1),
            "avg inc acc %": pm(r, "avg_incremental_acc", 100, 1),
            "forgetting %": pm(r, "forgetting", 100, 1),
            "BWT %": pm(r, "bwt", 100, 1),
            "vs probe %": pm(r, "above_probe", 100, 1),
            f"vs {REFERENCE} % [95% CI]": PairedDifference(
                r["vs_classifier"], r["vs_classifier_low"], r["vs_classifier_high"],
                int(r["n"])).format() if not np.isnan(r["vs_classifier"]) else "--",
            "probe %": pm(r, "probe_acc", 100, 1),
            "random-init probe %": pm(r, "random_probe_acc", 100, 1),
            "pre-train gain %": pm(r, "pretrain_gain", 100, 1),
            "train acc - probe's %": pm(r, "head_vs_probe_train", 100, 1),
            "masks changed %": r["masks_changed"] or "--",
            "MiB/task": f"{r['mib_per_task']:.4f}",
            "total MiB": f"{r['total_mib']:.3f}",
            "train s": pm(r, "train_s", 1, 0),
            "n": int(r["n"]),
            "hparams": r["hparams"],
        })
    return pd.DataFrame(rows)


def format_summary(df: pd.DataFrame) -> str:
    """Human table per (stream, backbone): mean ± std (n) per strategy, accuracies in %."""
    table = readable_summary(df)
    return "\n\n".join(
        f"{stream} / {backbone}\n"
        + as_text(rows.drop(columns=["stream", "backbone"]).set_index("strategy"))
        for (stream, backbone), rows in table.groupby(["stream", "backbone"], sort=False))


def hparams_table(records: list[dict]) -> pd.DataFrame:
    """Per (stream, backbone, strategy arm): where its hyperparameters come from (paper, tuned,
    user) and their values."""
    rows = {}
    for label, r in zip(arm_labels(records), records, strict=True):
        cfg = r["config"]
        rows.setdefault((cfg["stream"], cfg["backbone"], label), {
            "stream": cfg["stream"], "backbone": cfg["backbone"], "strategy": label,
            "source": cfg.get("hparams_source", "paper"),
            "values": ", ".join(f"{k}={v}" for k, v in sorted(cfg["hparams"].items()))})
    return pd.DataFrame(list(rows.values()))


COMPARISON_STEPS = 100  # per task: below it, a run checks the plumbing, not the strategy


def budget_note(records: list[dict]) -> str | None:
    """One line when every trained run took fewer than :data:`COMPARISON_STEPS` optimizer steps
    per task (the smoke suite's budget): such numbers rank training budgets, not strategies."""
    steps = [s for r in records for s in r.get("train_steps") or [] if s]
    if not steps or max(steps) >= COMPARISON_STEPS:
        return None
    return (f"Note: at most {max(steps)} optimizer steps per task — a plumbing check, not a "
            f"comparison of strategies (compare at >= {COMPARISON_STEPS} steps per task, e.g. "
            "`make benchmark`).")
