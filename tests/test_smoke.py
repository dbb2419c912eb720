"""The smoke suite end to end through the CLI (in this process, ``run_benchmark.main``): every
registered strategy, records on disk. A budget of a few steps per task: the plumbing is what is
checked here, not what the numbers say."""

import json
from pathlib import Path

import pytest
from test_cli import run_main

from results.records import find_records
from strategies import STRATEGIES

STEPS = "4"  # optimizer steps per task


pytestmark = pytest.mark.slow  # every test shares one end-to-end sweep


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("smoke")
    r = run_main("--suite", "smoke", "--steps-per-task", STEPS, "--out", str(out),
                 "--cache", str(cache_dir), "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    return out, r.stdout, r.stderr


def test_every_strategy_finishes_with_a_full_record(smoke):
    out, stdout, _ = smoke
    records = {r["config"]["strategy"]: r for r in find_records([out])}
    assert set(records) == set(STRATEGIES)
    for name, rec in records.items():
        T = len(rec["tasks"])
        assert T >= 3
        for i in range(T):
            assert all(rec["acc_matrix"][i][j] is not None for j in range(i + 1)), name
        for key in ("probe_acc", "probe_train_acc", "random_probe_acc", "train_acc"):
            assert len(rec[key]) == T and all(0 <= p <= 1 for p in rec[key]), (name, key)
        assert rec["train_steps"] == [int(STEPS)] * T or (
            name == "classifier" and rec["train_steps"] == [0] * T)  # the probe is the head
        kinds = {k for m in rec["mask_movement"] for k in m}
        assert kinds == set(STRATEGIES[name].mask_kinds), name
        assert len(rec["storage"]["per_task_bits"]) == T
        assert rec["config"]["head_init"] == STRATEGIES[name].head_init  # auto resolved
        rows = (Path(rec["_folder"]) / "rows.csv").read_text().splitlines()
        assert len(rows) == 1 + T * (T + 1) // 2
        assert name in stdout
        t = rec["timing"]  # the runner-overhead split: its parts fit inside the run's wall time
        assert 0 < t["train_step_s"] + t["eval_step_s"] + t["probe_s"] <= t["wall_s"]
        assert t["threads"] >= 1 and t["cpus"] >= 1  # the conditions the times were taken in
        assert t["load_start"] >= 0 and t["load_end"] >= 0
        assert not (Path(rec["_folder"]) / "resume.pt").exists()  # dropped once finished
    assert f"{len(STRATEGIES)} of {len(STRATEGIES)} runs finished" in stdout
    assert "a plumbing check, not a comparison" in stdout.splitlines()[0]


def test_classifier_is_the_converged_probe(smoke):
    out, _, _ = smoke
    rec = next(r for r in find_records([out]) if r["config"]["strategy"] == "classifier")
    for j, p in enumerate(rec["probe_acc"]):
        assert abs(rec["acc_matrix"][-1][j] - p) <= 0.01


def test_strategies_that_cannot_forget_keep_earlier_accuracy_bit_identical(smoke):
    out, _, _ = smoke
    for rec in find_records([out]):
        if STRATEGIES[rec["config"]["strategy"]].forgets:
            continue
        R = rec["acc_matrix"]
        for j in range(len(R)):
            assert len({R[i][j] for i in range(j, len(R))}) == 1, rec["config"]["strategy"]
        assert rec["metrics"]["forgetting"] == 0.0


def test_record_files_are_valid_json_with_config(smoke):
    out, _, _ = smoke
    for f in out.glob("*/record.json"):
        rec = json.loads(f.read_text())
        assert rec["status"] == "finished" and rec["error"] is None
        assert (f.parent / "config.yaml").exists()


def test_the_benchmark_writes_its_report_tables_and_figures(smoke):
    out, stdout, _ = smoke
    report = out / "report"
    for name in ("summary", "per_task_mnist5k-split5_vit_micro"):
        for ext in ("md", "tex", "csv"):
            assert (report / f"{name}.{ext}").stat().st_size > 0
    for fig in ("heatmap_mnist5k-split5_vit_micro", "task_curves_mnist5k-split5_vit_micro",
                "tradeoff_mnist5k-split5", "train_time_mnist5k-split5",
                "tokens_mnist5k-split5_vit_micro_meat"):
        assert (report / f"{fig}.png").stat().st_size > 0, fig
        assert (report / f"{fig}.pdf").stat().st_size > 0, fig
        assert f"{fig}.png" in stdout
    per_task = (report / "per_task_mnist5k-split5_vit_micro.md").read_text()
    assert "| average |" in per_task and "| storage MiB |" in per_task
    records = find_records([out])
    assert len(list((report / "acc_matrix").glob("*.csv"))) == len(records)
    for rec in records:  # CSV training log always written
        log = (Path(rec["_folder"]) / "train_log.csv").read_text().splitlines()
        assert log[0] == "task,epoch,loss,accuracy,seconds"


def test_report_command_rebuilds_the_same_tables(smoke, tmp_path):
    out, _, _ = smoke
    r = run_main("report", str(out), "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ("summary.csv", "per_task_mnist5k-split5_vit_micro.md", "acc_matrices.md"):
        assert (tmp_path / name).read_text() == (out / "report" / name).read_text()


def test_tensorboard_and_dropkey_flags(tmp_path, cache_dir):
    r = run_main("--suite", "smoke", "--strategies", "meat", "--steps-per-task", "2", "--out",
                 str(tmp_path), "--cache", str(cache_dir), "--quiet", "--tensorboard",
                 "--dropkey", "0.2", "--dropkey-schedule", "constant")
    assert r.returncode == 0, r.stderr[-2000:]
    (rec,) = find_records([tmp_path])
    assert (rec["config"]["dropkey"], rec["config"]["dropkey_schedule"]) == (0.2, "constant")
    assert rec["metrics"]["forgetting"] == 0.0  # DropKey is off at evaluation
    events = list((Path(rec["_folder"]) / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_masks_that_never_moved_are_warned_about_and_marked(tmp_path, cache_dir):
    """MEAT at the paper's rates given as the user's own values (so not scaled to the budget,
    ``strategies.schedules.budget_factor``) for a few steps: its logits, started at 8, travel
    far less than 8, so no mask bit can change; the run says so, says how to fix it, and the
    summary marks it."""
    suite = tmp_path / "unmoved.yaml"
    suite.write_text("stream: mnist5k-split5\nbackbone: vit_nano\nstrategies: [meat]\n"
                     "seeds: [0]\nepochs: 1\nbase_epochs: 1\n"
                     "hparams: {meat: {token_mask_lr: 0.1, ffn_mask_lr: 0.1, head_lr: 5.0e-4}}\n")
    r = run_main("--suite", str(suite), "--steps-per-task", STEPS, "--out", str(tmp_path / "out"),
                 "--cache", str(cache_dir), "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    (rec,) = find_records([tmp_path / "out"])
    assert rec["config"]["hparams_source"] == "user"
    assert all(m[k]["changed"] == 0 for m in rec["mask_movement"] for k in m)
    T = len(rec["tasks"])
    for kind in ("token", "ffn"):
        assert f"meat, task {T}/{T}: its {kind} masks did not change" in r.stderr
    assert "tune" in r.stderr and "token_mask_lr" in r.stderr  # how to fix it
    assert "token 0.0!, ffn 0.0!" in r.stdout


def test_registered_rates_move_the_masks_at_the_suites_budget(smoke):
    """At the registered values scaled to the paper's learning-rate mass, the mask strategies'
    masks move on every task even at a budget of a few steps, and the runs say so."""
    out, _, stderr = smoke
    for rec in find_records([out]):
        if rec["config"]["strategy"] in ("meat", "piggyback"):
            assert rec["config"]["hparams_source"].endswith("+budget")
            assert all(m[k]["changed"] > 0 for m in rec["mask_movement"] for k in m), rec[
                "mask_movement"]
    assert "meat, task" not in stderr and "piggyback, task" not in stderr
