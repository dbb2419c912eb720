"""Local datasets read with torchvision's real loaders from tiny files in the real formats.

Each fixture writes a few images per class into ``tmp_path`` in the on-disk layout torchvision
expects (CIFAR pickles, FashionMNIST idx files, SVHN .mat files, an ImageFolder tree of PNGs);
the tests then load them through :func:`benchmarks.data.local.local_source` and
:func:`benchmarks.data.streams.build_stream`, without mocking the loaders themselves.
"""

from __future__ import annotations

import math
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from test_cli import run_main
from torchvision.datasets.utils import check_integrity

from benchmarks.data.datasets import DataError, ImageSource, RelabeledSubset
from benchmarks.data.imagecache import targets_of
from benchmarks.data.local import local_source
from benchmarks.data.streams import build_stream
from results.records import find_records

# Every class gets TRAIN_PER_CLASS training images: with val_fraction=0.2, sklearn's stratified
# split of a 5-class (cifar10/svhn/fashionmnist) or 50-class (cifar100) task needs at least one
# validation image per class, i.e. ceil(0.2 * n_classes * TRAIN_PER_CLASS) >= n_classes.
TRAIN_PER_CLASS = 5
TEST_PER_CLASS = 2
VAL_FRACTION = 0.2

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"]


def _labels(n_classes: int, per_class: int, seed: int) -> np.ndarray:
    """``per_class`` copies of every class id, in a seeded shuffled order."""
    labels = np.repeat(np.arange(n_classes), per_class)
    return np.random.RandomState(seed).permutation(labels)


def _pixels(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Random uint8 pixels that include both extremes (0 and 255)."""
    x = np.random.RandomState(seed).randint(0, 256, size=shape, dtype=np.uint8)
    flat = x.reshape(-1)
    flat[0], flat[-1] = 0, 255
    return x


def _exists_only(fpath, md5=None) -> bool:
    # torchvision compares the md5 sums of the real CIFAR/SVHN files, which tiny synthetic files
    # cannot match. Replacing the module-level ``check_integrity`` (used by CIFAR's
    # ``_check_integrity`` and ``_load_meta`` and by SVHN's ``_check_integrity``) with an
    # existence-only check keeps every other part of the real loader: missing files still fail.
    return check_integrity(fpath)


@pytest.fixture
def skip_md5(monkeypatch):
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", _exists_only)
    monkeypatch.setattr(torchvision.datasets.svhn, "check_integrity", _exists_only)


# ----------------------------------------------------------------------------- file writers
def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f)


@pytest.fixture
def cifar10_root(tmp_path, skip_md5):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    train_y = _labels(10, TRAIN_PER_CLASS, seed=1)
    train_x = _pixels((len(train_y), 3072), seed=2)
    # Five batches of 10 images each, as data_batch_1..5 (CIFAR's own keys after latin1 loading).
    for b, idx in enumerate(np.array_split(np.arange(len(train_y)), 5), start=1):
        _pickle(folder / f"data_batch_{b}",
                {"batch_label": f"training batch {b} of 5", "data": train_x[idx],
                 "labels": train_y[idx].tolist()})
    test_y = _labels(10, TEST_PER_CLASS, seed=3)
    test_x = _pixels((len(test_y), 3072), seed=4)
    _pickle(folder / "test_batch",
            {"batch_label": "testing batch 1 of 1", "data": test_x, "labels": test_y.tolist()})
    _pickle(folder / "batches.meta",
            {"label_names": CIFAR10_NAMES, "num_cases_per_batch": 10, "num_vis": 3072})
    return tmp_path, (train_x, train_y), (test_x, test_y)


@pytest.fixture
def cifar100_root(tmp_path, skip_md5):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    names = [f"fine{i:02d}" for i in range(100)]
    train_y = _labels(100, TRAIN_PER_CLASS, seed=5)
    train_x = _pixels((len(train_y), 3072), seed=6)
    test_y = _labels(100, TEST_PER_CLASS, seed=7)
    test_x = _pixels((len(test_y), 3072), seed=8)
    for fname, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        _pickle(folder / fname, {"data": x, "fine_labels": y.tolist(),
                                 "coarse_labels": (y // 5).tolist()})
    _pickle(folder / "meta", {"fine_label_names": names,
                              "coarse_label_names": [f"coarse{i:02d}" for i in range(20)]})
    return tmp_path, (train_x, train_y), (test_x, test_y)


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An (uncompressed) idx file: magic 0x0000 08 <ndim> (uint8), big-endian sizes, data."""
    assert array.dtype == np.uint8
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.tobytes())


