"""``download``: torchvision fetches the datasets it can download into ``--data-root``, offline.

torchvision's own download function (``download_url``, as ``download_and_extract_archive`` and
SVHN call it) is replaced by one that copies an archive generated here, in the official layout,
from a local file: everything else — torchvision's dataset classes with ``download=True``, their
extraction, the suite's readers, the CLI's check and the run — is the real code. A download that
fails (as without network) must stop the CLI before any work with one line naming the offline way.
"""

from __future__ import annotations

import gzip
import os
import shutil
import socket
import tarfile
import urllib.error
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import torchvision
from test_cli import run_main
from test_local_datasets import (  # noqa: F401  (fixtures)
    TEST_PER_CLASS,
    TRAIN_PER_CLASS,
    _labels,
    _pickle,
    _pixels,
    _write_idx,
    skip_md5,
)

from benchmarks.data.datasets import DataError
from benchmarks.data.local import local_shape_and_classes
from benchmarks.data.streams import PAPER_STREAM, build_stream, stream_image_shape
from benchmarks.data.synthetic import write_paper_layouts
from results.records import find_records

VAL_FRACTION = 0.2


# ----------------------------------------------------------------------------- archives
def _tar(path: Path, folder: Path) -> Path:
    """``folder`` (and everything in it) as a gzipped tar at ``path``, named by its name."""
    with tarfile.open(path, "w:gz") as tf:
        tf.add(folder, arcname=folder.name)
    return path


def cifar10_archive(where: Path) -> Path:
    """``cifar-10-python.tar.gz`` in the official layout: ``cifar-10-batches-py/`` pickles."""
    folder = where / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    y = _labels(10, TRAIN_PER_CLASS, seed=1)
    x = _pixels((len(y), 3072), seed=2)
    for b, idx in enumerate(np.array_split(np.arange(len(y)), 5), start=1):
        _pickle(folder / f"data_batch_{b}", {"data": x[idx], "labels": y[idx].tolist()})
    ty = _labels(10, TEST_PER_CLASS, seed=3)
    _pickle(folder / "test_batch", {"data": _pixels((len(ty), 3072), seed=4),
                                    "labels": ty.tolist()})
    _pickle(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)]})
    return _tar(where / "cifar-10-python.tar.gz", folder)


def svhn_files(where: Path) -> dict[str, Path]:
    from scipy.io import savemat

    where.mkdir(parents=True)
    for fname, per_class, seed in (("train_32x32.mat", TRAIN_PER_CLASS, 13),
                                   ("test_32x32.mat", TEST_PER_CLASS, 14)):
        digits = _labels(10, per_class, seed=seed)
        y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(-1, 1)
        savemat(str(where / fname), {"X": _pixels((32, 32, 3, len(digits)), seed=seed), "y": y})
    return {f.name: f for f in where.iterdir()}


def fashionmnist_files(where: Path) -> dict[str, Path]:
    """The four gzipped idx files torchvision's FashionMNIST downloads."""
    where.mkdir(parents=True)
    files = {}
    for prefix, per_class, seed in (("train", TRAIN_PER_CLASS, 9), ("t10k", TEST_PER_CLASS, 11)):
        y = _labels(10, per_class, seed=seed).astype(np.uint8)
        for kind, array in (("images", _pixels((len(y), 28, 28), seed=seed + 1)),
                            ("labels", y)):
            raw = where / f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
            _write_idx(raw, array)
            with open(raw, "rb") as src, gzip.open(f"{raw}.gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
            files[f"{raw.name}.gz"] = Path(f"{raw}.gz")
    return files


class Server:
    """torchvision's ``download_url`` served from local files: ``files[basename of the URL]``
    is copied to ``root/filename`` unless that file is there (the real one checks its md5,
    which tiny files cannot match); every fetch is recorded in ``calls``, and with ``offline``
    it fails as urllib does without network."""

    def __init__(self, files: dict[str, Path]):
        self.files, self.calls, self.offline = files, [], False

    def __call__(self, url, root, filename=None, md5=None, max_redirect_hops=3):
        name = os.path.basename(urlparse(url).path)
        target = Path(root) / (filename or name)
        if target.is_file():
            return
        self.calls.append((url, Path(root)))
        if self.offline:
            raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))
        Path(root).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.files[name], target)


