"""Local datasets as image sources: :func:`local_source` reads one from its folder (layouts and
readers: :mod:`benchmarks.data.layouts`) and decodes it through the storage part of a
preprocessing, into the image cache or on every access; :func:`local_shape_and_classes` tells
what it would give from the folder's layout alone. With ``download``, both first let torchvision
fetch a dataset it can download into its folder (:func:`benchmarks.data.download.fetch`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmarks.data.datasets import DataError, ImageSource
from benchmarks.data.download import DOWNLOADABLE, fetch
from benchmarks.data.imagecache import cached
from benchmarks.data.inputs import storage_transform
from benchmarks.data.layouts import check_layout, raw_source
from benchmarks.data.preprocess import NONE

# the paper's datasets no library downloads: made from their official archives
PREPARED = ("cub", "cars", "sketches", "wikiart")


def _require_root(root: str | Path | None, dataset: str, download: bool = False) -> Path:
    """The dataset's folder; a missing one is refused unless ``download`` will fill it."""
    if root is None:
        raise DataError(f"dataset {dataset!r} is read from a local folder: give --data-root PATH")
    path = Path(root).expanduser()
    if download and dataset in DOWNLOADABLE:
        if path.exists() and not path.is_dir():
            raise DataError(f"data root for {dataset!r} is not a folder: {path}")
        return path
    if not path.is_dir():
        hints = []
        if download:
            hints.append(f"--download fetches only {', '.join(DOWNLOADABLE)}")
        if dataset in PREPARED:
            hints.append(f"make it from the official archive with `run_benchmark.py prepare "
                         f"--dataset {dataset}` (docs/paper.md)")
        raise DataError(f"data root for {dataset!r} does not exist: {path}"
                        + (f" ({'; '.join(hints)})" if hints else ""))
    return path


def _fetched(name: str, root: str | Path | None, download: bool) -> Path:
    """The dataset's folder, after torchvision's download into it with ``download``."""
    path = _require_root(root, name, download)
    if download:
        fetch(name, path)
    return path


@contextmanager
def _reading(name: str, path: Path) -> Iterator[None]:
    """A reader's failure as a :class:`DataError` naming the dataset and its folder."""
    try:
        yield
    except DataError:
        raise
    except (RuntimeError, OSError, ValueError, TypeError, AssertionError, KeyError) as e:
        # torchvision: "Dataset not found or corrupted", or a truncated/corrupt file
        raise DataError(f"{name} not found or unreadable under {path}: {e}") from e


def local_source(name: str, root: str | Path | None, img_size: int | None = None,
                 preprocess: dict | None = None, cache_dir: str | Path | None = None,
                 download: bool = False) -> ImageSource:
    """A dataset read from ``root``; with ``download``, first fetched there by torchvision if it
    can download it (:data:`benchmarks.data.download.DOWNLOADABLE`; the others are read as they
    are).

    Images go through the storage part of ``preprocess`` (:func:`benchmarks.data.inputs.
    storage_transform`; default: squash-resize to ``img_size``, nothing without one). With
    ``cache_dir`` and an ``img_size``, every image is decoded once into a uint8 cache there
    (:mod:`benchmarks.data.imagecache`) and items are uint8 tensors; otherwise items are float
    tensors in [0, 1] decoded on every access, as ``ToTensor`` gives them.
    """
    path = _fetched(name, root, download)
    with _reading(name, path):
        raw = raw_source(name, path)
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


def local_shape_and_classes(name: str, root: str | Path | None, img_size: int | None = None,
                            check_sizes: bool = False, download: bool = False
                            ) -> tuple[tuple[int, int, int], int]:
    """(image shape (C, H, W), number of classes) of ``local_source(name, root, img_size)``,
    with its :class:`DataError` for an unknown name, a missing root, data or annotation file, or
    missing or mismatched class folders — without decoding an image
    (:func:`benchmarks.data.layouts.check_layout`). Without ``img_size`` one image header gives
    the size (the loader requires one size for all); ``check_sizes`` reads every header, as the
    loader does, for its mixed-sizes error. With ``download`` the dataset is first downloaded,
    as :func:`local_source` would (the one step here that reads more than the layout)."""
    path = _fetched(name, root, download)
    with _reading(name, path):
        layout = check_layout(name, path)
        if layout.array_shape is not None:
            c, h, w = layout.array_shape
        else:
            c = 3  # every file reader converts to RGB
            if not img_size:
                if check_sizes:
                    check_one_size(raw_source(name, path))
                from PIL import Image

                with Image.open(layout.first_image()) as img:
                    w, h = img.size
    return (c, img_size, img_size) if img_size else (c, h, w), layout.n_classes