@pytest.fixture
def fashionmnist_root(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    train_y = _labels(10, TRAIN_PER_CLASS, seed=9).astype(np.uint8)
    train_x = _pixels((len(train_y), 28, 28), seed=10)
    test_y = _labels(10, TEST_PER_CLASS, seed=11).astype(np.uint8)
    test_x = _pixels((len(test_y), 28, 28), seed=12)
    _write_idx(raw / "train-images-idx3-ubyte", train_x)
    _write_idx(raw / "train-labels-idx1-ubyte", train_y)
    _write_idx(raw / "t10k-images-idx3-ubyte", test_x)
    _write_idx(raw / "t10k-labels-idx1-ubyte", test_y)
    return tmp_path, (train_x, train_y), (test_x, test_y)


@pytest.fixture
def svhn_root(tmp_path, skip_md5):
    from scipy.io import savemat

    parts = []
    for fname, per_class, seed in (("train_32x32.mat", TRAIN_PER_CLASS, 13),
                                   ("test_32x32.mat", TEST_PER_CLASS, 14)):
        digits = _labels(10, per_class, seed=seed)
        x = _pixels((32, 32, 3, len(digits)), seed=seed + 100)  # H, W, C, N as in SVHN
        y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(-1, 1)  # digit 0 -> 10
        savemat(str(tmp_path / fname), {"X": x, "y": y})
        parts.append((x, digits))
    return tmp_path, parts[0], parts[1]


IMAGEFOLDER_CLASSES = {"cat": (255, 0, 0), "dog": (0, 255, 0), "fox": (0, 0, 255),
                       "owl": (255, 255, 255)}


@pytest.fixture
def imagefolder_root(tmp_path):
    """ROOT/{train,test}/<class>/*.png, 10x12 solid-colour images (one colour per class)."""
    for part, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        for cls, rgb in IMAGEFOLDER_CLASSES.items():
            folder = tmp_path / part / cls
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (12, 10), rgb).save(folder / f"{cls}_{i}.png")
    return tmp_path


# ----------------------------------------------------------------------------- checks
def _source_index(ds, i: int) -> int:
    """Index in the underlying torchvision dataset of sample ``i`` of nested subsets."""
    while isinstance(ds, RelabeledSubset):
        ds, i = ds.source, ds.indices[i]
    return i


def _check_source(src: ImageSource, name: str, shape, n_classes: int, train_y, test_y) -> None:
    assert isinstance(src, ImageSource)
    assert src.name == name
    assert src.image_shape == shape
    assert len(src.class_names) == n_classes == len(set(src.class_names))
    assert all(isinstance(c, str) for c in src.class_names)
    assert len(src.train) == len(train_y)
    assert len(src.test) == len(test_y)
    assert targets_of(src.train) == [int(y) for y in train_y]
    assert targets_of(src.test) == [int(y) for y in test_y]
    for part in (src.train, src.test):
        for i in (0, len(part) - 1):
            x, y = part[i]
            assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
            assert tuple(x.shape) == shape
            assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
            assert int(y) == targets_of(part)[i]
    # The fixtures put a 0 first and a 255 last, so both ends of [0, 1] are reached.
    assert float(src.train[0][0].min()) == 0.0
    assert float(src.train[len(src.train) - 1][0].max()) == 1.0


