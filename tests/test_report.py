"""Report tables and figures from hand-made records (no training)."""

import numpy as np
import pandas as pd
import pytest

from results.report import write_report, write_tables
from results.stats import paired_difference
from results.tables import (
    arm_labels,
    compare,
    per_task_table,
    readable_summary,
    summary,
    to_markdown,
)


def _record(strategy, seed, matrix, total_mib=1.0, train_s=10.0, hparams=None, stream="s",
            probe_s=0.0):
    T = len(matrix)
    from results.metrics import all_metrics

    return {
        "run_id": f"{strategy}-{seed}-{stream}-{sorted((hparams or {}).items())}",
        "config": {"strategy": strategy, "seed": seed, "stream": stream, "backbone": "b",
                   "epochs": 1, "hparams": hparams or {}},
        "tasks": [{"name": f"t{j}"} for j in range(T)],
        "acc_matrix": matrix, "probe_acc": [0.5] * T, "forgets": strategy == "finetune",
        "metrics": all_metrics(matrix),
        "storage": {"per_task_mib": [total_mib / T] * T, "total_mib": total_mib},
        "timing": {"train_s": train_s, "probe_s": probe_s},
    }


A = [[0.9, None], [0.8, 0.7]]
B = [[0.7, None], [0.6, 0.9]]
C = [[1.0, None], [1.0, 1.0]]


def test_summary_mean_and_std_over_seeds():
    recs = [_record("finetune", 0, A, train_s=10), _record("finetune", 1, B, train_s=20)]
    df = summary(recs)
    row = df.iloc[0]
    assert row["n"] == 2
    assert row["final_avg_acc"] == pytest.approx(np.mean([0.75, 0.75]))
    assert row["forgetting"] == pytest.approx(np.mean([0.1, 0.1]))
    assert row["train_s"] == pytest.approx(15) and row["train_s_std"] == pytest.approx(
        np.std([10, 20], ddof=1))


def test_mean_and_std_of_three_hand_made_records():
    # final rows: [0.8, 0.7], [0.6, 0.9], [0.9, 0.9] -> final averages 0.75, 0.75, 0.90
    D = [[0.95, None], [0.9, 0.9]]
    recs = [_record("meat", 0, A, train_s=10), _record("meat", 1, B, train_s=20),
            _record("meat", 2, D, train_s=60)]
    row = summary(recs).iloc[0]
    finals = [0.75, 0.75, 0.90]
    mean = sum(finals) / 3
    std = (sum((f - mean) ** 2 for f in finals) / 2) ** 0.5  # sample std (ddof = 1)
    assert row["n"] == 3
    assert row["final_avg_acc"] == pytest.approx(mean)
    assert row["final_avg_acc_std"] == pytest.approx(std)
    # forgetting per run: 0.1, 0.1, 0.05 (task 0 lost 0.1, 0.1 and 0.05)
    assert row["forgetting"] == pytest.approx(0.25 / 3)
    assert row["train_s"] == pytest.approx(30) and row["train_s_std"] == pytest.approx(
        (((10 - 30) ** 2 + (20 - 30) ** 2 + (60 - 30) ** 2) / 2) ** 0.5)
    text = readable_summary(summary(recs)).iloc[0]
    assert text["final acc %"] == f"{100 * mean:.1f} ± {100 * std:.1f}"
    assert text["n"] == 3


def test_summary_columns_and_values_match_the_records():
    recs = [_record("finetune", 0, A, total_mib=2.0, train_s=12.0),
            _record("meat", 0, C, total_mib=3.0, train_s=7.0, probe_s=3.0)]
    table = readable_summary(summary(recs))
    assert list(table.columns) == [
        "stream", "backbone", "strategy", "final acc %", "avg inc acc %", "forgetting %", "BWT %",
        "vs probe %", "vs classifier % [95% CI]", "probe %", "random-init probe %",
        "pre-train gain %", "train acc - probe's %", "masks changed %", "MiB/task", "total MiB",
        "train s", "n", "hparams"]
    for rec, (_, row) in zip(recs, table.iterrows(), strict=True):
        m = rec["metrics"]
        assert row["strategy"] == rec["config"]["strategy"]
        assert row["final acc %"] == f"{100 * m['final_avg_acc']:.1f}"
        assert row["avg inc acc %"] == f"{100 * m['avg_incremental_acc']:.1f}"
        assert row["forgetting %"] == f"{100 * m['forgetting']:.1f}"
        assert row["BWT %"] == f"{100 * m['bwt']:.1f}"
        assert row["total MiB"] == f"{rec['storage']['total_mib']:.3f}"
        t = rec["timing"]
        assert row["train s"] == f"{t['train_s'] - t['probe_s']:.0f}"  # the cached probe fit apart
        assert row["hparams"] == "paper"
        assert row["vs classifier % [95% CI]"] == "--"  # no classifier run to pair with
        assert row["masks changed %"] == "--"  # no mask movement in these records


