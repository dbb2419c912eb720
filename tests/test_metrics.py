import pytest

from results.metrics import (
    accuracy_from_counts,
    all_metrics,
    average_incremental_accuracy,
    backward_transfer,
    class_incremental_chance,
    final_average_accuracy,
    final_chance,
    forgetting,
    task_incremental_chance,
)

# R[i][j]: accuracy on task j after training task i
R = [
    [0.9, None, None],
    [0.7, 0.8, None],
    [0.5, 0.9, 0.6],
]


def test_final_average_accuracy():
    assert final_average_accuracy(R) == pytest.approx((0.5 + 0.9 + 0.6) / 3)


def test_average_incremental_accuracy():
    expected = (0.9 + (0.7 + 0.8) / 2 + (0.5 + 0.9 + 0.6) / 3) / 3
    assert average_incremental_accuracy(R) == pytest.approx(expected)


def test_forgetting_uses_max_over_earlier_steps():
    # task 0: max(0.9, 0.7) - 0.5 = 0.4 ; task 1: max(0.8) - 0.9 = -0.1
    assert forgetting(R) == pytest.approx((0.4 - 0.1) / 2)


def test_forgetting_max_differs_from_diagonal_when_accuracy_peaks_later():
    R2 = [[0.5, None, None], [0.9, 0.6, None], [0.7, 0.6, 0.8]]
    # max-based: task0 max(0.5, 0.9) - 0.7 = 0.2 ; diagonal-based would give -0.2
    assert forgetting(R2) == pytest.approx((0.2 + 0.0) / 2)


def test_negative_forgetting_when_all_tasks_improve():
    R3 = [[0.5, None], [0.8, 0.7]]
    assert forgetting(R3) == pytest.approx(-0.3)
    assert backward_transfer(R3) == pytest.approx(0.3)


def test_bwt():
    assert backward_transfer(R) == pytest.approx(((0.5 - 0.9) + (0.9 - 0.8)) / 2)


def test_single_task_has_zero_forgetting_and_bwt():
    assert forgetting([[0.7]]) == 0.0
    assert backward_transfer([[0.7]]) == 0.0


def test_unequal_task_sizes_use_per_task_accuracy_not_sample_weighting():
    # task 0: 90/100 correct, task 1: 1/10 correct -> per-task mean, not 91/110
    acc = [accuracy_from_counts(90, 100), accuracy_from_counts(1, 10)]
    M = [[acc[0], None], [acc[0], acc[1]]]
    assert final_average_accuracy(M) == pytest.approx(0.5)
    assert final_average_accuracy(M) != pytest.approx(91 / 110)


def test_missing_lower_triangle_entry_is_an_error():
    with pytest.raises(ValueError, match=r"R\[1\]\[0\]"):
        all_metrics([[0.5, None], [None, 0.5]])


def test_empty_test_set_is_an_error():
    with pytest.raises(ValueError):
        accuracy_from_counts(0, 0)


def test_chance_levels_by_hand():
    classes = [2, 4, 10]
    assert task_incremental_chance(classes) == pytest.approx([1 / 2, 1 / 4, 1 / 10])
    assert class_incremental_chance(classes) == pytest.approx([1 / 2, 1 / 6, 1 / 16])
    assert final_chance(classes) == pytest.approx({
        "final_avg_acc": (1 / 2 + 1 / 4 + 1 / 10) / 3, "cil_final_avg_acc": 1 / 16,
        "task_inference_acc": 1 / 3})
