"""Where a run's seconds went, and whether runs' times compare: training time without the probe
fit (the same fit for every strategy, cached across runs), the conditions each run was timed
under (threads, CPUs, load), and the time table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from results.arms import by_arm, group_records


def strategy_train_s(rec: dict) -> float:
    """Seconds of the strategy's training, without the per-task linear-probe fit: that fit is the
    same for every strategy on frozen features and is cached across runs, so whichever run met it
    first would otherwise carry it (``probe_s`` keeps it in the record)."""
    return rec["timing"]["train_s"] - rec["timing"].get("probe_s", 0.0)


def timing_conditions(rec: dict) -> str | None:
    """What a run's training time was measured under: "<threads> threads, <cpus> CPUs", plus
    ", loaded" where other processes took more than half a core from the run: their load,
    max(load_start, load_end - threads) (1-minute load averages at the run's start and end; the
    run's own threads count in the end one), above cpus - threads + 0.5. None where the record's
    ``timing`` lacks ``threads``, ``cpus``, ``load_start`` or ``load_end``."""
    t = rec["timing"]
    if any(t.get(k) is None for k in ("threads", "cpus", "load_start", "load_end")):
        return None
    others = max(t["load_start"], t["load_end"] - t["threads"])
    loaded = others > t["cpus"] - t["threads"] + 0.5
    return f"{t['threads']} threads, {t['cpus']} CPUs" + (", loaded" if loaded else "")


def timing_note(records: list[dict]) -> str | None:
    """One line where training times are not comparable as they stand: runs whose conditions
    were not recorded, or runs timed under different conditions (:func:`timing_conditions`)."""
    conditions = [timing_conditions(r) for r in records]
    missing = conditions.count(None)
    if missing:
        return (f"Training times: conditions (threads, CPUs, load) not recorded for {missing} of "
                f"{len(records)} runs: runs timed under different load cannot be told apart.")
    counts = {c: conditions.count(c) for c in dict.fromkeys(conditions)}
    if len(counts) == 1:
        return None
    return ("Training times mix conditions: "
            + "; ".join(f"{c} ({n} run{'s' * (n > 1)})" for c, n in counts.items())
            + ": compare like with like.")


TIME_COLUMNS = {"train s": "train_s", "of it in steps s": "train_step_s", "eval s": "eval_s",
                "probe s": "probe_s", "images outside training": "fixed_images",
                "their s": "fixed_s", "wall s": "wall_s"}


def time_table(records: list[dict]) -> pd.DataFrame:
    """Per (stream, backbone, strategy), the means over seeds of where a run's seconds went
    (``results.records.Timing``): training (the probe fit excluded: ``strategy_train_s``) and
    its steps, evaluation, probes, the passes outside training with the images they read, and
    wall time. "--" where the records predate a field."""
    rows = []
    for (stream, backbone), recs in group_records(records).items():
        for label, runs in by_arm(recs).items():
            row = {"stream": stream, "backbone": backbone, "strategy": label}
            for column, key in TIME_COLUMNS.items():
                values = [strategy_train_s(r) if key == "train_s" else r["timing"].get(key)
                          for r in runs]
                row[column] = ("--" if None in values else
                               f"{np.mean(values):,.0f}" if key == "fixed_images" else
                               f"{np.mean(values):.1f}")
            row["n"] = len(runs)
            rows.append(row)
    return pd.DataFrame(rows)