def _check_split2(name: str, root: Path, src: ImageSource, img_size: int | None = None) -> None:
    def build():
        return build_stream(f"{name}-split2", seed=0, data_root=str(root),
                            val_fraction=VAL_FRACTION, img_size=img_size)

    stream = build()
    assert stream.name == f"{name}-split2"
    assert stream.base is None
    assert stream.image_shape == src.image_shape
    assert len(stream.tasks) == 2
    a, b = stream.tasks
    assert not set(a.classes) & set(b.classes)
    assert sorted(a.classes + b.classes) == sorted(src.class_names)
    assert abs(a.n_classes - b.n_classes) <= 1

    train_targets, test_targets = targets_of(src.train), targets_of(src.test)
    for task in stream.tasks:
        k = task.n_classes
        src_ids = {src.class_names.index(c) for c in task.classes}
        for part in (task.train, task.val, task.test):
            labels = targets_of(part)
            assert set(labels) == set(range(k))  # every class present, ids 0..k-1
            for i, y in enumerate(labels):  # each label names the source sample's class
                assert task.classes[y] == src.class_names[
                    (test_targets if part is task.test else train_targets)[
                        _source_index(part, i)]]
            x, y = part[0]
            assert tuple(x.shape) == src.image_shape
            assert y == labels[0]
            assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0

        src_train = {i for i, y in enumerate(train_targets) if y in src_ids}
        tr = [_source_index(task.train, i) for i in range(len(task.train))]
        va = [_source_index(task.val, i) for i in range(len(task.val))]
        te = [_source_index(task.test, i) for i in range(len(task.test))]
        assert len(set(tr)) == len(tr) and len(set(va)) == len(va)
        assert not set(tr) & set(va)  # validation held out of training
        assert set(tr) | set(va) == src_train
        assert len(task.val) == math.ceil(VAL_FRACTION * len(src_train))  # sklearn's rounding
        assert sorted(te) == [i for i, y in enumerate(test_targets) if y in src_ids]

    assert [t["n_train"] + t["n_val"] for t in stream.describe()] == [
        len(a.train) + len(a.val), len(b.train) + len(b.val)]

    again = build()  # same seed, same stream
    assert again.describe() == stream.describe()
    assert [_source_index(again.tasks[0].val, i) for i in range(len(again.tasks[0].val))] == [
        _source_index(a.val, i) for i in range(len(a.val))]


# ----------------------------------------------------------------------------- tests
def test_cifar10_source(cifar10_root):
    root, (train_x, train_y), (test_x, test_y) = cifar10_root
    src = local_source("cifar10", root)
    _check_source(src, "cifar10", (3, 32, 32), 10, train_y, test_y)
    assert list(src.class_names) == CIFAR10_NAMES
    # CIFAR rows are channel-major (R plane, G plane, B plane), read back exactly / 255.
    for i in (0, 17, len(train_y) - 1):
        expect = torch.from_numpy(train_x[i].reshape(3, 32, 32)).float() / 255
        torch.testing.assert_close(src.train[i][0], expect)
    torch.testing.assert_close(
        src.test[3][0], torch.from_numpy(test_x[3].reshape(3, 32, 32)).float() / 255)


def test_cifar10_split2_stream(cifar10_root):
    root = cifar10_root[0]
    _check_split2("cifar10", root, local_source("cifar10", root))


def test_cifar100_source_and_split2_stream(cifar100_root):
    root, (train_x, train_y), (_, test_y) = cifar100_root
    src = local_source("cifar100", root)
    _check_source(src, "cifar100", (3, 32, 32), 100, train_y, test_y)
    assert src.class_names == tuple(f"fine{i:02d}" for i in range(100))
    torch.testing.assert_close(
        src.train[42][0], torch.from_numpy(train_x[42].reshape(3, 32, 32)).float() / 255)
    _check_split2("cifar100", root, src)


def test_fashionmnist_source(fashionmnist_root):
    root, (train_x, train_y), (test_x, test_y) = fashionmnist_root
    src = local_source("fashionmnist", root)
    _check_source(src, "fashionmnist", (1, 28, 28), 10, train_y, test_y)
    assert list(src.class_names) == torchvision.datasets.FashionMNIST.classes
    torch.testing.assert_close(src.train[7][0], torch.from_numpy(train_x[7]).float()[None] / 255)
    torch.testing.assert_close(src.test[5][0], torch.from_numpy(test_x[5]).float()[None] / 255)


