"""Task-agnostic evaluation: the task-inference rules on hand-made logits, the class-incremental
metrics on a hand-made matrix, and a run that records both settings."""

import math

import pytest
import torch

from benchmarks.runner import run_one
from benchmarks.suitefile import load_suite
from benchmarks.suites import expand
from models.task_inference import (
    MAHALANOBIS_COVARIANCE,
    RULES,
    TaskStatistics,
    cosine_nearest_mean,
    infer,
    mahalanobis_confidence,
    precisions,
    task_confidence,
)
from models.tasks import load_task_file
from results.metrics import task_agnostic_metrics
from results.records import load_record


def test_max_logit_is_one_head_over_all_classes_and_entropy_picks_the_most_confident_task():
    scores = {0: torch.tensor([[4.0, 3.9], [0.0, 0.0], [1.0, 0.0]]),
              1: torch.tensor([[3.0, -3.0, -3.0], [0.0, 0.0, 0.0], [0.0, 5.0, 0.0]])}
    task, label = infer(scores, "max_logit")
    # sample 0: the largest logit is task 0's 4.0; sample 1: a tie goes to the earlier task
    assert task.tolist() == [0, 0, 1] and label.tolist() == [0, 0, 1]
    task, label = infer(scores, "entropy")
    # sample 0: task 0's (4.0, 3.9) is nearly flat, task 1's (3, -3, -3) is confident
    assert task.tolist() == [1, 0, 1] and label.tolist() == [0, 0, 1]


def test_the_entropy_confidence_is_minus_the_softmax_entropy():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax (1/4, 3/4)
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert task_confidence(logits, "entropy").item() == pytest.approx(-h)
    with pytest.raises(ValueError, match="max_logit"):
        task_confidence(logits, "vote")


def stats_of(means: list[list[float]], mean_max_logit: float = 1.0, count: int = 100,
             scatter: torch.Tensor | None = None) -> TaskStatistics:
    means_t = torch.tensor(means)
    d = means_t.shape[1]
    return TaskStatistics(means_t, torch.eye(d) * count if scatter is None else scatter, count,
                          mean_max_logit)


def test_the_calibrated_rule_divides_each_head_by_its_own_mean_max_logit():
    # task 1's head gives 10x larger logits everywhere (a folded head of small-variance
    # features): uncalibrated it claims every sample; calibrated, each sample goes to the head
    # that is high relative to what it gives on its own training data
    scores = {0: torch.tensor([[2.0, 0.0], [0.5, 0.0]]),
              1: torch.tensor([[10.0, 0.0], [15.0, 0.0]])}
    stats = {0: stats_of([[0.0]], mean_max_logit=1.0), 1: stats_of([[0.0]], mean_max_logit=10.0)}
    assert infer(scores, "max_logit")[0].tolist() == [1, 1]
    task, label = infer(scores, "calibrated_max_logit", stats)
    assert task.tolist() == [0, 1] and label.tolist() == [0, 0]  # 2/1 > 10/10; 0.5/1 < 15/10


def test_mahalanobis_picks_the_task_of_the_nearest_class_mean_under_the_covariance():
    # two tasks in 2-d: task 0's classes at x = +-1, task 1's at y = +-1; with the shared
    # covariance stretched along x (variance 9 vs 1), (2.5, 0) is 1.5^2/9 = 0.25 from task 0's
    # (1, 0) but 2.5^2/9 + 1 = 1.69 from task 1's (0, +-1); (0, 0.6) is 0.16 from (0, 1)
    scatter = torch.diag(torch.tensor([9.0, 1.0])) * 99  # 100 samples, 1 class each: dof 99
    stats = {0: stats_of([[1.0, 0.0], [-1.0, 0.0]], scatter=scatter, count=101),
             1: stats_of([[0.0, 1.0], [0.0, -1.0]], scatter=scatter, count=101)}
    feats = torch.tensor([[2.5, 0.0], [0.0, 0.6], [-1.2, 0.1]])
    (p0, p1) = precisions([stats[0], stats[1]], "shared", shrinkage=0.0)
    assert torch.allclose(p0, torch.diag(torch.tensor([1 / 9, 1.0])))
    conf = mahalanobis_confidence(feats, [stats[0], stats[1]], [p0, p1])
    assert conf[0].tolist() == pytest.approx([-0.25, -(2.5 ** 2 / 9 + 1)])
    scores = {0: torch.tensor([[0.0, 9.0]] * 3), 1: torch.tensor([[5.0, 0.0]] * 3)}
    task, label = infer(scores, "mahalanobis", stats, feats, {0: p0, 1: p1})
    # the task comes from the frozen features, the label from that task's own head
    assert task.tolist() == [0, 1, 0] and label.tolist() == [1, 0, 1]


