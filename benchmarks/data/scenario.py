"""The suite's task datasets as Avalanche datasets and benchmarks (what the strategies train
on): :func:`task_dataset` tags a dataset's samples with task labels, :func:`avalanche_benchmark`
makes one experience per task dataset. :meth:`benchmarks.data.streams.Stream.to_benchmark` is
the usual way in.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch.utils.data import Dataset

from benchmarks.data.imagecache import targets_of


def task_dataset(ds: Dataset, task_labels: int | Sequence[int]):
    """``ds`` (with a ``targets`` or ``labels`` list) as an Avalanche classification dataset
    whose samples carry ``task_labels`` (one for all, or one per sample) as their third item."""
    from avalanche.benchmarks.utils import (
        ConstantSequence,
        DataAttribute,
        TaskAwareSupervisedClassificationDataset,
        TaskLabels,
    )

    if isinstance(task_labels, int):
        task_labels = ConstantSequence(task_labels, len(ds))
    return TaskAwareSupervisedClassificationDataset(
        [ds], data_attributes=[DataAttribute(targets_of(ds), "targets"), TaskLabels(task_labels)])


def avalanche_benchmark(**streams: Sequence):
    """An Avalanche benchmark with one stream per keyword (stream name -> list of
    :func:`task_dataset` s, one experience each). Experiences have ``task_label`` (when they
    hold one task) and ``task_labels``, ``classes_in_this_experience`` as a sorted list, and
    ``current_experience``; every stream's ``benchmark`` is the benchmark (evaluation caches
    its loaders by it)."""
    from avalanche.benchmarks.scenarios import (
        benchmark_from_datasets,
        with_classes_timeline,
        with_task_labels,
    )

    bench = with_classes_timeline(with_task_labels(benchmark_from_datasets(**streams)))
    for stream in bench.streams.values():
        stream.benchmark = bench  # the decorators build new streams and leave it unset
        for exp in stream:
            exp.classes_in_this_experience = sorted(exp.classes_in_this_experience)
    return bench
