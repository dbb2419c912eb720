"""The headline of one stream: every strategy on one line, ranked, beside its references.

``headline_table`` gives, per strategy, its final average accuracy with task ids on each
backbone with the paired difference to the classifier (the converged probe on the frozen
backbone), its last accuracy without task ids on the main backbone with the paired difference to
SimpleCIL, and its total storage on the main backbone; then the class-incremental references
(SimpleCIL, the joint probe). The main backbone is the one most strategies ran on (ties: by
name); rows are ranked by final accuracy on it. The README quotes the committed report's table
verbatim (``tests/test_committed_results.py``), so its numbers are the committed records'.

``pairwise_table`` gives every pair of strategies of each (stream, backbone), in both settings,
with the paired difference and whether it separates them: the source of every ranking the docs
state.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from results.arms import by_arm, group_records
from results.comparisons import (
    CIL_REFERENCES,
    REFERENCE,
    compare,
    reference_difference,
    within_run_difference,
)

MISSING = "--"


def mean_pct(runs: list[dict], metric: str) -> float:
    return 100 * float(np.mean([r["metrics"][metric] for r in runs]))


def main_backbone(arms_per_backbone: dict[str, dict[str, list[dict]]]) -> str:
    """The backbone with the most arms; ties broken by name."""
    return min(arms_per_backbone, key=lambda b: (-len(arms_per_backbone[b]), b))


def headline_table(records: list[dict], stream: str) -> pd.DataFrame:
    """One row per strategy of ``stream`` (ranked by final accuracy with task ids on the main
    backbone), then the class-incremental references (where the runs were evaluated without
    task ids). Cells are "mean (difference [95% CI])" in %, "--" where a strategy did not
    run."""
    groups = {b: recs for (s, b), recs in group_records(records).items() if s == stream}
    if not groups:
        raise ValueError(f"no records of stream {stream!r}")
    arms = {b: by_arm(recs) for b, recs in groups.items()}
    main = main_backbone(arms)
    backbones = [main, *sorted(b for b in arms if b != main)]
    ranked = sorted(arms[main], key=lambda a: -mean_pct(arms[main][a], "final_avg_acc"))
    ranked += sorted({a for b in backbones for a in arms[b]} - set(ranked))
    agnostic = all("cil_last_acc" in r["metrics"] for r in groups[main])

    def with_task_ids(backbone: str, arm: str) -> str:
        runs = arms[backbone].get(arm)
        if not runs:
            return MISSING
        cell = f"{mean_pct(runs, 'final_avg_acc'):.1f}"
        if arm == REFERENCE:
            return cell
        d = reference_difference(groups[backbone], arms[backbone], (stream, backbone, arm))
        return f"{cell} ({d.format()})" if d else cell

    def without_task_ids(arm: str) -> str:
        runs = arms[main].get(arm)
        if not runs:
            return MISSING
        cell = f"{mean_pct(runs, 'cil_last_acc'):.1f}"
        d = within_run_difference(runs, "cil_last_acc", "simplecil_last_acc")
        return f"{cell} ({d.format()})" if d else cell

    columns = {f"`{b}`: with task ids % (vs {REFERENCE} [95% CI])": b for b in backbones}
    cil_column = f"`{main}`: without task ids, last acc % (vs SimpleCIL [95% CI])"
    mib_column = f"total MiB (`{main}`)"
    rows = []
    for arm in ranked:
        row = {"strategy": f"`{arm}`"}
        row.update({col: with_task_ids(b, arm) for col, b in columns.items()})
        if agnostic:
            row[cil_column] = without_task_ids(arm)
        runs = arms[main].get(arm)
        row[mib_column] = (f"{np.mean([r['storage']['total_mib'] for r in runs]):.2f}"
                           if runs else MISSING)
        rows.append(row)
    if agnostic and all("simplecil_last_acc" in r["metrics"] for r in groups[main]):
        per_seed = list({r["config"]["seed"]: r for r in groups[main]}.values())
        for name, label in CIL_REFERENCES.items():
            rows.append({"strategy": label, **dict.fromkeys(columns, MISSING),
                         cil_column: f"{mean_pct(per_seed, f'{name}_last_acc'):.1f}",
                         mib_column: MISSING})
    return pd.DataFrame(rows)


def pairwise_table(records: list[dict]) -> pd.DataFrame:
    """Every pair of strategies per (stream, backbone), the better-ranked one first (by final
    accuracy with task ids), in each setting both were evaluated in: the paired difference of
    final average accuracy with its 95% interval and the verdict (``results.comparisons``)."""
    frames = []
    for recs in group_records(records).values():
        arms = by_arm(recs)
        ranked = sorted(arms, key=lambda a: -mean_pct(arms[a], "final_avg_acc"))
        frames += [compare(recs, a, b) for i, a in enumerate(ranked) for b in ranked[i + 1:]]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