def test_the_mahalanobis_rules_differ_by_their_covariance_estimate():
    # task 0 (mean at x = 0) varies 9 along x, task 1 (mean at x = 4) varies 1: (2.5, 0) is
    # 2.5^2/9 = 0.69 from task 0 and 1.5^2 = 2.25 from task 1 under each task's own covariance
    # (TPL's form: task 0), but 2.5^2/5 = 1.25 against 1.5^2/5 = 0.45 under the pooled one
    # (variance (9 + 1)/2 along x: task 1), and the same under the pooled diagonal
    stretched = torch.diag(torch.tensor([9.0, 1.0])) * 100  # 101 samples, 1 class: dof 100
    stats = {0: stats_of([[0.0, 0.0]], count=101, scatter=stretched),
             1: stats_of([[4.0, 0.0]], count=101, scatter=torch.eye(2) * 100)}
    feats = torch.tensor([[2.5, 0.0]])
    scores = {0: torch.zeros(1, 1), 1: torch.zeros(1, 1)}
    picked = {}
    for rule, covariance in MAHALANOBIS_COVARIANCE.items():
        p = precisions([stats[0], stats[1]], covariance, shrinkage=0.0)
        picked[rule] = infer(scores, rule, stats, feats, dict(enumerate(p)))[0].item()
    assert picked == {"mahalanobis": 1, "mahalanobis_task": 0, "mahalanobis_diagonal": 1}
    assert set(MAHALANOBIS_COVARIANCE) <= set(RULES)  # each is chosen on validation


def test_task_statistics_are_class_means_and_within_class_scatter():
    feats = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]])
    labels = torch.tensor([0, 0, 1, 1])
    s = TaskStatistics.fit(feats, labels, 2, mean_max_logit=3.0)
    assert s.means.tolist() == [[2.0, 0.0], [0.0, 3.0]]
    assert s.scatter.tolist() == [[2.0, 0.0], [0.0, 2.0]]  # (+-1)^2 twice on each axis
    assert (s.count, s.mean_max_logit, s.size()) == (4, 3.0, 4 + 4 + 2)
    back = TaskStatistics.from_state(s.state())
    assert torch.equal(back.means, s.means) and torch.equal(back.scatter, s.scatter)
    assert (back.count, back.mean_max_logit) == (s.count, s.mean_max_logit)
    # per-task and diagonal covariances: the shrunk inverse of the task's own / pooled variances
    (p,) = precisions([s], "task", shrinkage=0.5)
    assert torch.allclose(p, torch.eye(2) / 1.0)  # S/dof = I (dof 2): shrinking I keeps I


def test_simplecil_is_the_cosine_nearest_class_mean():
    means = torch.tensor([[1.0, 0.0], [0.0, 1.0], [10.0, 10.0]])
    feats = torch.tensor([[5.0, 0.1], [-0.1, 0.2], [3.0, 3.2]])
    assert cosine_nearest_mean(feats, means).tolist() == [0, 1, 2]  # scale does not matter


