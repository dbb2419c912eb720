"""pandas tables built from run records (records only: no training code is imported here)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from results.metrics import final_chance, last_accuracy
from results.stats import PairedDifference, paired_difference

SUMMARY_COLUMNS = ("final_avg_acc", "avg_incremental_acc", "forgetting", "bwt", "above_probe",
                   "probe_acc", "random_probe_acc", "pretrain_gain", "head_vs_probe_train",
                   "mib_per_task", "total_mib", "train_s")
REFERENCE = "classifier"  # the summary's paired comparisons are against this strategy


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


def strategy_train_s(rec: dict) -> float:
    """Seconds of the strategy's training, without the per-task linear-probe fit: that fit is the
    same for every strategy on frozen features and is cached across runs, so whichever run met it
    first would otherwise carry it (``probe_s`` keeps it in the record)."""
    return rec["timing"]["train_s"] - rec["timing"].get("probe_s", 0.0)


def mib_per_task(rec: dict) -> float:
    """What one task adds (MiB/task): the mean over tasks of ``per_task_mib``, the base model and
    what is kept once for all tasks (``shared_mib``, e.g. L2P's prompt pool) excluded."""
    per_task = rec["storage"]["per_task_mib"]
    return float(np.mean(per_task)) if per_task else 0.0


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


def task_mean(values) -> float:
    """Mean over tasks of a per-task list; NaN if the record lacks it (an older record)."""
    return float(np.mean(values)) if values and None not in values else np.nan


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


# the final average accuracy of each setting (``cil_``: without task ids, models.task_inference)
SETTINGS = {"task-incremental": "final_avg_acc", "class-incremental": "cil_final_avg_acc"}


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


CIL_REFERENCES = {"simplecil": "SimpleCIL (reference)",
                  "joint": "joint probe (frozen features)"}
VS_REFERENCE_COLUMNS = {"simplecil": "last acc vs SimpleCIL % [95% CI]",
                        "joint": "last acc vs joint probe % [95% CI]"}


def within_run_difference(runs: list[dict], metric: str, reference: str
                          ) -> PairedDifference | None:
    """``metric`` minus ``reference`` (a reference each run computed on its own seed), paired
    by run; None if a run lacks either."""
    if not runs or any(k not in r["metrics"] for r in runs for k in (metric, reference)):
        return None
    return paired_difference([r["metrics"][metric] for r in runs],
                             [r["metrics"][reference] for r in runs])


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


TIME_COLUMNS = {"train s": "train_s", "of it in steps s": "train_step_s", "eval s": "eval_s",
                "probe s": "probe_s", "images outside training": "fixed_images",
                "their s": "fixed_s", "wall s": "wall_s"}


def time_table(records: list[dict]) -> pd.DataFrame:
    """Per (stream, backbone, strategy), the means over seeds of where a run's seconds went
    (``benchmarks.runner.Timing``): training (the probe fit excluded: ``strategy_train_s``) and
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


WIDTH = 100  # console tables wrap their columns to fit this many characters


def as_text(df: pd.DataFrame, **kwargs) -> str:
    """``df.to_string`` in blocks of columns that fit :data:`WIDTH` characters (pandas repeats
    the row labels in every block and ends a continued line with a backslash)."""
    return df.to_string(line_width=WIDTH - 2, **kwargs)


def format_summary(df: pd.DataFrame) -> str:
    """Human table per (stream, backbone): mean ± std (n) per strategy, accuracies in %."""
    table = readable_summary(df)
    return "\n\n".join(
        f"{stream} / {backbone}\n"
        + as_text(rows.drop(columns=["stream", "backbone"]).set_index("strategy"))
        for (stream, backbone), rows in table.groupby(["stream", "backbone"], sort=False))


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


def group_records(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """Records grouped by (stream, backbone), in first-seen order."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        groups.setdefault((r["config"]["stream"], r["config"]["backbone"]), []).append(r)
    return groups


def safe_name(text: str) -> str:
    """A file-name-safe version of ``text``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


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


def acc_matrix_frame(record: dict, key: str = "acc_matrix") -> pd.DataFrame:
    """One run's accuracy matrix (``key``: or its ``cil_acc_matrix``) in %: rows "after
    <task i>", columns tasks."""
    names = [task_label(t) for t in record["tasks"]]
    m = [[np.nan if v is None else 100 * v for v in row] for row in record[key]]
    return pd.DataFrame(m, index=[f"after {n}" for n in names], columns=names)


def to_markdown(df: pd.DataFrame, index: bool = True, digits: int = 1) -> str:
    """A GitHub Markdown table (floats with ``digits`` decimals, NaN as --)."""
    def cell(v):
        if isinstance(v, float):
            return "--" if np.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    frame = df.reset_index() if index else df
    header = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |"
              for row in frame.itertuples(index=False)]
    return "\n".join(lines)


CSV_DECIMALS = 6  # a 10^-6 fraction of a test set, or a byte in MiB


def to_csv(df: pd.DataFrame, index: bool = True) -> str:
    """``df`` as CSV, floats rounded to :data:`CSV_DECIMALS` decimals (no ``54.50000000000001``;
    -0.0 written as 0.0)."""
    floats = df.select_dtypes("float").columns
    return df.assign(**{c: df[c].round(CSV_DECIMALS) + 0.0 for c in floats}).to_csv(index=index)


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
