"""Report tables and figures from hand-made records (no training)."""

import numpy as np
import pandas as pd
import pytest

from results.arms import arm_labels
from results.comparisons import compare
from results.formats import to_markdown
from results.per_task import per_task_table
from results.report import write_report, write_tables
from results.stats import paired_difference
from results.summary import readable_summary, summary


def _record(strategy, seed, matrix, total_mib=1.0, train_s=10.0, hparams=None, stream="s",
            probe_s=0.0, probe=None, classes=None, backbone="b", base_mib=0.5):
    """A finished record of T = len(matrix) tasks named t0, t1, ... of ``classes[j]`` classes
    (2 each by default); ``total_mib`` = ``base_mib`` + the tasks' storage."""
    T = len(matrix)
    from results.metrics import all_metrics

    classes = classes or [2] * T
    return {
        "run_id": f"{strategy}-{seed}-{stream}-{backbone}-{sorted((hparams or {}).items())}",
        "config": {"strategy": strategy, "seed": seed, "stream": stream, "backbone": backbone,
                   "epochs": 1, "hparams": hparams or {}},
        "tasks": [{"name": f"t{j}", "classes": [str(c) for c in range(n)]}
                  for j, n in enumerate(classes)],
        "acc_matrix": matrix, "probe_acc": probe or [0.5] * T,
        "forgets": strategy == "finetune", "metrics": all_metrics(matrix),
        "storage": {"per_task_mib": [(total_mib - base_mib) / T] * T, "total_mib": total_mib,
                    "base_mib": base_mib},
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
    # both start from the same features (equal probes on every seed): one probe column
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
    for stem in ("summary", "hparams", "per_task_s_b", "headline_s", "pairwise"):
        assert {f"{stem}.md", f"{stem}.tex", f"{stem}.csv"} <= names
    one_strategy = {p.name for p in write_tables(recs[:2], tmp_path / "one")}
    assert "headline_s.md" in one_strategy and "pairwise.md" not in one_strategy  # no pair
    for fig in ("heatmap_s_b", "task_curves_s_b", "tradeoff_s", "train_time_s"):
        assert {f"{fig}.png", f"{fig}.pdf"} <= names
    tex = (tmp_path / "summary.tex").read_text().splitlines()
    assert [line for line in tex if not line.startswith("% ")][0].startswith("\\begin{tabular}")
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


def test_compare_says_identical_where_every_seed_is():
    recs = [_record(name, s, _final(0.7 + 0.05 * s)) for name in ("a", "b") for s in range(3)]
    recs += [_record("c", s, _final(0.7 + 0.05 * s + (0.01 if s == 1 else 0))) for s in range(3)]
    row = compare(recs, "a", "b").iloc[0]
    assert row["verdict"] == "identical on every seed"
    assert row["final acc difference % [95% CI]"] == "+0.0 [+0.0, +0.0]"
    assert compare(recs[:1] + recs[3:4], "a", "b").iloc[0]["verdict"] == (
        "identical on every seed")  # one seed
    assert compare(recs, "a", "c").iloc[0]["verdict"] == "not separable"  # seed 1 differs


def test_the_probe_reference_does_not_change_when_strategies_are_added():
    """A's probe reference is its own starting features' probe, whether the report holds A alone,
    A with B (different starting features: per-strategy probe rows) or A with C (the same
    features: one probe column)."""
    from results.per_task import probe_references

    probes = {0: [0.80, 0.70], 1: [0.84, 0.74]}
    a = [_record("a", s, A, probe=probes[s]) for s in (0, 1)]
    b = [_record("b", s, A, probe=[0.9, 0.9]) for s in (0, 1)]
    c = [_record("c", s, C, probe=probes[s]) for s in (0, 1)]
    alone = per_task_table(a)
    assert list(alone.columns) == ["probe_acc", "a"]
    assert list(alone["probe_acc"][:3]) == pytest.approx([82, 72, 77])
    mixed = per_task_table(a + b)
    assert "probe_acc" not in mixed.columns
    rows = ["probe: t0", "probe: t1", "probe: average"]
    assert list(mixed.loc[rows, "a"]) == pytest.approx([82, 72, 77])
    assert list(mixed.loc[rows, "b"]) == pytest.approx([90, 90, 90])
    assert list(per_task_table(a + c)["probe_acc"][:3]) == pytest.approx([82, 72, 77])
    assert probe_references(a)["a"] == pytest.approx(probe_references(a + b + c)["a"])
    # A on one seed more than C: their means cover different seeds, so no shared column
    assert "probe_acc" not in per_task_table(a + c[:1]).columns


def test_a_forgetting_strategys_probe_is_its_own_and_random_init_is_beside_it():
    rec = {**_record("finetune", 0, A), "random_probe_acc": [0.25, 0.75]}
    t = per_task_table([rec])
    assert list(t.columns) == ["probe_acc", "random_init_probe_acc", "pretrain_gain", "finetune"]
    assert t.loc["average", "random_init_probe_acc"] == pytest.approx(50.0)
    assert t.loc["t0", "pretrain_gain"] == pytest.approx(50 - 25)


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


def test_every_tradeoff_point_is_named_inside_the_axes_without_overlaps():
    import matplotlib.pyplot as plt

    from results.figure_labels import label_points, text_extent

    fig, ax = plt.subplots()
    names = ["meat", "hat", "supsup", "piggyback", "classifier", "individual", "lwf", "lora"]
    xs = [1.27, 1.28, 1.29, 1.3, 1.27, 7.5, 1.27, 7.4]
    ys = [61.0, 60.9, 61.1, 63.0, 58.0, 65.0, 44.0, 44.2]  # lwf, lora: bottom corners
    ax.scatter(xs, ys)
    ax.set_xscale("log")
    label_points(ax, [(x, y, n, "black") for x, y, n in zip(xs, ys, names, strict=True)])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = ax.get_window_extent(renderer)
    labels = {a.get_text(): text_extent(a, renderer) for a in ax.texts}
    assert set(labels) == set(names)
    for name, ext in labels.items():
        assert box.x0 <= ext.x0 and ext.x1 <= box.x1 and box.y0 <= ext.y0 and ext.y1 <= box.y1, (
            name)
    for i, m in enumerate(names):
        for n in names[i + 1:]:
            assert not labels[m].overlaps(labels[n]), (m, n)
    plt.close(fig)


def _agnostic(record, cil, inferred, rule="entropy", references=None):
    """``record`` evaluated without task ids (every task's test set of 100 samples), with the
    class-incremental reference matrices ``references`` ({"simplecil": M, "joint": M})."""
    from results.metrics import task_agnostic_metrics

    record["cil_acc_matrix"], record["task_inference_matrix"] = cil, inferred
    record["task_inference"] = rule
    for name, matrix in (references or {}).items():
        record[f"{name}_acc_matrix"] = matrix
    record["metrics"].update(task_agnostic_metrics(cil, inferred, [100] * len(cil), references))
    return record


def test_the_task_agnostic_table_figure_and_comparison(tmp_path):
    from results.task_agnostic import task_agnostic_table

    cil_meat = [[0.9, None], [0.5, 0.6]], [[1.0, None], [0.6, 0.7]]
    cil_ref = [[0.8, None], [0.4, 0.4]], [[1.0, None], [0.5, 0.5]]

    def references(seed):  # the same on every run of a seed; SimpleCIL 40 + seed %, joint 70
        return {"simplecil": [[0.9, None], [0.4 + seed / 100] * 2],
                "joint": [[1.0, None], [0.7, 0.7]]}

    recs = [_agnostic(_record("meat", s, A), *cil_meat, references=references(s))
            for s in (0, 1, 2)]
    recs += [_agnostic(_record("classifier", s, B), *cil_ref, rule="max_logit",
                       references=references(s)) for s in (0, 1, 2)]
    recs.append(_record("lwf", 0, A))  # evaluated with task ids only: not in the table
    table = task_agnostic_table(recs).set_index("strategy")
    assert list(table.index) == ["meat", "classifier", "SimpleCIL (reference)",
                                 "joint probe (frozen features)"]
    assert table.loc["meat", "class-incremental acc %"] == "55.0 ± 0.0"
    assert table.loc["meat", "last acc %"] == "55.0 ± 0.0"  # equal test sets: as the mean
    assert table.loc["meat", "avg inc. acc %"] == "72.5 ± 0.0"  # (90 + 55) / 2
    assert table.loc["SimpleCIL (reference)", "last acc %"] == "41.0 ± 1.0"
    assert table.loc["joint probe (frozen features)", "last acc %"] == "70.0 ± 0.0"
    # paired by seed with each run's own reference: 55 - (40, 41, 42)
    assert table.loc["meat", "last acc vs SimpleCIL % [95% CI]"].startswith("+14.0 [")
    assert table.loc["joint probe (frozen features)",
                     "last acc vs SimpleCIL % [95% CI]"].startswith("+29.0 [")
    # and with the joint bound: 55 - 70 on every seed; SimpleCIL's (40, 41, 42) - 70
    assert table.loc["meat", "last acc vs joint probe % [95% CI]"].startswith("-15.0")
    assert table.loc["SimpleCIL (reference)",
                     "last acc vs joint probe % [95% CI]"].startswith("-29.0 [")
    assert table.loc["joint probe (frozen features)", "last acc vs joint probe % [95% CI]"] == "0"
    vs_ref = compare(recs, "meat", "simplecil").set_index("setting")
    assert list(vs_ref.index) == ["class-incremental"]
    assert vs_ref.loc["class-incremental", "verdict"] == "meat > simplecil"
    assert table.loc["meat", "task inference %"] == "65.0 ± 0.0"
    assert table.loc["meat", "class-inc. forgetting %"] == "40.0 ± 0.0"
    assert table.loc["meat", "class-inc. vs classifier % [95% CI]"].startswith("+15.0")
    assert table.loc["classifier", "rule"] == "max_logit"
    both = compare(recs, "meat", "classifier").set_index("setting")
    assert both.loc["task-incremental", "verdict"] == "identical on every seed"  # 0.75, 0.75
    assert both.loc["class-incremental", "verdict"] == "meat > classifier"
    paths = write_report(recs, tmp_path / "report")
    names = {p.name for p in paths}
    assert {"task_agnostic.md", "task_agnostic_s.png"} <= names
    assert any(n.endswith("_class_incremental.csv") for n in names)


def test_tables_number_tasks_from_one_name_classes_and_round_csvs(tmp_path):
    from results.arms import task_label

    movement = [{"token": {"entries": 16, "changed": 0.1 + 0.2, "kept": 0.9}}] * 2
    recs = [{**_record("meat", s, [[0.9, None], [0.545, 0.7]]), "mask_movement": movement}
            for s in (0, 1)]
    recs[0]["tasks"][1] = {"name": "mnist5k 2/8", "classes": ["2", "8"]}
    recs[1]["tasks"][1] = {"name": "mnist5k 2/8", "classes": ["2", "8"]}
    write_tables(recs, tmp_path)
    masks = pd.read_csv(tmp_path / "masks.csv")
    assert list(masks["task"]) == [1, 2]
    assert list(masks["changed %"]) == [30.0, 30.0]  # 100 * (0.1 + 0.2) = 30.000000000000004
    assert "| 1 | token |" in (tmp_path / "masks.md").read_text()
    per_task = (tmp_path / "per_task_s_b.csv").read_text()
    assert '"classes 2, 8",' in per_task and "mnist5k" not in per_task
    for csv in tmp_path.rglob("*.csv"):
        text = csv.read_text()
        assert "0000000" not in text and "9999999" not in text, csv.name
    assert "54.5" in (tmp_path / "acc_matrix" / f"{recs[0]['run_id']}.csv").read_text()
    assert task_label({"name": "cluttered", "classes": ["0", "1"]}) == "cluttered"


def test_the_task_agnostic_table_flags_a_collapsed_task_inference_and_states_chance(tmp_path):
    from results.task_agnostic import collapse_label, collapsed_task, task_agnostic_table

    cil = [[0.9, None], [0.0, 0.5]]
    collapsed = [_agnostic(_record("l2p", s, A, classes=[2, 4]), cil, [[1.0, None], [0.0, 1.0]])
                 for s in (0, 1)]
    collapsed[1]["task_inference_matrix"] = [[1.0, None], [0.2, 1.0]]  # seed 1 did not
    fine = _agnostic(_record("meat", 0, A, classes=[2, 4]), cil, [[1.0, None], [0.5, 0.5]])
    assert [collapsed_task(r) for r in (*collapsed, fine)] == [1, None, None]
    assert collapse_label(collapsed) == "task 2 (1 of 2 seeds)"
    table = task_agnostic_table([*collapsed, fine]).set_index("strategy")
    assert table.loc["l2p", "every sample to"] == "task 2 (1 of 2 seeds)"
    assert table.loc["meat", "every sample to"] == "--"
    write_tables([*collapsed, fine], tmp_path)
    md = (tmp_path / "task_agnostic.md").read_text()
    assert md.startswith("Chance on s: with task ids 37.5% (1/classes of the task), without "
                         "16.7% (1/classes seen), task inference 50.0% (1/tasks).\n\n")
    assert '"every sample to task k"' in md
    assert (tmp_path / "task_agnostic.tex").read_text().startswith("% Chance on s:")


def test_timing_note_names_missing_or_mixed_conditions():
    from results.timing import timing_conditions, timing_note

    recs = [_record(name, 0, A) for name in ("meat", "hat", "lwf")]
    assert "not recorded for 3 of 3 runs" in timing_note(recs)
    for rec in recs:
        rec["timing"].update(threads=1, cpus=2, load_start=0.3, load_end=1.2)
    assert timing_note(recs) is None  # like with like
    assert timing_conditions(recs[0]) == "1 threads, 2 CPUs"
    recs[2]["timing"]["load_end"] = 3.0  # 2.0 of others' load on the one free core
    assert timing_conditions(recs[2]) == "1 threads, 2 CPUs, loaded"
    assert timing_note(recs) == ("Training times mix conditions: 1 threads, 2 CPUs (2 runs); "
                                 "1 threads, 2 CPUs, loaded (1 run): compare like with like.")


def test_the_rules_table_gives_every_rules_sample_weighted_last_accuracy(tmp_path):
    from results.task_agnostic import rules_table

    def run(seed, chosen):
        r = _agnostic(_record("meat", seed, A), [[1.0, None], [0.5, 0.9]],
                      [[1.0, None], [0.6, 1.0]], rule=chosen)
        for task, n in zip(r["tasks"], (100, 300), strict=True):
            task["n_test"] = n
        r["task_inference_rules"] = {
            "max_logit": {"cil_acc_matrix": [[1.0, None], [0.2, 0.6]],
                          "task_inference_matrix": [[1.0, None], [0.3, 0.7]]},
            "mahalanobis": {"cil_acc_matrix": [[1.0, None], [0.5, 0.9]],
                            "task_inference_matrix": [[1.0, None], [0.6, 1.0]]}}
        return r

    row = rules_table([run(0, "mahalanobis"), run(1, "mahalanobis")]).iloc[0]
    # last accuracy weighs task 1's 300 samples three times task 0's 100
    assert row["max_logit"] == f"{100 * (0.2 * 100 + 0.6 * 300) / 400:.1f} (50.0)"
    assert row["mahalanobis"] == f"{100 * (0.5 * 100 + 0.9 * 300) / 400:.1f} (80.0)*"
    mixed = rules_table([run(0, "mahalanobis"), run(1, "max_logit")]).iloc[0]
    assert not mixed["mahalanobis"].endswith("*")  # marked only where every run chose it


def test_time_table_means_over_seeds_and_marks_fields_records_lack():
    from results.timing import time_table

    recs = [_record("meat", seed, C, train_s=12.0 + 2 * seed, probe_s=2.0) for seed in (0, 1)]
    for seed, rec in enumerate(recs):
        rec["timing"].update(train_step_s=8.0, eval_s=3.0, fixed_images=1000 + 500 * seed,
                             fixed_s=1.5 + seed, wall_s=20.0)
    old = _record("finetune", 0, A)  # a record from before the passes were metered
    row, before = time_table([*recs, old]).to_dict("records")
    assert (row["strategy"], row["train s"], row["eval s"], row["n"]) == ("meat", "11.0", "3.0", 2)
    assert (row["images outside training"], row["their s"]) == ("1,250", "2.0")
    assert before["images outside training"] == before["their s"] == "--"


def test_the_headline_ranks_strategies_on_the_main_backbone_beside_the_references():
    from results.headline import headline_table, pairwise_table

    cil = [[0.9, None], [0.5, 0.6]], [[1.0, None], [0.6, 0.7]]  # last accuracy 55%

    def references(seed):  # SimpleCIL 40 + seed %, joint 70
        return {"simplecil": [[0.9, None], [0.4 + seed / 100] * 2],
                "joint": [[1.0, None], [0.7, 0.7]]}

    def runs(strategy, final, backbone="b", mib=1.0):
        return [_agnostic(_record(strategy, s, _final(final(s)), backbone=backbone,
                                  total_mib=mib), *cil, references=references(s))
                for s in range(3)]

    recs = (runs("classifier", lambda s: 0.7 + 0.1 * s) + runs("lwf", lambda s: 0.6)
            + runs("meat", lambda s: 0.8 + 0.11 * s, mib=2.5)
            + runs("meat", lambda s: 0.5, backbone="c") + runs("classifier", lambda s: 0.4, "c"))
    table = headline_table(recs, "s").set_index("strategy")
    assert list(table.index) == ["`meat`", "`classifier`", "`lwf`", "SimpleCIL (reference)",
                                 "joint probe (frozen features)"]
    with_ids_b, with_ids_c, without, mib = table.columns
    assert with_ids_b.startswith("`b`") and with_ids_c.startswith("`c`")  # b: most strategies
    assert table.loc["`meat`", with_ids_b].startswith("91.0 (+11.0 [")  # paired 10, 11, 12
    assert table.loc["`meat`", with_ids_c] == "50.0 (+10.0 [+10.0, +10.0])"
    assert table.loc["`classifier`", with_ids_b] == "80.0"
    assert table.loc["`lwf`", with_ids_c] == "--"
    assert table.loc["`meat`", without].startswith("55.0 (+14.0 [")  # 55 - (40, 41, 42)
    assert table.loc["SimpleCIL (reference)", without] == "41.0"
    assert table.loc["joint probe (frozen features)", without] == "70.0"
    assert table.loc["`meat`", mib] == "2.50"
    with pytest.raises(ValueError, match="no records of stream 'x'"):
        headline_table(recs, "x")
    pairs = pairwise_table(recs).set_index(["backbone", "setting", "comparison"])
    assert len(pairs) == 3 * 2 + 1 * 2  # b: 3 pairs, c: 1 pair, each in both settings
    row = pairs.loc[("b", "task-incremental", "meat - classifier")]
    assert row["verdict"] == "meat > classifier" and row["seeds"] == 3
    assert pairs.loc[("b", "task-incremental", "classifier - lwf"), "verdict"] == \
        "not separable"  # 10, 20, 30 over 3 seeds: the interval reaches below 0
