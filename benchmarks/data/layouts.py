"""The local datasets' on-disk layouts and their readers: ``cifar10``, ``cifar100``, ``svhn``,
``fashionmnist`` (torchvision layouts), ``imagefolder`` (``ROOT/train/<class>/*`` and
``ROOT/test/<class>/*``) and the MEAT paper's ``cub``, ``cars``, ``aircraft``, ``sketches``,
``wikiart`` (their official layouts, below).

:func:`raw_source` reads a dataset's folder into an ``ImageSource`` whose items are still PIL
images (:func:`benchmarks.data.local.local_source` decodes them); :func:`check_layout` checks the
same folder as the readers do, from file names, class folders and annotation files alone. Neither
reaches the network: :func:`fetch` lets torchvision download the datasets it can fetch
(:data:`DOWNLOADABLE`) into that folder first, when a run asks for it (``download``); the others
are made from their official archives by :mod:`benchmarks.data.prepare`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from benchmarks.data.datasets import DataError, ImageSource, stratified_split

LOCAL_DATASETS = ("cifar10", "cifar100", "svhn", "fashionmnist", "imagefolder", "cub", "cars",
                  "aircraft", "sketches", "wikiart")
# (C, H, W) of the datasets held as arrays of one size; images read from files come out RGB
ARRAY_SHAPES = {"cifar10": (3, 32, 32), "cifar100": (3, 32, 32), "svhn": (3, 32, 32),
                "fashionmnist": (1, 28, 28)}
FOLDER_DATASETS = ("imagefolder", "sketches", "wikiart")


def _raw(name: str, train: Dataset, test: Dataset, classes) -> ImageSource:
    """A source whose items are still PIL images (shape known once decoded: ``local_source``)."""
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


def to_rgb(img):
    """PIL image -> RGB (a named function: cache builders pickle it to worker processes)."""
    return img.convert("RGB")


# ----------------------------------------------------------------------------- array layouts
CIFAR_FILES = {  # folder, training files, test file, meta file, label key, class-name key
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch",
                "batches.meta", "labels", "label_names"),
    "cifar100": ("cifar-100-python", ["train"], "test", "meta", "fine_labels",
                 "fine_label_names"),
}


def _cifar_file(name: str, path: Path, fname: str) -> Path:
    f = path / CIFAR_FILES[name][0] / fname
    if not f.is_file():
        raise DataError(f"{name} not found or unreadable under {path}: missing file {f}")
    return f


def _cifar_classes(name: str, path: Path) -> list[str]:
    """The class names from the meta pickle, after checking that every file of the layout is
    there (in the order :func:`cifar_source` reads them)."""
    import pickle

    _, train_files, test_file, meta_file, _, names_key = CIFAR_FILES[name]
    with open(_cifar_file(name, path, meta_file), "rb") as fh:
        classes = pickle.load(fh, encoding="latin1")[names_key]
    for fname in (*train_files, test_file):
        _cifar_file(name, path, fname)
    return classes


def cifar_source(name: str, path: Path) -> ImageSource:
    """CIFAR-10/100 from their python pickles (the layout torchvision downloads), read without
    torchvision's md5 check of the official files, so any file of that layout loads."""
    import pickle

    _, train_files, test_file, _, label_key, _ = CIFAR_FILES[name]

    def part(files: list[str]) -> ArrayImages:
        batches = []
        for fname in files:
            with open(_cifar_file(name, path, fname), "rb") as fh:
                batches.append(pickle.load(fh, encoding="latin1"))
        data = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32)
        return ArrayImages(data.transpose(0, 2, 3, 1), [y for b in batches for y in b[label_key]])

    classes = _cifar_classes(name, path)
    return _raw(name, part(train_files), part([test_file]), classes)


def _check_torchvision_files(name: str, path: Path) -> None:
    """The files torchvision's FashionMNIST / SVHN look for (existence only: SVHN's md5 of the
    whole file is left to the loader), failing with torchvision's own message."""
    if name == "fashionmnist":
        raw, processed = path / "FashionMNIST" / "raw", path / "FashionMNIST" / "processed"
        if all((processed / f).is_file() for f in ("training.pt", "test.pt")) or all(
                (raw / f"{p}-{k}-idx{d}-ubyte").is_file()
                for p in ("train", "t10k") for k, d in (("images", 3), ("labels", 1))):
            return
        raise RuntimeError("Dataset not found. You can use download=True to download it")
    if not all((path / f"{s}_32x32.mat").is_file() for s in ("train", "test")):
        raise RuntimeError("Dataset not found or corrupted. You can use download=True to "
                           "download it")


# ----------------------------------------------------------------------------- file layouts
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


def _folder_parts(name: str, path: Path) -> list[Path]:
    """The class-folder roots of an ImageFolder layout: ``[train, test]``, or ``[path]`` for a
    dataset without a split on disk (never ``imagefolder``): no ``train/`` and ``test/``, or
    only one of them beside other class folders (TU-Berlin's sketches have a class "train")."""
    train, test = (path / "train").is_dir(), (path / "test").is_dir()
    if name == "imagefolder" and not (train and test):
        raise DataError(f"ImageFolder root {path} needs train/ and test/<class>/<image> folders")
    if not (train or test):
        return [path]
    if not (train and test) and any(
            d.is_dir() and d.name not in ("train", "test") and not d.name.startswith(".")
            for d in path.iterdir()):
        return [path]
    for part, there in (("train", train), ("test", test)):
        if not there:
            raise DataError(f"{name}: {path} has no {part}/<class>/<image> folders")
    return [path / "train", path / "test"]