def test_fashionmnist_split2_stream(fashionmnist_root):
    root = fashionmnist_root[0]
    _check_split2("fashionmnist", root, local_source("fashionmnist", root))


def test_svhn_source(svhn_root):
    root, (train_x, train_digits), (test_x, test_digits) = svhn_root
    src = local_source("svhn", root)
    # Label 10 in the .mat file is digit 0: labels come back as digits 0..9.
    _check_source(src, "svhn", (3, 32, 32), 10, train_digits, test_digits)
    assert src.class_names == tuple(str(d) for d in range(10))
    for i in (0, 11, len(train_digits) - 1):  # X is (H, W, C, N): image i is X[..., i]
        expect = torch.from_numpy(train_x[..., i]).permute(2, 0, 1).float() / 255
        torch.testing.assert_close(src.train[i][0], expect)
    expect = torch.from_numpy(test_x[..., 4]).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(src.test[4][0], expect)


def test_svhn_split2_stream(svhn_root):
    root = svhn_root[0]
    _check_split2("svhn", root, local_source("svhn", root))


def _imagefolder_labels(per_class: int) -> list[int]:
    return [c for c in range(len(IMAGEFOLDER_CLASSES)) for _ in range(per_class)]


def test_imagefolder_source_resized(imagefolder_root):
    src = local_source("imagefolder", imagefolder_root, img_size=16)
    _check_source(src, "imagefolder", (3, 16, 16), 4, _imagefolder_labels(TRAIN_PER_CLASS),
                  _imagefolder_labels(TEST_PER_CLASS))
    assert list(src.class_names) == sorted(IMAGEFOLDER_CLASSES)
    for part in (src.train, src.test):
        for i in range(len(part)):
            x, y = part[i]
            rgb = IMAGEFOLDER_CLASSES[src.class_names[y]]
            expect = torch.tensor(rgb, dtype=torch.float32).div(255).view(3, 1, 1).expand(3, 16, 16)
            torch.testing.assert_close(x, expect, atol=1 / 255, rtol=0)


def test_imagefolder_source_native_size(imagefolder_root):
    src = local_source("imagefolder", imagefolder_root)  # no img_size: PNGs are 12 wide, 10 high
    assert src.image_shape == (3, 10, 12)
    assert tuple(src.test[0][0].shape) == (3, 10, 12)


def test_imagefolder_split2_stream(imagefolder_root):
    src = local_source("imagefolder", imagefolder_root, img_size=16)
    _check_split2("imagefolder", imagefolder_root, src, img_size=16)


def test_generated_digit_folder_holds_the_bundled_digits(tmp_path):
    """``python -m benchmarks.data.synthetic DIR --digits``: the README's own-data check reads the
    bundled digits back, pixel for pixel, as an image folder."""
    from benchmarks.data.datasets import mnist5k
    from benchmarks.data.synthetic import DIGIT_NAMES, write_digit_folder

    write_digit_folder(tmp_path, classes=3, train=4, test=2)
    src = local_source("imagefolder", tmp_path)
    assert src.class_names == tuple(sorted(DIGIT_NAMES[:3]))
    assert (len(src.train), len(src.test)) == (12, 6)
    digits = mnist5k(seed=0).train
    first_zero = digits.images[digits.targets.index(0)]
    x, _ = src.train[src.train.targets.index(src.class_names.index("zero"))]
    assert x.shape == (3, 28, 28)  # RGB copies of the grey digit, read back as torchvision does
    assert torch.equal(x[0], (first_zero[0] * 255).round().byte().float().div(255))


# ----------------------------------------------------------------------------- error paths
@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "fashionmnist", "imagefolder"])
def test_missing_root_names_the_path(tmp_path, name):
    missing = tmp_path / "no" / "such" / "folder"
    with pytest.raises(DataError) as e:
        local_source(name, missing)
    assert str(missing) in str(e.value)
    with pytest.raises(DataError) as e:
        build_stream(f"{name}-split2", seed=0, data_root=str(missing))
    assert str(missing) in str(e.value)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "fashionmnist", "imagefolder"])
