"""The paper's datasets that no library downloads, made from the archives their publishers
distribute, into the layouts :mod:`benchmarks.data.layouts` reads (``DATA_ROOT/<name>``):

    python run_benchmark.py prepare --dataset cub --archive CUB_200_2011.tgz --data-root DIR

``cub``: ``CUB_200_2011.tgz`` (CUB-200-2011, :data:`SOURCES`), its ``CUB_200_2011/`` folder
  kept as it is -> ``DIR/cub/CUB_200_2011/{images.txt, classes.txt, image_class_labels.txt,
  train_test_split.txt, images/<class>/*.jpg, ...}`` (the official train/test split).
``cars``: Stanford Cars' four official files, each one ``--archive``: ``car_devkit.tgz``
  (``devkit/cars_meta.mat``, ``devkit/cars_train_annos.mat``, ...), ``cars_train.tgz``
  (``cars_train/*.jpg``), ``cars_test.tgz`` (``cars_test/*.jpg``) and
  ``cars_test_annos_withlabels.mat`` (the test labels, a bare ``.mat``) -> torchvision's layout
  ``DIR/cars/stanford_cars/{devkit/, cars_train/, cars_test/, cars_test_annos_withlabels.mat}``.
``sketches``: TU-Berlin's ``sketches_png.zip`` (``png/<class>/*.png``, no split) ->
  ``DIR/sketches/<class>/*.png`` (split 80/20 per class by the reader).
``wikiart``: PiggyBack's ``wikiart.zip`` (``wikiart/{train,test}/<artist>/*.jpg``, the split
  of 195 artists the MEAT paper uses) -> ``DIR/wikiart/{train,test}/<artist>/*.jpg``.

Sketches and WikiArt take any archive of image class folders, split (``.../train/<class>/*``
and ``.../test/<class>/*``) or not (``.../<class>/*``); the class count tells the paper's data
from others (the common WikiArt archive has 27 style folders, not 195 artists). Every result is
checked through the stream's own readers, and its classes counted against the paper's
(:data:`PAPER_CLASSES`): a mismatch, a missing piece or an unreadable archive is one
:class:`DataError` line naming what is missing, with nothing left behind. The dataset is
written into ``DIR/.<name>.partial-*`` and renamed to ``DIR/<name>`` only once complete and
checked, so an interrupted prepare never looks finished (the next one removes its leftovers).
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

from atomicio import LockHeld, LocksUnsupported, file_lock
from benchmarks.data.datasets import DataError
from benchmarks.data.layouts import check_layout, raw_source

PAPER_CLASSES = {"cub": 200, "cars": 196, "sketches": 250, "wikiart": 195}
TITLES = {"cub": "CUB-200-2011", "cars": "Stanford Cars", "sketches": "Sketches (TU-Berlin)",
          "wikiart": "WikiArt (PiggyBack's split)"}
# where each comes from, and the files to give as --archive
SOURCES = {
    "cub": ("https://www.vision.caltech.edu/datasets/cub_200_2011/", "CUB_200_2011.tgz"),
    "cars": ("https://ai.stanford.edu/~jkrause/cars/car_dataset.html",
             "car_devkit.tgz, cars_train.tgz, cars_test.tgz and cars_test_annos_withlabels.mat"),
    "sketches": ("https://cybertron.cg.tu-berlin.de/eitz/projects/classifysketch/",
                 "sketches_png.zip"),
    "wikiart": ("https://github.com/arunmallya/piggyback", "wikiart.zip"),
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
LOCK = ".prepare.lock"  # in the partial folder while a prepare writes it


@dataclass(frozen=True)
class Prepared:
    """What a prepare made: the dataset's folder, its classes and images."""

    name: str
    folder: Path
    n_classes: int
    n_images: int


