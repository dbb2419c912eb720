"""Decode once: a dataset's images as one uint8 array on disk, shared by every run of a sweep.

``cached(raw, name, split, transform, cache_dir)`` returns a :class:`CachedImages` dataset whose
items are uint8 tensors (C, S, S) read from ``<cache_dir>/<name>-<split>-<key>/images.u8`` (a
memory map), where ``raw[i]`` is ``(PIL image, label)`` and ``transform`` is the PIL part of the
preprocessing (:func:`benchmarks.data.inputs.storage_transform`). Training, evaluation and probe
features read the same array; conversion to float, augmentation and normalization happen on the
run's device (:class:`benchmarks.data.inputs.InputPipeline`).

- **Key**: sha256 of the dataset name, split, every file's path, size and mtime (or the bytes of
  an in-memory array), the labels and the transform's ``repr`` (size, interpolation, crop) — a
  changed file or preprocessing gets a new cache, never a stale one. Files are stat-ed once, not
  on every open (a stat each is slow for 10⁵ files on a cluster filesystem): the key goes into a
  source index (``<cache_dir>/.sources-<name>-<split>-<id>.json``, ``id`` the same hash without
  sizes and mtimes) with the mtime and ctime of every file's folder, and a later open reuses it
  while no folder changed (one stat per folder). A file added, removed, or renamed (also over
  another) changes the file list or its folder's times (the ctime even where ``rsync -a`` or
  ``tar`` set the mtime back); a file rewritten in place under its name changes neither:
  ``run_benchmark.py cache`` stats every file again (:func:`thorough`). In-memory arrays are
  hashed on every open.
- **Build**: every core this process may use (``workers`` processes, each decoding a contiguous
  chunk straight into the memory map; small datasets in-process), with a progress bar on a
  terminal, into a temporary folder renamed into place when complete, under an exclusive file
  lock: concurrent runs wait for one build and share it.
- **Check**: the array's sha256 is computed once, by the build (``meta.json``), and a stamp
  (``stamp.json``) records the array's size, mtime and a sampled hash (:data:`SAMPLES` chunks of
  64 KiB, first and last included). An open trusts a cache whose stamp still matches (2 MiB read,
  under a lock shared with the other readers: runs starting together do not queue); otherwise
  (and under :func:`thorough`) it takes the exclusive lock, compares the size and the whole
  array's sha256 with ``meta.json`` (tens of GB read for the paper's data), and re-stamps an
  intact cache or rebuilds a partial or corrupt one (with a message), never uses it.

Storing the transformed PIL image's bytes makes a cached item bit-identical to
``ToTensor()(transform(image))`` after ``.float().div(255)`` (tested).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from atomicio import atomic_write, file_lock

FORMAT = 1
MIN_PER_WORKER = 512  # smaller datasets decode in-process (starting workers costs more)
IMAGES, META, STAMP = "images.u8", "meta.json", "stamp.json"
SAMPLES, SAMPLE_BYTES = 32, 1 << 16  # the stamp's sampled hash reads 2 MiB whatever the size
_THOROUGH: ContextVar[bool] = ContextVar("thorough", default=False)


def targets_of(ds: Dataset) -> list[int]:
    """Integer labels of a dataset (``targets``, or ``labels`` as in torchvision's SVHN)."""
    targets = getattr(ds, "targets", None)
    if targets is None:
        targets = getattr(ds, "labels", None)  # torchvision SVHN
    if targets is None:
        raise TypeError(f"{type(ds).__name__} exposes no targets/labels")
    return [int(t) for t in targets]


def as_items(images: torch.Tensor, labels: list[int]) -> list[tuple[torch.Tensor, int]]:
    """A batch as the list of (image, label) samples that ``__getitems__`` returns: PyTorch's
    DataLoader fetches a batch with ``dataset.__getitems__(indices)`` when the dataset has it and
    collates that list as it would the items (``torch/utils/data/_utils/fetch.py``). The images
    are views of one batch tensor, which the collation stacks again."""
    return list(zip(images.unbind(0), labels, strict=True))


class CachedImages(Dataset):
    """uint8 images (N, C, S, S) memory-mapped from a built cache, plus integer labels."""

    def __init__(self, folder: Path):
        meta = json.loads((Path(folder) / META).read_text())
        self.folder, self.shape = Path(folder), tuple(meta["shape"])
        self.targets = [int(t) for t in meta["targets"]]
        self.images = np.memmap(self.folder / IMAGES, dtype=np.uint8, mode="r",
                                shape=self.shape)

    def __len__(self) -> int:
        return len(self.targets)

    def __getstate__(self) -> dict:  # worker processes reopen the map instead of copying it
        return {k: v for k, v in self.__dict__.items() if k != "images"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.images = np.memmap(self.folder / IMAGES, dtype=np.uint8, mode="r",
                                shape=self.shape)

    def __getitem__(self, i: int):
        return torch.from_numpy(np.array(self.images[i])), self.targets[i]

    def read_batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
        """uint8 images (B, C, S, S) and labels of ``indices``: one gather (a numpy fancy index)
        from the memory map, instead of one read and one tensor per image."""
        images = np.asarray(self.images[np.asarray(indices, dtype=np.int64)])
        return torch.from_numpy(images), [self.targets[i] for i in indices]

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        return as_items(*self.read_batch(indices))


@contextmanager
def thorough() -> Iterator[None]:
    """Within the block :func:`cached` stats every file and checks every cache's whole sha256,
    whatever the source index and the stamps say (``run_benchmark.py cache``)."""
    token = _THOROUGH.set(True)
    try:
        yield
    finally:
        _THOROUGH.reset(token)


def _files(raw: Dataset) -> list | None:
    """The image files of ``raw`` (None: its pixels are in memory)."""
    files = getattr(raw, "paths", None)
    if files is None and hasattr(raw, "samples"):  # torchvision ImageFolder
        files = [p for p, _ in raw.samples]
    return files


def _sources(raw: Dataset) -> bytes:
    """What identifies the raw images: files (path, size, mtime: one stat each) or in-memory
    pixels."""
    files = _files(raw)
    if files is not None:
        h = hashlib.sha256()
        for f in files:
            st = os.stat(f)
            h.update(f"{Path(f).resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return h.digest()
    data = getattr(raw, "data", None)  # torchvision CIFAR / SVHN / MNIST-style arrays
    if data is None:
        raise TypeError(f"cannot identify the images of a {type(raw).__name__} for caching")
    data = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    return hashlib.sha256(np.ascontiguousarray(data).tobytes()).digest()


def _hash(name: str, split: str, transform):
    """A sha256 begun with what the key depends on besides the files and labels."""
    return hashlib.sha256(f"image-cache v{FORMAT}|{name}|{split}|{transform!r}|".encode())


def cache_key(raw: Dataset, name: str, split: str, transform) -> str:
    """sha256 (16 hex digits) of what the cached bytes depend on (module docstring)."""
    h = _hash(name, split, transform)
    h.update(_sources(raw))
    h.update(json.dumps(targets_of(raw)).encode())
    return h.hexdigest()[:16]


def _folder_times(paths: list[str]) -> dict[str, list[int]]:
    """mtime and ctime (ns) of every folder holding one of ``paths``: one stat per folder."""
    times = {}
    for folder in sorted({os.path.dirname(p) for p in paths}):
        st = os.stat(folder)
        times[folder] = [st.st_mtime_ns, st.st_ctime_ns]
    return times


def current_key(raw: Dataset, name: str, split: str, transform, cache_dir: Path,
                full: bool = False) -> str:
    """:func:`cache_key`, taken from the source index while none of the files' folders changed
    (module docstring); ``full``: from every file's stat, recorded afresh."""
    files = _files(raw)
    if files is None:
        return cache_key(raw, name, split, transform)
    paths = [os.path.abspath(f) for f in files]  # string operations, no stat
    h = _hash(name, split, transform)
    h.update("\n".join(paths).encode())
    h.update(json.dumps(targets_of(raw)).encode())
    index = Path(cache_dir) / f".sources-{name}-{split}-{h.hexdigest()[:16]}.json"
    times = _folder_times(paths)  # before the files' stats: a change while they run is seen
    if not full:
        try:
            recorded = json.loads(index.read_text())
            if recorded["folders"] == times:
                return recorded["key"]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # none yet, or unreadable: recorded afresh below
    key = cache_key(raw, name, split, transform)
    _write_json(index, {"key": key, "folders": times})
    return key


def _write_json(path: Path, obj) -> None:
    """``obj`` as ``path``, atomically (a reader sees the old or the new file)."""
    atomic_write(path, lambda f: f.write(json.dumps(obj).encode()))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def sampled_sha256(path: Path, size: int) -> str:
    """sha256 of :data:`SAMPLES` chunks of :data:`SAMPLE_BYTES` at offsets ``k (size - chunk) /
    (SAMPLES - 1)``, k = 0 … SAMPLES - 1: the first and the last included, every byte of a file
    under 2 MiB."""
    h = hashlib.sha256()
    span = max(size - SAMPLE_BYTES, 0)
    with open(path, "rb") as f:
        for k in range(SAMPLES):
            h.update(os.pread(f.fileno(), SAMPLE_BYTES, span * k // (SAMPLES - 1)))
    return h.hexdigest()


def _stamp_of(folder: Path) -> dict:
    st = (folder / IMAGES).stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "sampled_sha256": sampled_sha256(folder / IMAGES, st.st_size)}


def stamp(folder: Path) -> None:
    """Record that ``folder``'s array, as it is now, passed the full check."""
    _write_json(folder / STAMP, _stamp_of(folder))


def stamped(folder: Path) -> bool:
    """Whether ``folder``'s array still has the size, mtime and sampled hash of its stamp."""
    try:
        return json.loads((folder / STAMP).read_text()) == _stamp_of(folder)
    except (OSError, ValueError):
        return False


# -- building -----------------------------------------------------------------------------------
_RAW = None  # the raw dataset and transform of a build worker (set once per process)


def _init_worker(raw, transform) -> None:
    global _RAW
    _RAW = (raw, transform)


def _decode(i: int, transform, raw) -> np.ndarray:
    img, _ = raw[i]
    arr = np.asarray(transform(img), dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _decode_chunk(path: str, shape: tuple, start: int, stop: int) -> int:
    raw, transform = _RAW
    out = np.memmap(path, dtype=np.uint8, mode="r+", shape=shape)
    for i in range(start, stop):
        out[i] = _decode(i, transform, raw)
    out.flush()
    return stop - start


def _build(raw: Dataset, transform, folder: Path, workers: int, label: str) -> None:
    from tqdm import tqdm

    tmp = folder.with_name(folder.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    first = _decode(0, transform, raw)
    shape = (len(raw), *first.shape)
    path = tmp / IMAGES
    np.memmap(path, dtype=np.uint8, mode="w+", shape=shape).flush()
    chunk = max(1, min(256, len(raw) // (4 * workers) or 1))
    bounds = [(s, min(s + chunk, len(raw))) for s in range(0, len(raw), chunk)]
    bar = tqdm(total=len(raw), desc=f"caching {label}", unit="img", file=sys.stderr,
               disable=None)
    if workers <= 1 or len(raw) < MIN_PER_WORKER * workers:
        _init_worker(raw, transform)
        for s, e in bounds:
            bar.update(_decode_chunk(str(path), shape, s, e))
    else:
        # fork: workers need the decoders (PIL, numpy), not a fresh interpreter importing torch
        with ProcessPoolExecutor(workers, mp_context=get_context("fork"),
                                 initializer=_init_worker, initargs=(raw, transform)) as pool:
            for n in pool.map(_decode_chunk, *zip(*[(str(path), shape, s, e)
                                                    for s, e in bounds], strict=True)):
                bar.update(n)
    bar.close()
    meta = {"format": FORMAT, "shape": list(shape), "targets": targets_of(raw),
            "sha256": file_sha256(path), "transform": repr(transform), "label": label}
    (tmp / META).write_text(json.dumps(meta))
    stamp(tmp)  # the rename below keeps the array's mtime
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def problem(folder: Path) -> str | None:
    """Why the cache in ``folder`` cannot be used (None: complete and intact): the full check,
    the whole array read."""
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError):
        return "no readable meta.json"
    if meta.get("format") != FORMAT:
        return f"format {meta.get('format')} != {FORMAT}"
    path = folder / IMAGES
    expected = int(np.prod(meta["shape"]))
    if not path.is_file() or path.stat().st_size != expected:
        return f"{IMAGES} is not {expected} bytes"
    if file_sha256(path) != meta["sha256"]:
        return f"{IMAGES} does not match its checksum"
    return None


def cached(raw: Dataset, name: str, split: str, transform, cache_dir: Path,
           workers: int | None = None) -> CachedImages:
    """The cached images of ``raw`` (built first if missing, partial or corrupt): a stamped cache
    under the shared lock, else the full check, a re-stamp or a build under the exclusive one."""
    full, cache_dir = _THOROUGH.get(), Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = current_key(raw, name, split, transform, cache_dir, full)
    folder = cache_dir / f"{name}-{split}-{key}"
    lock = cache_dir / f".{folder.name}.lock"
    if not full:
        with file_lock(lock, shared=True):
            if stamped(folder):
                return CachedImages(folder)
    with file_lock(lock):
        if not full and stamped(folder):  # checked or built by another process meanwhile
            return CachedImages(folder)
        if folder.exists():
            why = problem(folder)
            if why is None:
                stamp(folder)
                return CachedImages(folder)
            print(f"image cache {folder} is unusable ({why}): rebuilding", file=sys.stderr,
                  flush=True)
        _build(raw, transform, folder, workers or len(os.sched_getaffinity(0)),
               f"{name} {split}")
        return CachedImages(folder)
