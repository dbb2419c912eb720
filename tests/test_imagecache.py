"""The image cache's opens (``benchmarks.data.imagecache``): the whole sha256 once, after a build
and under ``run_benchmark.py cache``, a stamp afterwards; the source index instead of a stat per
file; a lock shared by readers."""

from __future__ import annotations

import os

import pytest
from torchvision import transforms as T
from torchvision.datasets import ImageFolder

from atomicio import LockHeld, file_lock
from benchmarks.data import imagecache
from benchmarks.data.synthetic import smooth_image

RESIZE = T.Resize((16, 16))


@pytest.fixture
def root(tmp_path):
    """An ImageFolder tree: two class folders of three PNGs each."""
    for c in range(2):
        folder = tmp_path / "data" / f"c{c}"
        folder.mkdir(parents=True)
        for i in range(3):
            smooth_image((30 + 5 * i, 20 + 5 * c), seed=10 * c + i).save(folder / f"{i}.png")
    return tmp_path / "data"


def raw_of(root):
    return ImageFolder(str(root))  # PIL items, as the cache reads them


def open_cache(root, cache):
    return imagecache.cached(raw_of(root), "imagefolder", "train", RESIZE, cache, workers=1)


def forbid(monkeypatch, name):
    def refuse(*args, **kwargs):
        raise AssertionError(f"called {name}")

    monkeypatch.setattr(imagecache, name, refuse)


def count(monkeypatch, name) -> list:
    calls, real = [], getattr(imagecache, name)
    monkeypatch.setattr(imagecache, name, lambda *a, **k: calls.append(a) or real(*a, **k))
    return calls


def set_mtime(path, delta_ns):
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + delta_ns))


def test_a_fresh_open_reads_neither_the_whole_array_nor_every_file(root, tmp_path, monkeypatch):
    folder = open_cache(root, tmp_path / "cache").folder
    raw = raw_of(root)
    files = {os.path.abspath(p) for p, _ in raw.samples}
    forbid(monkeypatch, "file_sha256")
    forbid(monkeypatch, "_build")
    stats = []
    for name in ("stat", "lstat"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda p, *a, real=real, **k: stats.append(
            p if isinstance(p, int) else os.path.abspath(p)) or real(p, *a, **k))
    again = imagecache.cached(raw, "imagefolder", "train", RESIZE, tmp_path / "cache")
    assert again.folder == folder and len(again) == 6
    assert stats and not files & set(stats)  # the class folders and the cache, no image file


def test_a_changed_size_or_mtime_is_checked_in_full(root, tmp_path, monkeypatch, capsys):
    """An intact array whose mtime changed is re-stamped after one full check; a corrupt or
    truncated one is rebuilt; a flipped first byte with size and mtime restored is in the
    sampled hash."""
    images = open_cache(root, tmp_path / "cache").folder / imagecache.IMAGES
    reference = images.read_bytes()
    hashes = count(monkeypatch, "file_sha256")
    set_mtime(images, 10**9)
    open_cache(root, tmp_path / "cache")
    open_cache(root, tmp_path / "cache")  # re-stamped: trusted again
    assert len(hashes) == 1 and "rebuilding" not in capsys.readouterr().err
    data = bytearray(reference)
    data[len(data) // 3] ^= 0xFF
    images.write_bytes(bytes(data))
    set_mtime(images, 10**9)  # same size, another mtime
    open_cache(root, tmp_path / "cache")
    assert "does not match its checksum): rebuilding" in capsys.readouterr().err
    assert images.read_bytes() == reference
    images.write_bytes(reference[:-10])  # another size
    open_cache(root, tmp_path / "cache")
    assert f"{imagecache.IMAGES} is not" in capsys.readouterr().err
    assert images.read_bytes() == reference
    data = bytearray(reference)
    data[0] ^= 0xFF
    st = os.stat(images)
    images.write_bytes(bytes(data))
    os.utime(images, ns=(st.st_atime_ns, st.st_mtime_ns))  # size and mtime as stamped
    open_cache(root, tmp_path / "cache")
    assert "rebuilding" in capsys.readouterr().err and images.read_bytes() == reference


def test_the_cache_command_restats_every_file_and_hashes_in_full(root, tmp_path, monkeypatch):
    """A file rewritten in place keeps its folder's times: an open keeps the recorded key (the
    module's rule), :func:`~benchmarks.data.imagecache.thorough` finds the new one."""
    first = open_cache(root, tmp_path / "cache").folder
    path = raw_of(root).samples[0][0]
    with open(path, "r+b") as f:  # in place: same name, same inode
        smooth_image((33, 21), seed=99).save(f, format="PNG")
        f.truncate()
    assert open_cache(root, tmp_path / "cache").folder == first
    with imagecache.thorough():
        second = open_cache(root, tmp_path / "cache").folder
    assert second != first
    assert open_cache(root, tmp_path / "cache").folder == second  # the index was updated
    hashes = count(monkeypatch, "file_sha256")
    with imagecache.thorough():
        open_cache(root, tmp_path / "cache")
    assert len(hashes) == 1  # an intact, stamped cache checked in full all the same


def test_a_changed_class_folder_gives_a_new_key(root, tmp_path):
    first = open_cache(root, tmp_path / "cache").folder
    folder = root / "c1"
    smooth_image((25, 25), seed=7).save(folder / "new.png")  # a new file: a new file list
    second = open_cache(root, tmp_path / "cache").folder
    assert second != first
    st = os.stat(folder)
    smooth_image((26, 26), seed=8).save(folder / "tmp.png")  # one replaced by a rename:
    os.replace(folder / "tmp.png", folder / "0.png")
    os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime set back, as rsync -a does
    third = open_cache(root, tmp_path / "cache").folder  # the same list, the folder's ctime
    assert third not in (first, second)
    assert third.name.endswith(imagecache.cache_key(raw_of(root), "imagefolder", "train",
                                                    RESIZE))


def test_shared_locks_admit_each_other_and_exclude_a_writer(tmp_path):
    lock = tmp_path / ".lock"
    with (file_lock(lock, shared=True), file_lock(lock, blocking=False, shared=True),
          pytest.raises(LockHeld), file_lock(lock, blocking=False)):
        pass  # two readers at once; a writer waits for them
    with file_lock(lock), pytest.raises(LockHeld), file_lock(lock, blocking=False, shared=True):
        pass


def test_readers_share_the_lock(root, tmp_path, monkeypatch):
    """A fresh open takes the shared lock only: it opens while another reader holds it."""
    cache = tmp_path / "cache"
    folder = open_cache(root, cache).folder
    kinds = []

    def no_wait(path, shared=False):  # a lock that cannot be had fails instead of waiting
        kinds.append(shared)
        return file_lock(path, blocking=False, shared=shared)

    monkeypatch.setattr(imagecache, "file_lock", no_wait)
    with file_lock(cache / f".{folder.name}.lock", shared=True):
        assert open_cache(root, cache).folder == folder
    assert kinds == [True]