# ----------------------------------------------------------------------------- archives
def _kind(archive: Path, name: str) -> str:
    """``tar``, ``zip`` or ``file`` (a bare ``.mat``: Stanford Cars' test labels)."""
    if not archive.is_file():
        raise DataError(f"{name}: archive not found: {archive}")
    try:
        if zipfile.is_zipfile(archive):
            return "zip"
        if tarfile.is_tarfile(archive):
            return "tar"
        with open(archive, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise DataError(f"{name}: cannot read {archive}: {e}") from e
    if name == "cars" and archive.suffix == ".mat" and head.startswith(b"MATLAB"):
        return "file"
    raise DataError(f"{name}: {archive} is not a tar or zip archive (give {SOURCES[name][1]})")


def _parts(member: str, archive: Path) -> tuple[str, ...]:
    parts = tuple(p for p in member.replace("\\", "/").split("/") if p not in ("", "."))
    if member.startswith("/") or ".." in parts:
        raise DataError(f"{archive}: unsafe member path {member!r} (outside the archive's folder)")
    return parts


def _members(archive: Path, kind: str) -> Iterator[tuple[tuple[str, ...], Callable[[], BinaryIO]]]:
    """(path inside the archive, opener) of every regular file, in the archive's order."""
    if kind == "file":
        yield (archive.name,), partial(open, archive, "rb")
    elif kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    yield _parts(info.filename, archive), lambda info=info: zf.open(info)
    else:
        with tarfile.open(archive, "r:*") as tf:
            for m in tf:  # streamed: each member is read right after its header
                if m.isfile():
                    yield _parts(m.name, archive), lambda m=m: tf.extractfile(m)


def _junk(parts: tuple[str, ...]) -> bool:
    return any(p == "__MACOSX" or p.startswith("._") or p == ".DS_Store" for p in parts)


# ----------------------------------------------------------------------------- placements
class Placer:
    """Where each archive member goes in the dataset's folder (None: left out)."""

    def place(self, parts: tuple[str, ...]) -> tuple[str, ...] | None:
        raise NotImplementedError

    def check(self, folder: Path, archives: Sequence[Path]) -> None:
        """After extraction, before the readers: the pieces the readers need are there."""


class CubPlacer(Placer):
    """Everything under ``CUB_200_2011/``, as it is (``attributes.txt`` beside it is left)."""

    def place(self, parts):
        if "CUB_200_2011" in parts[:-1]:
            return parts[parts.index("CUB_200_2011"):]
        return None

    def check(self, folder, archives):
        base = folder / "CUB_200_2011"
        missing = [f for f in ("images.txt", "classes.txt", "image_class_labels.txt",
                               "train_test_split.txt") if not (base / f).is_file()]
        if missing or not (base / "images").is_dir():
            what = ", ".join(missing + ([] if (base / "images").is_dir() else ["images/"]))
            raise DataError(f"cub: no CUB_200_2011/{{{what}}} in {_names(archives)}: give the "
                            f"official {SOURCES['cub'][1]}")


CARS_PIECES = {  # what the reader needs -> the official file that holds it
    "devkit/cars_meta.mat": "car_devkit.tgz", "devkit/cars_train_annos.mat": "car_devkit.tgz",
    "cars_train/": "cars_train.tgz", "cars_test/": "cars_test.tgz",
    "cars_test_annos_withlabels.mat": "cars_test_annos_withlabels.mat"}


class CarsPlacer(Placer):
    """The four official files into torchvision's ``stanford_cars/`` layout (any folder above
    ``devkit/``, ``cars_train/`` or ``cars_test/`` in an archive is dropped)."""

    def place(self, parts):
        name = parts[-1]
        if name == "cars_test_annos_withlabels.mat":
            return ("stanford_cars", name)
        if "devkit" in parts[:-1]:
            i = len(parts) - 1 - parts[::-1].index("devkit")
            return ("stanford_cars", "devkit", *parts[i + 1:])
        if len(parts) >= 2 and parts[-2] in ("cars_train", "cars_test"):
            return ("stanford_cars", parts[-2], name)
        return None

    def check(self, folder, archives):
        base = folder / "stanford_cars"
        missing = [p for p in CARS_PIECES if not (
            (base / p).is_dir() if p.endswith("/") else (base / p).is_file())]
        if missing:
            files = sorted({CARS_PIECES[p] for p in missing})
            raise DataError(f"cars: missing {', '.join(missing)} in {_names(archives)}: give "
                            f"{' and '.join(files)} too (each with --archive)")


class FolderPlacer(Placer):
    """Image class folders: ``.../train/<class>/<image>`` and ``.../test/<class>/<image>``
    kept split, or ``.../<class>/<image>``; every image under one folder of the archive."""

    def __init__(self, name: str):
        self.name, self.roots, self.kinds, self.loose = name, set(), set(), None

    def place(self, parts):
        if not parts[-1].lower().endswith(IMAGE_SUFFIXES):
            return None
        if len(parts) < 2:
            self.loose = self.loose or "/".join(parts)
            return None
        if len(parts) >= 3 and parts[-3] in ("train", "test"):
            self.kinds.add("split")
            self.roots.add(parts[:-3])
            return parts[-3:]
        self.kinds.add("class folders")
        self.roots.add(parts[:-2])
        return parts[-2:]

    def check(self, folder, archives):
        got = f"in {_names(archives)}"
        if not self.kinds:
            raise DataError(f"{self.name}: no images in class folders {got}: give "
                            f"{SOURCES[self.name][1]}")
        if len(self.kinds) > 1:
            raise DataError(f"{self.name}: {got} some images are in train/ and test/ class "
                            "folders and some in bare class folders: give one layout")
        if len(self.roots) > 1:
            a, b = sorted("/".join(r) or "." for r in self.roots)[:2]
            raise DataError(f"{self.name}: {got} the class folders lie in several folders "
                            f"({a}, {b}): give an archive with one")
        if self.loose:
            raise DataError(f"{self.name}: image {self.loose} {got} is in no class folder")


def _placer(name: str) -> Placer:
    return {"cub": CubPlacer, "cars": CarsPlacer}.get(name, lambda: FolderPlacer(name))()


def _names(archives: Sequence[Path]) -> str:
    return ", ".join(a.name for a in archives)


def _extract(archives: Sequence[Path], kinds: Sequence[str], placer: Placer, folder: Path,
             say: Callable[[str], None]) -> int:
    """Every member the placer keeps, copied into ``folder``; returns how many."""
    n = 0
    for archive, kind in zip(archives, kinds, strict=True):
        say(f"reading {archive}")
        try:
            for parts, opener in _members(archive, kind):
                where = None if _junk(parts) else placer.place(parts)
                if where is None:
                    continue
                target = folder.joinpath(*where)
                target.parent.mkdir(parents=True, exist_ok=True)
                with opener() as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                os.chmod(target, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
                n += 1
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
            cause = " ".join(str(e).split())
            raise DataError(f"extracting {archive} failed ({type(e).__name__}: {cause}): an "
                            "interrupted download (download it again) or a full disk?") from e
    return n


# ----------------------------------------------------------------------------- checks
def _verify(name: str, folder: Path, classes: int) -> tuple[int, int]:
    """Read ``folder`` as the stream reads the dataset; (classes, images) if it has ``classes``
    classes, each with training and test images, and every annotated image is there."""
    source = SOURCES[name][1]
    if name in ("sketches", "wikiart"):
        layout = check_layout(name, folder)  # class folders, train/ and test/ alike
        n = layout.n_classes
        images = sum(1 for p in folder.rglob("*") if p.name.lower().endswith(IMAGE_SUFFIXES))
    else:
        raw = raw_source(name, folder)
        paths = raw.train.paths + raw.test.paths
        gone = [p for p in paths if not p.is_file()]
        if gone:
            raise DataError(f"{name}: {len(gone)} of the {len(paths)} annotated images are not in "
                            f"the archives (first: {gone[0].relative_to(folder)}): give all of "
                            f"{source}")
        n, images = len(raw.class_names), len(paths)
        present = [set(raw.train.targets), set(raw.test.targets)]
        lacking = [c for i, c in enumerate(raw.class_names)
                   if not all(i in p for p in present)]
        if n == classes and lacking:
            raise DataError(f"{name}: no training or no test images of {len(lacking)} classes "
                            f"({', '.join(lacking[:3])}{', ...' if len(lacking) > 3 else ''}): "
                            f"give all of {source}")
    if n != classes:
        raise DataError(f"{name}: the archives give {n} classes, the paper's {TITLES[name]} has "
                        f"{classes}: give {source} from {SOURCES[name][0]}")
    return n, images


def _clear_leftovers(data_root: Path, name: str) -> None:
    """Remove the partial folders of prepares that were interrupted (their lock is free)."""
    for old in data_root.glob(f".{name}.partial-*"):
        try:
            with file_lock(old / LOCK, blocking=False):
                shutil.rmtree(old)
        except (LockHeld, FileNotFoundError):
            continue  # another prepare is writing it, or it went


def prepare(name: str, archives: Sequence[str | Path], data_root: str | Path,
            classes: int | None = None, say: Callable[[str], None] = lambda line: None
            ) -> Prepared:
    """Make ``data_root/name`` from ``archives`` (module docstring); ``classes``: the class
    count required (default: the paper's). Raises :class:`DataError` (one line) before writing
    anything for a bad name, a missing or unknown archive or an existing dataset folder, and
    after extraction, removing what it wrote, for a missing piece or a wrong class count."""
    if name not in PAPER_CLASSES:
        raise DataError(f"unknown dataset {name!r} to prepare; valid: {', '.join(PAPER_CLASSES)}"
                        " (cifar100 and aircraft: --download)")
    classes = PAPER_CLASSES[name] if classes is None else classes
    archives = [Path(a).expanduser() for a in archives]
    if not archives:
        raise DataError(f"{name}: give its archive(s): {SOURCES[name][1]}")
    kinds = [_kind(a, name) for a in archives]
    data_root = Path(data_root).expanduser()
    target = data_root / name
    if data_root.exists() and not data_root.is_dir():
        raise DataError(f"--data-root {data_root} is not a folder")
    if target.exists():
        raise DataError(f"{target} already exists (a prepare renames its folder there only when "
                        f"complete): remove it to prepare {name} again")
    created = not data_root.exists()
    data_root.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=data_root, prefix=f".{name}.partial-"))
    try:
        with file_lock(partial / LOCK):  # held while writing: not a leftover to clear
            _clear_leftovers(data_root, name)
            placer = _placer(name)
            if not _extract(archives, kinds, placer, partial, say):
                raise DataError(f"{name}: nothing of {_names(archives)} belongs to {TITLES[name]}"
                                f": give {SOURCES[name][1]}")
            placer.check(partial, archives)
            say("checking it as the stream reads it")
            try:
                n, images = _verify(name, partial, classes)
            except DataError as e:
                raise DataError(str(e).replace(str(partial), str(target))) from e
            except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
                msg = " ".join(str(e).replace(str(partial), str(target)).split())
                raise DataError(f"{name}: not readable as {TITLES[name]} ({msg}): give "
                                f"{SOURCES[name][1]}") from e
            partial.chmod(0o755)  # mkdtemp's 0700 would hide the data from other users
            try:
                os.rename(partial, target)
            except OSError as e:  # another prepare of the same dataset finished first
                raise DataError(f"{target} cannot be made ({e.strerror}): remove it to "
                                f"prepare {name} again") from e
        (target / LOCK).unlink(missing_ok=True)
    except BaseException as e:
        shutil.rmtree(partial, ignore_errors=True)
        if created and not any(data_root.iterdir()):
            data_root.rmdir()
        if isinstance(e, LocksUnsupported):  # the filesystem refuses flock: one line, the fix
            raise DataError(str(e)) from e
        raise
    return Prepared(name, target, n, images)