def test_per_task_table_rows_are_tasks_average_and_storage():
    recs = [_record("finetune", 0, A, total_mib=2.0), _record("meat", 0, C, total_mib=3.0)]
    t = per_task_table(recs)
    assert list(t.index) == ["t0", "t1", "average", "storage MiB"]
    assert t.loc["t0", "finetune"] == pytest.approx(80) and t.loc["t1", "meat"] == 100
    assert t.loc["average", "finetune"] == pytest.approx(75)
    assert t.loc["storage MiB", "meat"] == 3.0
    # probe column from the strategy that cannot forget only
    assert t.loc["t0", "probe_acc"] == pytest.approx(50)


def test_different_hyperparameters_are_never_averaged_as_seeds():
    recs = [_record("meat", 0, A, hparams={"lr": 1.0, "tau": 1}),
            _record("meat", 1, B, hparams={"lr": 1.0, "tau": 1}),
            _record("meat", 0, C, hparams={"lr": 2.0, "tau": 1})]
    labels = arm_labels(recs)
    assert labels[0] == labels[1] == "meat (lr=1.0)" and labels[2] == "meat (lr=2.0)"
    df = summary(recs)
    assert sorted(df["n"]) == [1, 2]
    assert arm_labels(recs[:2]) == ["meat", "meat"]


def test_markdown_table():
    df = pd.DataFrame({"a": [1.234, np.nan]}, index=["x", "y"])
    assert to_markdown(df).splitlines() == ["| index | a |", "|---|---|", "| x | 1.2 |",
                                            "| y | -- |"]


def test_write_report_files(tmp_path):
    recs = [_record(s, seed, m) for s, m in (("finetune", A), ("meat", C)) for seed in (0, 1)]
    paths = write_report(recs, tmp_path)
    assert all(p.stat().st_size > 0 for p in paths)
    names = {p.name for p in paths}
    for stem in ("summary", "hparams", "per_task_s_b"):
        assert {f"{stem}.md", f"{stem}.tex", f"{stem}.csv"} <= names
    for fig in ("heatmap_s_b", "task_curves_s_b", "tradeoff_s", "train_time_s"):
        assert {f"{fig}.png", f"{fig}.pdf"} <= names
    assert (tmp_path / "summary.tex").read_text().startswith("\\begin{tabular}")
    tables = write_tables(recs, tmp_path / "again")
    assert (tmp_path / "again" / "summary.csv").read_text() == (
        tmp_path / "summary.csv").read_text()
    assert len([p for p in tables if p.parent.name == "acc_matrix"]) == 4


def _final(acc):
    return [[acc, None], [acc, acc]]


def test_summary_pairs_every_strategy_with_the_classifier_by_seed():
    # meat beats the classifier by 0.05, 0.10, 0.15 on seeds 0, 1, 2; unpaired seed 3 ignored
    recs = [_record("classifier", s, _final(0.7 + 0.1 * s)) for s in range(3)]
    recs += [_record("meat", s, _final(0.75 + 0.15 * s)) for s in range(4)]
    df = summary(recs).set_index("strategy")
    d = paired_difference([0.75, 0.9, 1.05], [0.7, 0.8, 0.9])
    assert df.loc["meat", "vs_classifier"] == pytest.approx(d.mean)
    assert df.loc["meat", "vs_classifier_low"] == pytest.approx(d.low)
    assert df.loc["classifier", "vs_classifier"] == 0.0


def test_compare_names_the_winner_only_when_separable():
    recs = [_record("a", s, _final(0.8 + 0.01 * s)) for s in range(3)]
    recs += [_record("b", s, _final(0.7 + 0.01 * s)) for s in range(3)]
    recs += [_record("c", s, _final(0.7 + 0.05 * s)) for s in range(3)]
    row = compare(recs, "a", "b").iloc[0]
    assert row["verdict"] == "a > b" and row["seeds"] == 3
    assert row["final acc difference % [95% CI]"].startswith("+10.0")
    assert compare(recs, "a", "c").iloc[0]["verdict"] == "not separable"
    assert compare(recs, "a", "nope").empty


