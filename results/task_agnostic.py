"""Runs evaluated without task ids (class-incremental): accuracy in both settings, task
inference and every rule's result, the class-incremental references (SimpleCIL, the joint
probe), the task that task inference collapsed onto, and the chance levels."""

from __future__ import annotations

import numpy as np
import pandas as pd

from results.arms import by_arm, group_records, task_classes, task_mean
from results.comparisons import (
    CIL_REFERENCES,
    REFERENCE,
    reference_difference,
    within_run_difference,
)
from results.metrics import final_chance, last_accuracy

VS_REFERENCE_COLUMNS = {"simplecil": "last acc vs SimpleCIL % [95% CI]",
                        "joint": "last acc vs joint probe % [95% CI]"}


def task_agnostic_table(records: list[dict]) -> pd.DataFrame:
    """Per (stream, backbone, strategy) evaluated without task ids: final accuracy in both
    settings, class-incremental forgetting, task-inference accuracy (mean ± std over seeds,
    %), the class-incremental paired difference to the classifier with its 95% interval, the
    task-inference rule and the task it collapsed onto (:func:`collapse_label`). Empty if no
    record was evaluated without task ids."""
    records = [r for r in records if "cil_final_avg_acc" in r["metrics"]]
    rows = []
    for (stream, backbone), recs in group_records(records).items():
        arms = by_arm(recs)
        for label, runs in arms.items():
            def pm(metric, runs=runs):
                if any(metric not in r["metrics"] for r in runs):
                    return "--"  # a record from before the metric existed
                v = 100 * np.array([r["metrics"][metric] for r in runs])
                return f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" if len(v) > 1 else f"{v[0]:.1f}"

            d = reference_difference(recs, arms, (stream, backbone, label), "cil_final_avg_acc")
            vs = {name: within_run_difference(runs, "cil_last_acc", f"{name}_last_acc")
                  for name in CIL_REFERENCES}
            rows.append({"stream": stream, "backbone": backbone, "strategy": label,
                         "task-incremental acc %": pm("final_avg_acc"),
                         "class-incremental acc %": pm("cil_final_avg_acc"),
                         "last acc %": pm("cil_last_acc"),
                         "avg inc. acc %": pm("cil_avg_inc_last_acc"),
                         "class-inc. forgetting %": pm("cil_forgetting"),
                         "task inference %": pm("task_inference_acc"),
                         f"class-inc. vs {REFERENCE} % [95% CI]": d.format() if d else "--",
                         **{column: vs[name].format() if vs[name] else "--"
                            for name, column in VS_REFERENCE_COLUMNS.items()},
                         "rule": runs[0].get("task_inference", "--"),
                         "every sample to": collapse_label(runs), "n": len(runs)})
        rows += reference_rows(stream, backbone, recs)
    table = pd.DataFrame(rows)
    new = ["last acc %", "avg inc. acc %", *VS_REFERENCE_COLUMNS.values()]
    if not table.empty and (table[new] == "--").all().all():  # records from before they existed
        table = table.drop(columns=new)
    return table


def reference_rows(stream: str, backbone: str, records: list[dict]) -> list[dict]:
    """One row per class-incremental reference (SimpleCIL, the joint probe) of the runs of one
    (stream, backbone): one run per seed (every run of a seed computes the same reference on the
    same frozen starting backbone), each with its paired difference to the other."""
    per_seed = {r["config"]["seed"]: r for r in records if "simplecil_last_acc" in r["metrics"]}
    runs = [per_seed[s] for s in sorted(per_seed)]
    if not runs:
        return []
    rows = []
    for name, label in CIL_REFERENCES.items():
        v = 100 * np.array([r["metrics"][f"{name}_last_acc"] for r in runs])
        inc = 100 * np.array([r["metrics"][f"{name}_avg_inc_last_acc"] for r in runs])

        def pm(x):
            return f"{x.mean():.1f} ± {x.std(ddof=1):.1f}" if len(x) > 1 else f"{x[0]:.1f}"

        rows.append({"stream": stream, "backbone": backbone, "strategy": label,
                     "task-incremental acc %": "--", "class-incremental acc %": "--",
                     "last acc %": pm(v), "avg inc. acc %": pm(inc),
                     "class-inc. forgetting %": "--", "task inference %": "--",
                     f"class-inc. vs {REFERENCE} % [95% CI]": "--",
                     **{column: "0" if other == name else within_run_difference(
                         runs, f"{name}_last_acc", f"{other}_last_acc").format()
                        for other, column in VS_REFERENCE_COLUMNS.items()},
                     "rule": "--", "every sample to": "--", "n": len(runs)})
    return rows


def rules_table(records: list[dict]) -> pd.DataFrame:
    """Per (stream, backbone, strategy) evaluated without task ids, every task-inference rule's
    last accuracy and, in parentheses, its task-inference accuracy after the last task (means
    over seeds, %); ``*`` marks the rule the runs chose on validation (every run chose it). Empty
    for records from before every rule was kept."""
    records = [r for r in records if "task_inference_rules" in r]
    rows = []
    for (stream, backbone), recs in group_records(records).items():
        for label, runs in by_arm(recs).items():
            sizes = [[task["n_test"] for task in r["tasks"]] for r in runs]
            row = {"stream": stream, "backbone": backbone, "strategy": label}
            for rule in runs[0]["task_inference_rules"]:
                mats = [r["task_inference_rules"][rule] for r in runs]
                last = np.mean([last_accuracy(m["cil_acc_matrix"], n)
                                for m, n in zip(mats, sizes, strict=True)])
                inferred = np.mean([task_mean(m["task_inference_matrix"][-1]) for m in mats])
                chosen = all(r["task_inference"] == rule for r in runs)
                row[rule] = f"{100 * last:.1f} ({100 * inferred:.1f}){'*' if chosen else ''}"
            rows.append(row)
    return pd.DataFrame(rows)


def collapsed_task(record: dict) -> int | None:
    """The task (index) that task inference collapsed onto, or None: after the last task, the
    task of every sample of task k and of no sample of any other task was inferred right
    (``task_inference_matrix``) — what a rule that sends every sample to task k gives."""
    shares = (record.get("task_inference_matrix") or [[]])[-1]
    hits = [j for j, v in enumerate(shares) if v == 1]
    if len(shares) < 2 or len(hits) != 1 or any(v != 0 for j, v in enumerate(shares)
                                                 if j != hits[0]):
        return None
    return hits[0]


def collapse_label(runs: list[dict]) -> str:
    """"task 5 (1 of 3 seeds)" per task that task inference collapsed onto
    (:func:`collapsed_task`; tasks numbered from 1), "--" if it never did."""
    tasks = [collapsed_task(r) for r in runs]
    return ", ".join(f"task {k + 1} ({tasks.count(k)} of {len(runs)} seeds)"
                     for k in sorted({k for k in tasks if k is not None})) or "--"


def chance_note(records: list[dict]) -> str:
    """One line per stream: the chance level of each final average (:func:`final_chance`) and
    what "every sample to" means."""
    lines = []
    for stream, rec in {r["config"]["stream"]: r for r in records}.items():
        c = final_chance(task_classes(rec))
        lines.append(f"Chance on {stream}: with task ids {100 * c['final_avg_acc']:.1f}% "
                     f"(1/classes of the task), without {100 * c['cil_final_avg_acc']:.1f}% "
                     f"(1/classes seen), task inference {100 * c['task_inference_acc']:.1f}% "
                     "(1/tasks).")
    lines.append('"every sample to task k": after the last task only task k\'s samples were '
                 "assigned their own task (all of them): task inference collapsed onto task k.")
    return "\n".join(lines)
