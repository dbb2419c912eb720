"""Accuracy per task: the paper-style table of final accuracy per task beside the converged
linear probe's, and one run's accuracy matrix."""

from __future__ import annotations

import numpy as np
import pandas as pd

from results.arms import by_arm, task_label


def probe_references(records: list[dict]) -> dict[str, np.ndarray]:
    """Per arm (:func:`by_arm`) with probes, its probe reference per task (%): the mean over its
    seeds of its own runs' ``probe_acc``, the converged linear probe on the features the strategy
    starts each task from. Runs of one (stream, backbone, seed) that start from the same features
    share one probe, so an arm's reference never depends on which other arms a report holds."""
    return {arm: 100 * np.array([r["probe_acc"] for r in runs], dtype=float).mean(0)
            for arm, runs in by_arm(records).items()
            if all(r.get("probe_acc") and None not in r["probe_acc"] for r in runs)}


def shared_probe(records: list[dict]) -> bool:
    """Every arm with probes starts each task from the same features as the others on every seed,
    on the same seeds (equal ``probe_acc`` per seed): one probe column can stand for all."""
    with_probes = probe_references(records)
    return len({frozenset((r["config"]["seed"], tuple(r["probe_acc"])) for r in runs)
                for arm, runs in by_arm(records).items() if arm in with_probes}) <= 1


def per_task_table(records: list[dict]) -> pd.DataFrame:
    """Final accuracy per task (rows: tasks, average, storage MiB; columns: strategies) with the
    probe references of :func:`probe_references`: one ``probe_acc`` column first where every
    strategy starts from the same features (:func:`shared_probe`), else rows "probe: <task>" and
    "probe: average" holding each strategy's own probe. Then ``random_init_probe_acc``, the probe
    on a randomly initialized backbone, and (with one ``probe_acc`` column) ``pretrain_gain``,
    their difference.

    Means over seeds; one stream and backbone expected (call once per group).
    """
    names = [task_label(t) for t in records[0]["tasks"]]
    refs = probe_references(records)
    one_probe = shared_probe(records)
    cols = {}
    for strat, recs in by_arm(records).items():
        finals = 100 * np.array([r["acc_matrix"][-1] for r in recs], dtype=float).mean(0)
        mib = np.mean([r["storage"]["total_mib"] for r in recs])
        probe = refs.get(strat, np.full(len(names), np.nan))
        cols[strat] = [*finals, finals.mean(), *([] if one_probe else [*probe, probe.mean()]),
                       mib]
    probe_rows = [] if one_probe else [*(f"probe: {n}" for n in names), "probe: average"]
    df = pd.DataFrame(cols, index=[*names, "average", *probe_rows, "storage MiB"])
    random_probe = [r["random_probe_acc"] for r in records if r.get("random_probe_acc")]
    columns = {"probe_acc": next(iter(refs.values())) if refs and one_probe else None,
               "random_init_probe_acc": 100 * np.array(random_probe, dtype=float).mean(0)
               if random_probe else None}
    references = [(name, p) for name, p in columns.items() if p is not None]
    for i, (name, p) in enumerate(references):
        df.insert(i, name, [*p, p.mean(), *[np.nan] * (len(df) - len(p) - 1)])
    if len(references) == 2:
        df.insert(2, "pretrain_gain", df["probe_acc"] - df["random_init_probe_acc"])
    return df


def probe_note(records: list[dict]) -> str:
    """What the per-task table's probe reference is (:func:`per_task_table`)."""
    if shared_probe(records):
        return ("probe_acc: the converged linear probe on the features every strategy here "
                "starts each task from.")
    return ("probe rows: each strategy's own converged linear probe on the features it starts "
            "each task from (the strategies here start from different features).")


def acc_matrix_frame(record: dict, key: str = "acc_matrix") -> pd.DataFrame:
    """One run's accuracy matrix (``key``: or its ``cil_acc_matrix``) in %: rows "after
    <task i>", columns tasks."""
    names = [task_label(t) for t in record["tasks"]]
    m = [[np.nan if v is None else 100 * v for v in row] for row in record[key]]
    return pd.DataFrame(m, index=[f"after {n}" for n in names], columns=names)
