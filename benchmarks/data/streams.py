"""Task-incremental streams: ordered tasks with their own classes (ids from 0 in every task).

A stream is a pure function of ``(name, seed)`` (plus a data root for local datasets): the same
seed gives the same splits, class order and transformations. Every task's training data is split
stratified into train/validation (``val_fraction``, seeded); the test part is only ever used to
report accuracy. :func:`build_stream` builds one by name; :func:`stream_image_shape` tells its
image shape (and raises its errors) without loading data. Sources: :mod:`benchmarks.data.datasets`
(bundled) and :mod:`benchmarks.data.local`; task transforms: :mod:`benchmarks.data.transforms`;
as an Avalanche benchmark: :mod:`benchmarks.data.scenario`.

Stream names:
- ``mnist5k-domains`` (default; in the spirit of MEAT's sequence of different datasets): base =
  upright MNIST-5k digits 0-4; tasks = differently transformed digit datasets, each over its own
  classes — see :data:`DOMAIN_TASKS`. Task test images come from the test split, so no base
  training image (upright) is ever a test image of a task.
- ``mnist5k-nuisance5``: base = upright MNIST-5k digits 0-9 (training split); tasks = five
  10-class tasks of nuisance-corrupted digits (shrunk and translated, cluttered, noisy at low
  contrast, rotated and scaled, inverted), on disjoint fifths of the training split — see
  :func:`mnist5k_nuisance`. Built so that pre-training matters, unlike ``mnist5k-split5``.
- ``<dataset>-split<N>``: the dataset's classes in a seeded random order, cut into N tasks.
  Bundled ``mnist5k`` (base: upscaled scikit-learn digits) and ``digits`` (base: MNIST-5k), or a
  local dataset (``cifar10``, ``cifar100``, ``svhn``, ``fashionmnist``, ``imagefolder``; no base:
  start from a pretrained checkpoint file).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from benchmarks.data.datasets import (
    BUNDLED_CLASSES,
    BUNDLED_SHAPE,
    DataError,
    ImageSource,
    RelabeledSubset,
    TensorImages,
    mnist5k,
    sklearn_digits,
    stratified_split,
)
from benchmarks.data.download import DOWNLOADABLE
from benchmarks.data.imagecache import targets_of
from benchmarks.data.layouts import LOCAL_DATASETS
from benchmarks.data.local import local_shape_and_classes, local_source
from benchmarks.data.scenario import avalanche_benchmark, task_dataset
from benchmarks.data.transforms import (
    Transform,
    clutter,
    compose,
    invert,
    noise_low_contrast,
    patch_shuffle,
    random_affine,
    rotate,
)


@dataclass
class Task:
    """One task: its classes (head output i = ``classes[i]``) and train/val/test data."""

    name: str
    classes: list[str]
    train: Dataset
    val: Dataset
    test: Dataset

    @property
    def n_classes(self) -> int:
        return len(self.classes)


@dataclass
class Stream:
    """An ordered list of tasks plus the base data the backbone is pre-trained on (or None)."""

    name: str
    seed: int
    tasks: list[Task]
    base: Task | None
    image_shape: tuple[int, int, int]

    def describe(self) -> list[dict]:
        """Per-task summary stored in run records."""
        return [
            {"name": t.name, "classes": t.classes, "n_train": len(t.train), "n_val": len(t.val),
             "n_test": len(t.test)}
            for t in self.tasks
        ]

    def validation_only(self, n_tasks: int) -> Stream:
        """The first ``n_tasks`` tasks with each task's validation split in place of its test
        split: what hyperparameter tuning runs on, so no choice ever sees test data."""
        tasks = [Task(t.name, t.classes, t.train, t.val, t.val) for t in self.tasks[:n_tasks]]
        return Stream(self.name, self.seed, tasks, self.base, self.image_shape)

    def to_benchmark(self):
        """The stream as an Avalanche benchmark (:func:`avalanche_benchmark`): ``train``,
        ``test`` and ``valid`` streams of one experience per task, task label = task index."""

        def parts(attr: str):
            return [task_dataset(getattr(t, attr), i) for i, t in enumerate(self.tasks)]

        return avalanche_benchmark(train=parts("train"), test=parts("test"), valid=parts("val"))


# ----------------------------------------------------------------------------- task building
def _select(ds: Dataset, classes: Sequence[int], transform: Transform | None) -> Dataset:
    """The samples of ``classes`` relabelled 0..k-1 in the given order, transformed."""
    label_map = {c: i for i, c in enumerate(classes)}
    idx = [i for i, y in enumerate(targets_of(ds)) if y in label_map]
    if isinstance(ds, TensorImages):  # in memory: transform once, eagerly
        images = ds.images[idx]
        if transform is not None:
            images = transform(images)
        return TensorImages(images, [label_map[ds.targets[i]] for i in idx])
    return RelabeledSubset(ds, idx, label_map, transform)


def _subset(ds: Dataset, idx: np.ndarray) -> Dataset:
    if isinstance(ds, TensorImages):
        return TensorImages(ds.images[idx], [ds.targets[i] for i in idx])
    ident = {y: y for y in set(targets_of(ds))}
    return RelabeledSubset(ds, idx.tolist(), ident)


def make_task(
    name: str,
    source: ImageSource,
    classes: Sequence[int],
    seed: int,
    val_fraction: float,
    transform: Transform | None = None,
) -> Task:
    """A task over ``classes`` of ``source``; its train part split stratified into train/val."""
    train_all = _select(source.train, classes, transform)
    train_idx, val_idx = stratified_split(targets_of(train_all), val_fraction, seed)
    return Task(
        name=name,
        classes=[source.class_names[c] for c in classes],
        train=_subset(train_all, train_idx),
        val=_subset(train_all, val_idx),
        test=_select(source.test, classes, transform),
    )


# ----------------------------------------------------------------------------- streams
# (task name, source, digit classes, transform factory(seed)) of the default domain stream.
DOMAIN_TASKS: list[tuple[str, str, tuple[int, ...], Callable[[int], Transform]]] = [
    ("rot90 5-9", "mnist5k", (5, 6, 7, 8, 9), lambda s: rotate(1)),
    ("inverted 0-4", "mnist5k", (0, 1, 2, 3, 4), lambda s: invert),
    ("patch-shuffled 5-9", "mnist5k", (5, 6, 7, 8, 9), lambda s: patch_shuffle(4, s)),
    ("rot90+shuffled 0-4", "mnist5k", (0, 1, 2, 3, 4),
     lambda s: compose(rotate(1), patch_shuffle(4, s + 2))),
    ("shuffled+inverted 0-4", "mnist5k", (0, 1, 2, 3, 4),
     lambda s: compose(patch_shuffle(4, s + 1), invert)),
]


def mnist5k_domains(seed: int, val_fraction: float) -> Stream:
    sources = {"mnist5k": mnist5k(seed)}
    base = make_task("upright 0-4", sources["mnist5k"], range(5), seed, val_fraction)
    tasks = [
        make_task(name, sources[src], classes, seed, val_fraction, factory(seed))
        for name, src, classes, factory in DOMAIN_TASKS
    ]
    return Stream("mnist5k-domains", seed, tasks, base, BUNDLED_SHAPE)


# ----------------------------------------------------------------------------- nuisances
# (task name, corruption(images, rng, fragment pool)) of ``mnist5k-nuisance5``, in task order.
NUISANCE_TASKS: list[tuple[str, Callable]] = [
    ("shrunk+translated", lambda x, rs, pool: random_affine(x, rs, (0.6, 0.85), shift=None)),
    ("cluttered", lambda x, rs, pool: clutter(random_affine(x, rs, (0.8, 1.0), shift=0.1), rs,
                                               pool)),
    ("noisy low-contrast", lambda x, rs, pool: noise_low_contrast(x, rs)),
    ("rotated+scaled", lambda x, rs, pool: random_affine(x, rs, (0.7, 1.1), rot=45, shift=0.15)),
    ("inverted", lambda x, rs, pool: 1.0 - random_affine(x, rs, (0.8, 1.0), rot=20, shift=0.1)),
]


def mnist5k_nuisance(seed: int, val_fraction: float) -> Stream:
    """``mnist5k-nuisance5``: a bundled stream on which base pre-training matters.

    Recipe. MNIST-5k is split 4,000 train / 1,000 test (stratified, seeded). Base: upright
    digits 0-9 of the training split (its validation part held out by ``val_fraction``), tested
    on the upright test split. Tasks (all 10 classes, 28x28): the training split is cut into 5
    seeded disjoint fifths (800 images; ``val_fraction`` of them, stratified, for validation);
    task i corrupts its fifth, then the whole test split (1,000 images), with
    ``NUISANCE_TASKS[i]`` drawing from ``RandomState(1000 * seed + i)``. Clutter fragments are
    cut from training-split images. No base training image is a task test image: task test
    images are the test split only.

    Why. On 2-class MNIST (``mnist5k-split5``) a linear probe on randomly initialised ViT
    features is nearly as good as on pre-trained ones. Ten classes under nuisances that random
    features cannot undo (position and scale, distractor strokes, noise, rotation, polarity)
    leave the random probe far behind the digit features learned on the base, while the
    nuisances stay far enough from the upright base that fine-tuning the backbone still beats
    the frozen probe (measured: ``docs/results.md``, "Reference results: the `standard` suite")."""
    src = mnist5k(seed)
    x, y = src.train.images, torch.tensor(src.train.targets)
    xt, yt = src.test.images, torch.tensor(src.test.targets)
    classes = list(src.class_names)
    base_tr, base_va = stratified_split(y.tolist(), val_fraction, seed)
    base = Task("upright 0-9", classes, TensorImages(x[base_tr], y[base_tr].tolist()),
                TensorImages(x[base_va], y[base_va].tolist()), TensorImages(xt, yt.tolist()))
    perm = np.random.RandomState(seed).permutation(len(y))
    chunks = [np.sort(c) for c in np.array_split(perm, len(NUISANCE_TASKS))]
    tasks = []
    for i, ((name, corrupt), idx) in enumerate(zip(NUISANCE_TASKS, chunks, strict=True)):
        rs = np.random.RandomState(1000 * seed + i)
        xi, yi = corrupt(x[idx], rs, x), y[idx]
        tr, va = stratified_split(yi.tolist(), val_fraction, seed)
        test = TensorImages(corrupt(xt, rs, x), yt.tolist())
        tasks.append(Task(name, classes, TensorImages(xi[tr], yi[tr].tolist()),
                          TensorImages(xi[va], yi[va].tolist()), test))
    return Stream("mnist5k-nuisance5", seed, tasks, base, BUNDLED_SHAPE)


def _check_n_tasks(dataset: str, n_classes: int, n_tasks: int) -> None:
    if not 1 <= n_tasks <= n_classes // 2:
        raise DataError(f"{dataset} has {n_classes} classes: split into 1..{n_classes // 2} "
                        "tasks of >= 2")


def class_split(
    source: ImageSource, n_tasks: int, seed: int, val_fraction: float
) -> list[Task]:
    """The source's classes in a seeded random order, cut into ``n_tasks`` contiguous groups."""
    n = len(source.class_names)
    _check_n_tasks(source.name, n, n_tasks)
    order = np.random.RandomState(seed).permutation(n)
    groups = np.array_split(order, n_tasks)
    return [
        make_task(f"{source.name} {'/'.join(source.class_names[c] for c in g)}", source,
                  g.tolist(), seed, val_fraction)
        for g in groups
    ]