@pytest.fixture
def serve(monkeypatch, skip_md5):  # noqa: F811  (skip_md5: tiny files cannot match the md5s)
    """``serve(files)`` -> the :class:`Server` that replaces torchvision's download."""

    def install(files: dict[str, Path]) -> Server:
        server = Server(files)
        monkeypatch.setattr(torchvision.datasets.utils, "download_url", server)
        monkeypatch.setattr(torchvision.datasets.svhn, "download_url", server)
        return server

    return install


@pytest.fixture
def cifar10_server(tmp_path, serve):
    return serve({"cifar-10-python.tar.gz": cifar10_archive(tmp_path / "served")})


# ----------------------------------------------------------------------------- the library
def test_build_stream_downloads_cifar10_into_the_data_root_and_reads_it(tmp_path,
                                                                       cifar10_server):
    root = tmp_path / "data"  # does not exist yet: the download makes it
    stream = build_stream("cifar10-split2", 0, data_root=str(root), val_fraction=VAL_FRACTION,
                          download=True)
    assert [(url, where) for url, where in cifar10_server.calls] == [
        (torchvision.datasets.CIFAR10.url, root)]
    assert (root / "cifar-10-batches-py" / "data_batch_5").is_file()
    assert stream.image_shape == (3, 32, 32) and len(stream.tasks) == 2
    assert sum(len(t.test) for t in stream.tasks) == 10 * TEST_PER_CLASS
    assert sum(len(t.train) + len(t.val) for t in stream.tasks) == 10 * TRAIN_PER_CLASS
    # there and whole (torchvision's own check): nothing is downloaded again
    build_stream("cifar10-split2", 0, data_root=str(root), val_fraction=VAL_FRACTION,
                 download=True)
    assert stream_image_shape("cifar10-split2", data_root=root, download=True) == (3, 32, 32)
    assert len(cifar10_server.calls) == 1


def test_without_download_nothing_is_fetched(tmp_path, cifar10_server):
    root = tmp_path / "data"
    for check in (lambda: build_stream("cifar10-split2", 0, data_root=str(root)),
                  lambda: stream_image_shape("cifar10-split2", data_root=root)):
        with pytest.raises(DataError, match="does not exist"):
            check()
    assert not cifar10_server.calls and not root.exists()


def test_the_shape_check_downloads_first(tmp_path, cifar10_server):
    root = tmp_path / "data"
    assert stream_image_shape("cifar10-split2", data_root=root, download=True) == (3, 32, 32)
    assert len(cifar10_server.calls) == 1 and (root / "cifar-10-batches-py").is_dir()


@pytest.mark.parametrize("name, files, shape", [
    ("svhn", svhn_files, (3, 32, 32)),
    ("fashionmnist", fashionmnist_files, (1, 28, 28)),
])
def test_svhn_and_fashionmnist_are_downloaded_and_read(tmp_path, serve, name, files, shape):
    server = serve(files(tmp_path / "served"))
    root = tmp_path / "data"
    assert local_shape_and_classes(name, root, download=True) == (shape, 10)
    stream = build_stream(f"{name}-split2", 0, data_root=str(root), val_fraction=VAL_FRACTION,
                          download=True)
    assert stream.image_shape == shape
    assert sum(len(t.test) for t in stream.tasks) == 10 * TEST_PER_CLASS
    n_files = {"svhn": 2, "fashionmnist": 4}[name]
    assert len(server.calls) == n_files  # once: then they are there


def test_a_dataset_that_cannot_be_downloaded_is_still_refused(tmp_path, cifar10_server):
    with pytest.raises(DataError, match=r"does not exist: .*--download fetches only cifar10"):
        stream_image_shape("imagefolder-split2", data_root=tmp_path / "none", download=True)
    assert not cifar10_server.calls


@pytest.fixture
def paper_archives(tmp_path):
    """The paper's six in their layouts, with CIFAR-100 and FGVC-Aircraft only as the archives
    torchvision downloads (``cifar-100-python.tar.gz``, ``fgvc-aircraft-2013b.tar.gz``)."""
    generated = write_paper_layouts(tmp_path / "generated", classes=2, train=4, test=2)
    served, root = tmp_path / "served", tmp_path / "paper"
    served.mkdir()
    root.mkdir()
    files = {"cifar-100-python.tar.gz": _tar(served / "cifar-100-python.tar.gz",
                                             generated / "cifar100" / "cifar-100-python"),
             "fgvc-aircraft-2013b.tar.gz": _tar(served / "fgvc-aircraft-2013b.tar.gz",
                                                generated / "aircraft" / "fgvc-aircraft-2013b")}
    for name in ("cub", "cars", "sketches", "wikiart"):
        shutil.move(generated / name, root / name)
    return root, files


