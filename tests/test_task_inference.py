"""Task-agnostic evaluation: the task-inference rules on hand-made logits, the class-incremental
metrics on a hand-made matrix, and a run that records both settings."""

import math

import pytest
import torch

from benchmarks.runner import run_one
from benchmarks.suitefile import load_suite
from benchmarks.suites import expand
from models.task_inference import infer, task_confidence
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


def test_class_incremental_metrics_on_a_hand_made_matrix():
    cil = [[0.9, None, None], [0.5, 0.8, None], [0.3, 0.6, 0.7]]
    ti = [[1.0, None, None], [0.6, 0.9, None], [0.4, 0.7, 0.8]]
    m = task_agnostic_metrics(cil, ti)
    assert m["cil_final_avg_acc"] == pytest.approx((0.3 + 0.6 + 0.7) / 3)
    assert m["cil_forgetting"] == pytest.approx(((0.9 - 0.3) + (0.8 - 0.6)) / 2)
    assert m["cil_avg_incremental_acc"] == pytest.approx((0.9 + 0.65 + 1.6 / 3) / 3)
    assert m["task_inference_acc"] == pytest.approx((0.4 + 0.7 + 0.8) / 3)


@pytest.mark.parametrize("strategy", ["classifier", "adapter"])
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
    assert record["task_inference"] == {"classifier": "max_logit", "adapter": "entropy"}[strategy]
    assert record["metrics"]["cil_final_avg_acc"] == pytest.approx(sum(C[-1]) / T)