PAPER_TASKS = ("cub", "cars", "aircraft", "cifar100", "sketches", "wikiart")
PAPER_STREAM = "meat-paper6"


def _paper_root(data_root: str | Path | None) -> Path:
    if data_root is None:
        raise DataError(f"stream {PAPER_STREAM!r} reads {', '.join(PAPER_TASKS)} from "
                        "DATA_ROOT/<name>: give --data-root PATH")
    return Path(data_root).expanduser()


def _paper_order(download: bool) -> list[str]:
    """The order the paper's datasets are read in: with ``download``, those that cannot be
    downloaded first, so that one missing is refused before any download starts."""
    if not download:
        return list(PAPER_TASKS)
    return sorted(PAPER_TASKS, key=lambda name: name in DOWNLOADABLE)


def paper_stream(seed: int, val_fraction: float, data_root: str | None,
                 img_size: int = 224, preprocess: dict | None = None,
                 cache_dir: str | Path | None = None, download: bool = False) -> Stream:
    """The MEAT paper's new tasks in its order — CUB-200-2011, Stanford Cars, FGVC-Aircraft,
    CIFAR-100, Sketches, WikiArt — each a task over all its classes, read from
    ``data_root/<name>`` (layouts in :mod:`benchmarks.data.layouts`), RGB at ``img_size``. The
    base is ImageNet: give its pre-trained checkpoint (``--pretrained``). ``preprocess``,
    ``cache_dir`` and ``download``: see :func:`benchmarks.data.local.local_source`."""
    root = _paper_root(data_root)
    sources = {name: local_source(name, root / name, img_size, preprocess, cache_dir,
                                  download=download)
               for name in _paper_order(download)}
    tasks = [make_task(name, sources[name], range(len(sources[name].class_names)), seed,
                       val_fraction) for name in PAPER_TASKS]
    return Stream(PAPER_STREAM, seed, tasks, None, (3, img_size, img_size))