def test_the_paper_stream_downloads_cifar100_and_aircraft(paper_archives, serve):
    root, files = paper_archives
    server = serve(files)
    with pytest.raises(DataError, match="data root for 'aircraft' does not exist"):
        stream_image_shape(PAPER_STREAM, data_root=root, img_size=16)  # without download
    assert stream_image_shape(PAPER_STREAM, data_root=root, img_size=16,
                              download=True) == (3, 16, 16)
    assert sorted(os.path.basename(url) for url, _ in server.calls) == sorted(files)
    assert {where for _, where in server.calls} == {root / "cifar100", root / "aircraft"}
    stream = build_stream(PAPER_STREAM, 0, data_root=str(root), img_size=16, val_fraction=0.25,
                          download=True)
    assert [t.name for t in stream.tasks] == ["cub", "cars", "aircraft", "cifar100", "sketches",
                                              "wikiart"]
    assert len(server.calls) == 2


def test_the_paper_stream_refuses_a_missing_dataset_before_any_download(paper_archives, serve):
    root, files = paper_archives
    server = serve(files)
    shutil.rmtree(root / "wikiart")  # the last task: still checked before the downloads
    with pytest.raises(DataError, match=r"'wikiart' does not exist.*run_benchmark.py prepare "
                                        r"--dataset wikiart"):
        stream_image_shape(PAPER_STREAM, data_root=root, download=True)
    assert not server.calls


def test_a_failed_download_is_one_line_naming_the_offline_way(tmp_path, cifar10_server):
    cifar10_server.offline = True
    root = tmp_path / "data"
    with pytest.raises(DataError) as e:
        build_stream("cifar10-split2", 0, data_root=str(root), download=True)
    msg = str(e.value)
    assert "\n" not in msg and "cifar10: download into" in msg and "Name or service" in msg
    assert "cifar-10-python.tar.gz extracted" in msg and "without --download" in msg
    assert not root.exists()  # the folder it made for the download is gone again


# ----------------------------------------------------------------------------- the CLI
def _suite(tmp_path: Path) -> Path:
    suite = tmp_path / "own.yaml"
    suite.write_text(f"stream: cifar10-split2\nstrategies: [classifier]\nepochs: 1\n"
                     f"img_size: 28\nval_fraction: {VAL_FRACTION}\n")
    return suite


def test_cli_download_fills_a_missing_data_root_then_runs(tmp_path, cifar10_server):
    root, out = tmp_path / "data", tmp_path / "out"
    args = ("--suite", str(_suite(tmp_path)), "--data-root", str(root), "--out", str(out),
            "--cache", str(tmp_path / "cache"), "--quiet")
    refused = run_main(*args)
    assert refused.returncode == 2 and "does not exist" in refused.stderr
    assert not out.exists() and not cifar10_server.calls
    done = run_main(*args, "--download")
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(cifar10_server.calls) == 1  # by the CLI's check; the run found the files there
    (record,) = find_records([out])
    assert record["config"]["download"] is True
    assert (root / "cifar-10-batches-py").is_dir()
    again = run_main(*args)  # the same run without --download: same run id, already finished
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(list(out.glob("*/record.json"))) == 1


def test_cli_download_offline_fails_before_any_work_with_one_line(tmp_path, cifar10_server):
    cifar10_server.offline = True
    root, out = tmp_path / "data", tmp_path / "out"
    r = run_main("--suite", str(_suite(tmp_path)), "--data-root", str(root), "--out", str(out),
                 "--cache", str(tmp_path / "cache"), "--quiet", "--download")
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("run_benchmark.py: error: cifar10: download into")
    assert "by hand" in line and "--data-root" in line and "without --download" in line
    assert not out.exists() and not root.exists()


def test_cli_download_still_refuses_a_paper_dataset_it_cannot_fetch(tmp_path, paper_archives,
                                                                    serve):
    root, files = paper_archives
    server = serve(files)
    shutil.rmtree(root / "cub")
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"not read before the data check")
    r = run_main("--suite", "paper", "--data-root", str(root), "--pretrained", str(weights),
                 "--device", "cpu", "--out", str(tmp_path / "out"), "--download")
    assert r.returncode == 2, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert "data root for 'cub' does not exist" in line and "prepare --dataset cub" in line
    assert not server.calls and not (tmp_path / "out").exists()