def test_per_task_table_of_forgetting_strategies_only_has_the_random_init_reference():
    rec = {**_record("finetune", 0, A), "random_probe_acc": [0.25, 0.75]}
    t = per_task_table([rec])
    assert list(t.columns) == ["random_init_probe_acc", "finetune"]
    assert t.loc["average", "random_init_probe_acc"] == pytest.approx(50.0)
    both = per_task_table([rec, {**_record("meat", 0, C), "random_probe_acc": [0.25, 0.75]}])
    assert list(both.columns)[:3] == ["probe_acc", "random_init_probe_acc", "pretrain_gain"]
    assert both.loc["t0", "pretrain_gain"] == pytest.approx(50 - 25)


def test_latex_tables_escape_what_latex_would_read_as_markup(tmp_path):
    """No LaTeX engine is installed here to compile them: every LaTeX special character in a
    header or cell ("%" in "final acc %", "_" in names) must arrive escaped."""
    import re

    recs = [_record("my_strategy", seed, A, hparams={"head_lr": 0.5}, stream="s_1")
            for seed in (0, 1)]
    write_tables(recs, tmp_path)
    for tex in tmp_path.glob("*.tex"):
        body = [line for line in tex.read_text().splitlines() if not line.startswith("%")]
        text = "\n".join(body)
        assert "my\\_strategy" in text or tex.stem != "summary", tex.name
        assert not re.search(r"(?<!\\)[%_#$]", text), (tex.name, text)  # & separates cells


def test_every_tradeoff_point_is_named_and_labels_do_not_overlap():
    import matplotlib.pyplot as plt

    from results.plots import LABEL_GAP, label_points

    fig, ax = plt.subplots()
    names = ["meat", "hat", "supsup", "piggyback", "classifier", "individual"]
    xs, ys = [1.27, 1.28, 1.29, 1.3, 1.27, 7.5], [61.0, 60.9, 61.1, 63.0, 58.0, 65.0]
    ax.scatter(xs, ys)
    ax.set_xscale("log")
    label_points(ax, [(x, y, n, "black") for x, y, n in zip(xs, ys, names, strict=True)])
    labels = {a.get_text(): a for a in ax.texts}
    assert set(labels) == set(names)
    heights = sorted(labels[n].xyann[1] for n in names if n != "individual")  # the cluster
    assert min(np.diff(heights)) >= LABEL_GAP - 1e-9
    assert labels["individual"].get_ha() == "right"  # in the right third: named on its left
    plt.close(fig)


def test_every_registered_strategy_has_its_own_color():
    from results.plots import strategy_color
    from strategies import STRATEGIES

    assert len({strategy_color(s) for s in STRATEGIES}) == len(STRATEGIES)


def _agnostic(record, cil, inferred, rule="entropy"):
    from results.metrics import task_agnostic_metrics

    record["cil_acc_matrix"], record["task_inference_matrix"] = cil, inferred
    record["task_inference"] = rule
    record["metrics"].update(task_agnostic_metrics(cil, inferred))
    return record


def test_the_task_agnostic_table_figure_and_comparison(tmp_path):
    from results.tables import task_agnostic_table

    cil_meat = [[0.9, None], [0.5, 0.6]], [[1.0, None], [0.6, 0.7]]
    cil_ref = [[0.8, None], [0.4, 0.4]], [[1.0, None], [0.5, 0.5]]
    recs = [_agnostic(_record("meat", s, A), *cil_meat) for s in (0, 1, 2)]
    recs += [_agnostic(_record("classifier", s, B), *cil_ref, rule="max_logit")
             for s in (0, 1, 2)]
    recs.append(_record("lwf", 0, A))  # evaluated with task ids only: not in the table
    table = task_agnostic_table(recs).set_index("strategy")
    assert list(table.index) == ["meat", "classifier"]
    assert table.loc["meat", "class-incremental acc %"] == "55.0 ± 0.0"
    assert table.loc["meat", "task inference %"] == "65.0 ± 0.0"
    assert table.loc["meat", "class-inc. forgetting %"] == "40.0 ± 0.0"
    assert table.loc["meat", "class-inc. vs classifier % [95% CI]"].startswith("+15.0")
    assert table.loc["classifier", "rule"] == "max_logit"
    both = compare(recs, "meat", "classifier").set_index("setting")
    assert both.loc["task-incremental", "verdict"] == "not separable"  # 0.75 vs 0.75
    assert both.loc["class-incremental", "verdict"] == "meat > classifier"
    paths = write_report(recs, tmp_path / "report")
    names = {p.name for p in paths}
    assert {"task_agnostic.md", "task_agnostic_s.png"} <= names
    assert any(n.endswith("_class_incremental.csv") for n in names)