SPLIT_RE = re.compile(r"^(?P<dataset>[a-z0-9]+)-split(?P<n>\d+)$")
BUNDLED_SPLITS = ("mnist5k", "digits")
FIXED_STREAMS = {"mnist5k-domains": mnist5k_domains, "mnist5k-nuisance5": mnist5k_nuisance}


def stream_names_help() -> str:
    datasets = ", ".join((*BUNDLED_SPLITS, *LOCAL_DATASETS))
    return (f"{', '.join(FIXED_STREAMS)}, {PAPER_STREAM}, or <dataset>-split<N> with dataset in "
            f"{{{datasets}}}")


def is_bundled(name: str) -> bool:
    """Whether the stream's data ship with the suite (no ``data_root`` to read). A valid
    stream has a base task to pre-train on exactly when it is bundled."""
    return name in FIXED_STREAMS or name.split("-")[0] in BUNDLED_SPLITS


def _refuse_img_size(name: str, img_size: int | None) -> None:
    if is_bundled(name) and img_size is not None:
        raise DataError(f"stream {name!r} is bundled 28 x 28 data: an image size applies to "
                        "local datasets (--data-root); backbones take the stream's own size")


def _split_name(name: str) -> tuple[str, int]:
    """(dataset, number of tasks) of ``<dataset>-split<N>``, or the unknown-stream error."""
    m = SPLIT_RE.match(name)
    if not m or m["dataset"] not in (*BUNDLED_SPLITS, *LOCAL_DATASETS):
        raise DataError(f"unknown stream {name!r}; valid: {stream_names_help()}")
    return m["dataset"], int(m["n"])


