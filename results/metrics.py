"""Continual-learning metrics as pure functions of the accuracy matrix.

``R[i][j]`` is the accuracy on task j (its own head and test set) after training through task i,
for i, j = 0..T-1; entries may be ``None`` where not evaluated (j > i). Task-incremental (TAw).
The same formulas apply to a run's class-incremental matrix (task j's test set predicted over
every class seen through task i, without the task id; ``models.task_inference``).
"""

from __future__ import annotations

from collections.abc import Sequence

Matrix = Sequence[Sequence[float | None]]


def _check(R: Matrix) -> int:
    T = len(R)
    if T == 0 or any(len(row) != T for row in R):
        raise ValueError("accuracy matrix must be square and non-empty")
    for i in range(T):
        for j in range(i + 1):
            if R[i][j] is None:
                raise ValueError(
                    f"R[{i}][{j}] (task {j + 1} after training task {i + 1}) is missing")
    return T


def final_average_accuracy(R: Matrix) -> float:
    """ACC = (1/T) sum_j R[T-1][j]."""
    T = _check(R)
    return sum(R[T - 1][j] for j in range(T)) / T


def average_incremental_accuracy(R: Matrix) -> float:
    """(1/T) sum_i [ (1/(i+1)) sum_{j<=i} R[i][j] ]: mean over time of the accuracy so far."""
    T = _check(R)
    return sum(sum(R[i][j] for j in range(i + 1)) / (i + 1) for i in range(T)) / T


def forgetting(R: Matrix) -> float:
    """Chaudhry et al.: (1/(T-1)) sum_{j<T-1} [ max_{l<T-1} R[l][j] - R[T-1][j] ].

    The max runs over l = j..T-2 (R[l][j] exists only for l >= j). Can be negative (the task
    improved). 0 for a single task.
    """
    T = _check(R)
    if T == 1:
        return 0.0
    return sum(
        max(R[k][j] for k in range(j, T - 1)) - R[T - 1][j] for j in range(T - 1)
    ) / (T - 1)


def backward_transfer(R: Matrix) -> float:
    """GEM's BWT = (1/(T-1)) sum_{j<T-1} (R[T-1][j] - R[j][j]). Negative means forgetting."""
    T = _check(R)
    if T == 1:
        return 0.0
    return sum(R[T - 1][j] - R[j][j] for j in range(T - 1)) / (T - 1)


def accuracy_from_counts(correct: int, n: int) -> float:
    """Accuracy of one (train task, eval task) cell from raw counts."""
    if n <= 0:
        raise ValueError("accuracy of an empty test set")
    return correct / n


def all_metrics(R: Matrix) -> dict:
    return {
        "final_avg_acc": final_average_accuracy(R),
        "avg_incremental_acc": average_incremental_accuracy(R),
        "forgetting": forgetting(R),
        "bwt": backward_transfer(R),
    }


def last_accuracy(R: Matrix, sizes: Sequence[int], i: int | None = None) -> float:
    """Accuracy over every test sample of tasks 0..i after training task i (default: the last),
    sample-weighted: sum_{j<=i} n_j R[i][j] / sum_{j<=i} n_j — the field's class-incremental
    "last accuracy" (PILOT, CODA-Prompt)."""
    T = _check(R)
    i = T - 1 if i is None else i
    return sum(sizes[j] * R[i][j] for j in range(i + 1)) / sum(sizes[: i + 1])


def average_incremental_last_accuracy(R: Matrix, sizes: Sequence[int]) -> float:
    """(1/T) sum_i last_accuracy(R, sizes, i): the field's "average incremental accuracy"."""
    T = _check(R)
    return sum(last_accuracy(R, sizes, i) for i in range(T)) / T


def task_agnostic_metrics(cil: Matrix, task_inference: Matrix, sizes: Sequence[int],
                          references: dict[str, Matrix] | None = None) -> dict:
    """The metrics above of the class-incremental matrix, prefixed ``cil_``; its sample-weighted
    last and average incremental accuracy (``cil_last_acc``, ``cil_avg_inc_last_acc``; ``sizes``:
    each task's test-set size); the final task-inference accuracy TI = (1/T) sum_j I[T-1][j]
    (I[i][j]: share of task j's samples whose task was inferred right after training task i);
    and the last and average incremental accuracy of each reference matrix (e.g.
    ``simplecil_last_acc``)."""
    out = {f"cil_{k}": v for k, v in all_metrics(cil).items()}
    out["cil_last_acc"] = last_accuracy(cil, sizes)
    out["cil_avg_inc_last_acc"] = average_incremental_last_accuracy(cil, sizes)
    out["task_inference_acc"] = final_average_accuracy(task_inference)
    for name, R in (references or {}).items():
        out[f"{name}_last_acc"] = last_accuracy(R, sizes)
        out[f"{name}_avg_inc_last_acc"] = average_incremental_last_accuracy(R, sizes)
    return out


def task_incremental_chance(classes: Sequence[int]) -> list[float]:
    """Chance of R[i][j] with task ids, per task j: 1/n_j (a uniform guess over task j's n_j
    classes, its head)."""
    return [1 / n for n in classes]


def class_incremental_chance(classes: Sequence[int]) -> list[float]:
    """Chance of a class-incremental R[i][j], per training task i: 1/(n_0 + ... + n_i) (a class
    is a (task, label) pair; a uniform guess picks one of those seen through task i)."""
    return [1 / sum(classes[: i + 1]) for i in range(len(classes))]


def final_chance(classes: Sequence[int]) -> dict:
    """Chance of the final averages: ``final_avg_acc`` (1/T) sum_j 1/n_j, ``cil_final_avg_acc``
    1/sum_j n_j, ``task_inference_acc`` 1/T."""
    return {"final_avg_acc": sum(task_incremental_chance(classes)) / len(classes),
            "cil_final_avg_acc": class_incremental_chance(classes)[-1],
            "task_inference_acc": 1 / len(classes)}