def _same_classes(path: Path, train: list[str], test: list[str]) -> None:
    if set(train) != set(test):
        raise DataError(f"train/ and test/ class folders differ under {path}: only in "
                        f"train/: {sorted(set(train) - set(test)) or 'none'}; only in test/: "
                        f"{sorted(set(test) - set(train)) or 'none'}")


def folder_source(name: str, path: Path, transform, seed: int = 0,
                  test_fraction: float = 0.2) -> ImageSource:
    """ImageFolder layouts: ``train/<class>/*`` and ``test/<class>/*``, or ``<class>/*`` alone,
    then split per class into train/test (``test_fraction``, seeded) — Sketches (TU-Berlin) and
    WikiArt ship without a split."""
    from torchvision.datasets import ImageFolder

    parts = _folder_parts(name, path)
    if len(parts) == 2:
        train, test = (ImageFolder(str(p), transform=transform) for p in parts)
        _same_classes(path, train.classes, test.classes)
        return _raw(name, train, test, train.classes)
    every = ImageFolder(str(path))
    train_idx, test_idx = stratified_split(every.targets, test_fraction, seed)
    files, targets = [Path(f) for f, _ in every.samples], every.targets
    return _list_source(name, ([files[i] for i in train_idx], [targets[i] for i in train_idx]),
                        ([files[i] for i in test_idx], [targets[i] for i in test_idx]),
                        every.classes, transform)


def _list_source(name, train, test, classes, transform) -> ImageSource:
    return _raw(name, ImageList(*train, transform), ImageList(*test, transform), classes)


def _folder_layout(name: str, path: Path) -> Layout:
    """An ImageFolder layout checked as :func:`folder_source` checks it, from the class folders'
    names alone; its first image is ImageFolder's (classes, then sorted walk, sorted files)."""
    from torchvision.datasets.folder import (
        IMG_EXTENSIONS,
        find_classes,
        has_file_allowed_extension,
        make_dataset,
    )

    parts = _folder_parts(name, path)
    classes = [find_classes(str(p))[0] for p in parts]
    if len(parts) == 2:
        _same_classes(path, *classes)

    def first_image() -> Path:
        for c in classes[0]:
            for folder, _, files in sorted(os.walk(parts[0] / c, followlinks=True)):
                for f in sorted(files):
                    if has_file_allowed_extension(f, IMG_EXTENSIONS):
                        return Path(folder) / f
        # no image at all: torchvision's error for empty class folders
        make_dataset(str(parts[0]), {c: i for i, c in enumerate(classes[0])}, IMG_EXTENSIONS)
        return _no_images(name, parts[0])

    return Layout(len(classes[0]), None, first_image)


def raw_source(name: str, path: Path) -> ImageSource:
    """The dataset under ``path`` with items (PIL image, label): its ``transform`` is None or
    the source's own PIL step (RGB conversion for the paper's datasets)."""
    import torchvision

    tv = torchvision.datasets
    if name in CIFAR_FILES:
        return cifar_source(name, path)
    if name == "fashionmnist":
        tr = tv.FashionMNIST(str(path), train=True, download=False)
        te = tv.FashionMNIST(str(path), train=False, download=False)
        return ImageSource(name, tr, te, tuple(tr.classes), (0, 0, 0))
    if name == "svhn":
        tr = tv.SVHN(str(path), split="train", download=False)
        te = tv.SVHN(str(path), split="test", download=False)
        return ImageSource(name, tr, te, tuple(str(i) for i in range(10)), (0, 0, 0))
    if name in FOLDER_DATASETS:
        return folder_source(name, path, None if name == "imagefolder" else to_rgb)
    if name == "cub":
        return cub_source(path, to_rgb)
    if name == "cars":
        return cars_source(path, to_rgb)
    if name == "aircraft":
        return aircraft_source(path, to_rgb)
    raise DataError(f"unknown local dataset {name!r}; valid: {', '.join(LOCAL_DATASETS)}")


@dataclass(frozen=True)
class Layout:
    """What a dataset's folder tells without decoding an image."""

    n_classes: int
    array_shape: tuple[int, int, int] | None  # (C, H, W) of a dataset held as arrays, or None:
    first_image: Callable[[], Path] | None  # the first image file (read as RGB), found lazily


def check_layout(name: str, path: Path) -> Layout:
    """Check the folder as :func:`raw_source` would read it, raising the readers' errors, without
    reading pixels: the files' existence, CIFAR's meta pickle, class folder names, and the paper
    layouts' annotation files (parsed by their own readers, which decode no image)."""
    if name in CIFAR_FILES:
        return Layout(len(_cifar_classes(name, path)), ARRAY_SHAPES[name], None)
    if name in ("fashionmnist", "svhn"):
        _check_torchvision_files(name, path)
        return Layout(10, ARRAY_SHAPES[name], None)
    if name in FOLDER_DATASETS:
        return _folder_layout(name, path)
    raw = raw_source(name, path)  # cub, cars, aircraft; an unknown name raises
    paths = raw.train.paths + raw.test.paths
    return Layout(len(raw.class_names), None,
                  lambda: paths[0] if paths else _no_images(name, path))


def _no_images(name: str, path: Path):
    raise DataError(f"{name}: no image files under {path}")