def test_class_incremental_metrics_on_a_hand_made_matrix():
    cil = [[0.9, None, None], [0.5, 0.8, None], [0.3, 0.6, 0.7]]
    ti = [[1.0, None, None], [0.6, 0.9, None], [0.4, 0.7, 0.8]]
    m = task_agnostic_metrics(cil, ti, sizes=[100, 100, 200], references={"joint": ti})
    assert m["cil_final_avg_acc"] == pytest.approx((0.3 + 0.6 + 0.7) / 3)
    # sample-weighted over the seen tasks' test samples: the field's "last accuracy"
    assert m["cil_last_acc"] == pytest.approx((30 + 60 + 140) / 400)
    assert m["cil_avg_inc_last_acc"] == pytest.approx((0.9 + 0.65 + 230 / 400) / 3)
    assert m["joint_last_acc"] == pytest.approx((40 + 70 + 160) / 400)
    assert m["cil_forgetting"] == pytest.approx(((0.9 - 0.3) + (0.8 - 0.6)) / 2)
    assert m["cil_avg_incremental_acc"] == pytest.approx((0.9 + 0.65 + 1.6 / 3) / 3)
    assert m["task_inference_acc"] == pytest.approx((0.4 + 0.7 + 0.8) / 3)


@pytest.mark.parametrize("strategy", ["classifier", "adapter"])
@pytest.mark.slow
def test_a_task_agnostic_run_records_both_settings(tmp_path, strategy):
    suite = {**load_suite("smoke"), "strategies": [strategy], "task_agnostic": True,
             "steps_per_task": 2}
    (config,) = expand(suite)
    plain = expand({**suite, "task_agnostic": False})[0]
    assert "task_agnostic" not in plain.to_dict() and config.run_id != plain.run_id
    run_one(config, tmp_path, tmp_path / "cache", progress=False)
    record = load_record(tmp_path / config.run_id)
    R, C, TI = record["acc_matrix"], record["cil_acc_matrix"], record["task_inference_matrix"]
    # with one task seen, its task is the only candidate: both settings agree exactly
    assert C[0][0] == R[0][0] and TI[0][0] == 1.0
    T = len(R)
    for i in range(T):
        for j in range(i + 1):
            assert C[i][j] <= TI[i][j] and C[i][j] <= R[i][j] + 1e-12
    rules = record["task_inference_rules"]
    chosen = record["task_inference"]
    assert set(rules) == {*RULES, "entropy_batch"} and chosen in RULES
    val = {r: rules[r]["val_acc"][-1] for r in RULES}
    assert val[chosen] == max(val.values())  # chosen on validation data
    assert rules[chosen]["cil_acc_matrix"] == C and rules[chosen]["task_inference_matrix"] == TI
    assert record["metrics"]["cil_final_avg_acc"] == pytest.approx(sum(C[-1]) / T)
    sizes = [task["n_test"] for task in record["tasks"]]
    assert record["metrics"]["cil_last_acc"] == pytest.approx(
        sum(n * c for n, c in zip(sizes, C[-1], strict=True)) / sum(sizes))
    # the references: on one task SimpleCIL and the joint probe are class-incremental over it
    for name in ("simplecil", "joint"):
        M = record[f"{name}_acc_matrix"]
        assert all(0 <= M[i][j] <= 1 for i in range(T) for j in range(i + 1))
        assert f"{name}_last_acc" in record["metrics"]
    # the task statistics: in every task's file and in its storage bill
    d = 0
    for t in range(T):
        state = load_task_file(tmp_path / config.run_id / "tasks" / f"task_{t}.pt")
        means = state["task_statistics.means"]
        d = means.value.shape[1]
        assert means.kind == "task statistics"
        assert state["task_statistics.scatter"].value.shape == (d, d)
        items = record["storage"]["per_task_items"][t]
        assert any(it["name"].startswith("task statistics") and it["entries"] ==
                   means.value.numel() + d * d + 2 for it in items)