def test_no_data_root_asks_for_one(name):
    with pytest.raises(DataError, match="--data-root"):
        build_stream(f"{name}-split2", seed=0, data_root=None)
    with pytest.raises(DataError, match="--data-root"):
        local_source(name, None)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "fashionmnist"])
def test_empty_root_is_a_data_error(tmp_path, name):
    # The folder exists but holds no dataset files: torchvision's RuntimeError becomes DataError.
    with pytest.raises(DataError, match="not found or unreadable under") as e:
        local_source(name, tmp_path)
    assert str(tmp_path) in str(e.value)


def test_cifar_missing_batch_is_a_data_error(cifar10_root):
    root = cifar10_root[0]
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="not found or unreadable under"):
        local_source("cifar10", root)


def test_imagefolder_without_test_folder(tmp_path):
    folder = tmp_path / "train" / "cat"
    folder.mkdir(parents=True)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(folder / "a.png")
    with pytest.raises(DataError, match="test/") as e:
        local_source("imagefolder", tmp_path, img_size=8)
    assert str(tmp_path) in str(e.value)


def test_imagefolder_class_mismatch(imagefolder_root):
    extra = imagefolder_root / "train" / "yak"
    extra.mkdir()
    Image.new("RGB", (12, 10), (9, 9, 9)).save(extra / "yak_0.png")
    with pytest.raises(DataError, match=r"class folders differ .*only in train/: \['yak'\]; "
                                        r"only in test/: none"):
        local_source("imagefolder", imagefolder_root, img_size=16)


def test_unknown_local_dataset(tmp_path):
    with pytest.raises(DataError, match="unknown local dataset"):
        local_source("stl10", tmp_path)
    with pytest.raises(DataError, match="unknown stream"):
        build_stream("stl10-split2", seed=0, data_root=str(tmp_path))


# ----------------------------------------------------------------------------- image sizes
@pytest.fixture
def mixed_sizes_root(imagefolder_root):
    """The image folder with one training image of another size."""
    Image.new("RGB", (9, 7), (1, 2, 3)).save(imagefolder_root / "train" / "cat" / "cat_0.png")
    return imagefolder_root


def test_mixed_image_sizes_are_named_with_the_fix(mixed_sizes_root):
    with pytest.raises(DataError, match=r"different sizes \(9x7 .*cat_0.png, 12x10 .*--img-size"):
        local_source("imagefolder", mixed_sizes_root)


def test_mixed_image_sizes_resized_on_load_into_the_cache(mixed_sizes_root, tmp_path):
    stream = build_stream("imagefolder-split2", 0, data_root=str(mixed_sizes_root), img_size=14,
                          val_fraction=VAL_FRACTION, cache_dir=tmp_path / "cache")
    assert stream.image_shape == (3, 14, 14)
    x, _ = stream.tasks[0].train[0][:2]
    assert x.dtype == torch.uint8 and x.shape == (3, 14, 14)  # decoded once, cached as uint8
    assert any((tmp_path / "cache").iterdir())


def test_cli_img_size_runs_a_folder_of_mixed_sizes_and_records_it(mixed_sizes_root, tmp_path):
    suite = tmp_path / "own.yaml"
    suite.write_text(f"stream: imagefolder-split2\nstrategies: [classifier]\nepochs: 1\n"
                     f"val_fraction: {VAL_FRACTION}\n")
    args = ("--suite", str(suite), "--data-root", str(mixed_sizes_root), "--out",
            str(tmp_path / "out"), "--cache", str(tmp_path / "cache"), "--quiet")
    refused = run_main(*args)
    assert refused.returncode == 2 and "--img-size N" in refused.stderr
    assert not (tmp_path / "out").exists()
    done = run_main(*args, "--img-size", "14")
    assert done.returncode == 0, done.stderr[-2000:]
    (record,) = find_records([tmp_path / "out"])
    assert record["config"]["img_size"] == 14
    assert record["base"] == {"base": "none"}  # no base task, no --pretrained: random weights
    assert "starts from random weights" in done.stderr


def test_img_size_on_a_bundled_stream_is_refused():
    r = run_main("--suite", "smoke", "--img-size", "32")
    assert r.returncode == 2 and "applies to local datasets" in r.stderr
