"""Paired differences between arms in final average accuracy: over the seeds both arms ran
(``results.stats``), or against a class-incremental reference (SimpleCIL, the joint probe) that
each run computed on its own seed."""

from __future__ import annotations

import pandas as pd

from results.arms import by_arm, group_records
from results.stats import PairedDifference, paired_difference

REFERENCE = "classifier"  # the summary's paired comparisons are against this strategy

# the final average accuracy of each setting (``cil_``: without task ids, models.task_inference)
SETTINGS = {"task-incremental": "final_avg_acc", "class-incremental": "cil_final_avg_acc"}

CIL_REFERENCES = {"simplecil": "SimpleCIL (reference)",
                  "joint": "joint probe (frozen features)"}


def final_acc_by_seed(records: list[dict], metric: str = "final_avg_acc") -> dict[int, float]:
    """{seed: ``metric``} of the records that have it."""
    return {r["config"]["seed"]: r["metrics"][metric] for r in records
            if metric in r["metrics"]}


def paired_final_acc(a: list[dict], b: list[dict],
                     metric: str = "final_avg_acc") -> PairedDifference | None:
    """``metric`` (final average accuracy) of ``a`` minus ``b`` over the seeds both have; None
    if none."""
    fa, fb = final_acc_by_seed(a, metric), final_acc_by_seed(b, metric)
    seeds = sorted(set(fa) & set(fb))
    if not seeds:
        return None
    return paired_difference([fa[s] for s in seeds], [fb[s] for s in seeds])


def reference_difference(records, arms, key,
                         metric: str = "final_avg_acc") -> PairedDifference | None:
    """The paired difference in ``metric`` of the arm ``key`` = (stream, backbone, label) to the
    classifier on the same stream and backbone."""
    stream, backbone, label = key
    where = [r for r in arms[label] if (r["config"]["stream"], r["config"]["backbone"])
             == (stream, backbone)]
    ref = [r for r in records if r["config"]["strategy"] == REFERENCE
           and (r["config"]["stream"], r["config"]["backbone"]) == (stream, backbone)]
    return paired_final_acc(where, ref, metric) if ref else None


def within_run_difference(runs: list[dict], metric: str, reference: str
                          ) -> PairedDifference | None:
    """``metric`` minus ``reference`` (a reference each run computed on its own seed), paired
    by run; None if a run lacks either."""
    if not runs or any(k not in r["metrics"] for r in runs for k in (metric, reference)):
        return None
    return paired_difference([r["metrics"][metric] for r in runs],
                             [r["metrics"][reference] for r in runs])


def compare(records: list[dict], a: str, b: str) -> pd.DataFrame:
    """Per (stream, backbone) and setting (task-incremental; class-incremental where both were
    evaluated without task ids): final average accuracy of strategy ``a`` minus ``b``, paired
    by seed, with its 95% interval and whether it separates them, or that they are identical on
    every seed (``report --compare A,B``). ``b`` may be a class-incremental reference
    (``simplecil``, ``joint``): then ``a``'s last accuracy minus the reference each of its runs
    computed."""
    rows = []
    for (stream, backbone), recs in group_records(records).items():
        arms = by_arm(recs)
        if a not in arms or (b not in arms and b not in CIL_REFERENCES):
            continue
        for setting, metric in SETTINGS.items():
            if b in CIL_REFERENCES:  # each run's own reference: class-incremental last accuracy
                d = (within_run_difference(arms[a], "cil_last_acc", f"{b}_last_acc")
                     if setting == "class-incremental" else None)
            else:
                d = paired_final_acc(arms[a], arms[b], metric)
            if d is None:
                continue
            rows.append({"stream": stream, "backbone": backbone, "setting": setting,
                         "comparison": f"{a} - {b}",
                         "final acc difference % [95% CI]": d.format(), "seeds": d.n,
                         "verdict": verdict(d, a, b)})
    return pd.DataFrame(rows)


def verdict(d: PairedDifference, a: str, b: str) -> str:
    """"a > b" where the interval separates them, "identical on every seed" where every paired
    difference is 0, else "not separable"."""
    if d.identical:
        return "identical on every seed"
    if d.separable:
        return f"{a} > {b}" if d.mean > 0 else f"{b} > {a}"
    return "not separable"