def build_stream(
    name: str,
    seed: int,
    *,
    data_root: str | None = None,
    val_fraction: float = 0.1,
    img_size: int | None = None,
    preprocess: dict | None = None,
    cache_dir: str | Path | None = None,
    download: bool = False,
) -> Stream:
    """Build a stream by name; raises :class:`DataError` with the valid names if unknown.

    Local datasets go through the storage part of ``preprocess`` and, with ``cache_dir`` and an
    image size, the decode-once image cache (:func:`benchmarks.data.local.local_source`); the
    bundled streams keep their in-memory tensors. With ``download``, torchvision first fetches
    the local datasets it can download into their folders (the others are read as they are)."""
    _refuse_img_size(name, img_size)
    if name in FIXED_STREAMS:
        return FIXED_STREAMS[name](seed, val_fraction)
    if name == PAPER_STREAM:
        return paper_stream(seed, val_fraction, data_root, img_size or 224, preprocess,
                            cache_dir, download)
    dataset, n_tasks = _split_name(name)
    size = BUNDLED_SHAPE[-1]
    if dataset == "mnist5k":
        source, base_src = mnist5k(seed), sklearn_digits(seed, size=size)
    elif dataset == "digits":
        source, base_src = sklearn_digits(seed, size=size), mnist5k(seed)
    else:
        source = local_source(dataset, data_root, img_size, preprocess, cache_dir,
                              download=download)
        base_src = None
    tasks = class_split(source, n_tasks, seed, val_fraction)
    base = None
    if base_src is not None:
        base = make_task(base_src.name, base_src, range(len(base_src.class_names)), seed,
                         val_fraction)
    return Stream(name, seed, tasks, base, source.image_shape)


def stream_image_shape(name: str, *, data_root: str | Path | None = None,
                       img_size: int | None = None, check_sizes: bool = False,
                       download: bool = False) -> tuple[int, int, int]:
    """``build_stream(name, seed, data_root=data_root, img_size=img_size).image_shape`` (any
    seed) without loading the data, raising the same :class:`DataError` s for an unknown name
    or task count, an image size on a bundled stream, and a missing or invalid data folder
    (:func:`benchmarks.data.local.local_shape_and_classes`: the layout's files, class folders
    and annotations; one image header for a local dataset read at its own size, every header
    with ``check_sizes``, for the loader's mixed-sizes error). With ``download`` it downloads
    what ``build_stream(..., download=True)`` would, first (the CLI's check: a download that
    fails, e.g. without network, fails before any run starts)."""
    _refuse_img_size(name, img_size)
    if name in FIXED_STREAMS:
        return BUNDLED_SHAPE
    if name == PAPER_STREAM:
        root, size = _paper_root(data_root), img_size or 224
        for task in _paper_order(download):
            local_shape_and_classes(task, root / task, size, download=download)
        return (3, size, size)
    dataset, n_tasks = _split_name(name)
    if dataset in BUNDLED_SPLITS:
        shape, n_classes = BUNDLED_SHAPE, BUNDLED_CLASSES
    else:
        shape, n_classes = local_shape_and_classes(dataset, data_root, img_size, check_sizes,
                                                   download)
    _check_n_tasks(dataset, n_classes, n_tasks)
    return shape
