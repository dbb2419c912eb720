"""``stream_image_shape``: a stream's image shape and its data errors without loading its data.

For every bundled stream and for local datasets written in their real layouts into tmp folders
(the fixtures of ``test_local_datasets`` and :func:`benchmarks.data.synthetic.
write_paper_layouts`), the shape equals ``build_stream(...).image_shape`` and every DataError
message equals the one ``build_stream`` raises; with every loader made to fail, the shape still
comes back, from at most one image header.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torchvision
from PIL import Image
from test_local_datasets import (  # noqa: F401
    cifar10_root,
    cifar100_root,
    fashionmnist_root,
    imagefolder_root,
    mixed_sizes_root,
    skip_md5,
    svhn_root,
)

from benchmarks.data import datasets, layouts, local, streams
from benchmarks.data.datasets import BUNDLED_SHAPE, DataError
from benchmarks.data.streams import FIXED_STREAMS, PAPER_STREAM, build_stream, stream_image_shape
from benchmarks.data.synthetic import SMALL_SIZE, write_paper_layouts

VAL_FRACTION = 0.2
LOCAL = ("cifar10", "cifar100", "fashionmnist", "svhn", "imagefolder")
PAPER_LAYOUTS = ("cub", "cars", "aircraft", "sketches", "wikiart")
BUNDLED = (*FIXED_STREAMS, "mnist5k-split5", "digits-split2")


class Loaded(Exception):  # not a reader error: local's wrapper lets it through
    pass


@pytest.fixture
def forbid(monkeypatch):
    """``forbid()`` makes every loader and decoder raise :class:`Loaded`; it returns the list of
    files PIL opened since (headers: ``Image.load`` raises)."""
    opened: list[str] = []

    def apply() -> list[str]:
        def boom(*args, **kwargs):
            raise Loaded(args[:1])

        for module, names in ((streams, ("mnist5k", "sklearn_digits", "local_source",
                                         "paper_stream", "make_task", "class_split")),
                              (datasets, ("mnist5k", "sklearn_digits")),
                              (local, ("local_source", "_decoded", "check_one_size")),
                              (layouts, ("cifar_source", "folder_source")),
                              (torchvision.datasets, ("FashionMNIST", "SVHN", "ImageFolder")),
                              (torchvision.datasets.folder, ("make_dataset",))):
            for name in names:
                monkeypatch.setattr(module, name, boom)
        for name in FIXED_STREAMS:
            monkeypatch.setitem(FIXED_STREAMS, name, boom)
        monkeypatch.setattr(layouts.ArrayImages, "__init__", boom)
        monkeypatch.setattr(layouts.ImageList, "__getitem__", boom)
        monkeypatch.setattr(Image.Image, "load", boom)
        real_open = Image.open

        def counted_open(fp, *args, **kwargs):
            opened.append(str(fp))
            return real_open(fp, *args, **kwargs)

        monkeypatch.setattr(Image, "open", counted_open)
        return opened

    return apply


def _root(request, name: str) -> Path:
    root = request.getfixturevalue(f"{name}_root")
    return root if isinstance(root, Path) else root[0]


def _built(name: str, **kw) -> tuple[int, int, int]:
    return build_stream(name, 0, val_fraction=VAL_FRACTION, **kw).image_shape


def _error(f, *args, **kw) -> str:
    with pytest.raises(DataError) as e:
        f(*args, **kw)
    return str(e.value)


def assert_same_error(name: str, **kw) -> str:
    """stream_image_shape's DataError message == build_stream's; returns it."""
    shape_kw = {k: v for k, v in kw.items() if k in ("data_root", "img_size")}
    msg = _error(stream_image_shape, name, **shape_kw)
    assert msg == _error(build_stream, name, 0, val_fraction=VAL_FRACTION, **kw)
    return msg


@pytest.fixture
def paper_root(tmp_path):
    return write_paper_layouts(tmp_path / "paper", classes=2, train=5, test=2)


# ----------------------------------------------------------------------------- same shape
@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_shape_is_the_built_streams(name):
    assert stream_image_shape(name) == _built(name) == BUNDLED_SHAPE


def test_bundled_shapes_without_loading(forbid):
    opened = forbid()
    for name in BUNDLED:
        assert stream_image_shape(name) == BUNDLED_SHAPE
    assert not opened


@pytest.mark.parametrize("img_size", [None, 16])
@pytest.mark.parametrize("name", LOCAL)
def test_local_shape_is_the_built_streams_without_loading(request, forbid, name, img_size):
    kw = {"data_root": str(_root(request, name)), "img_size": img_size}
    expected = _built(f"{name}-split2", **kw)
    opened = forbid()
    with pytest.raises(Loaded):  # the patches bite
        _built(f"{name}-split2", **kw)
    assert stream_image_shape(f"{name}-split2", **kw) == expected
    assert len(opened) == (1 if name == "imagefolder" and img_size is None else 0)


@pytest.mark.parametrize("img_size", [None, 24])
@pytest.mark.parametrize("name", PAPER_LAYOUTS)
def test_paper_layout_shape_is_the_built_streams_without_loading(paper_root, forbid, name,
                                                                  img_size):
    kw = {"data_root": str(paper_root / name), "img_size": img_size}
    expected = _built(f"{name}-split1", **kw)
    assert expected == ((3, img_size, img_size) if img_size else (3, *SMALL_SIZE[::-1]))
    opened = forbid()
    assert stream_image_shape(f"{name}-split1", **kw) == expected
    assert len(opened) == (0 if img_size else 1)


@pytest.mark.parametrize("img_size", [None, 32])
def test_paper_stream_shape_is_the_built_streams_without_loading(paper_root, forbid, img_size):
    kw = {"data_root": str(paper_root), "img_size": img_size}
    expected = _built(PAPER_STREAM, **kw)
    assert expected == (3, img_size or 224, img_size or 224)
    opened = forbid()
    assert stream_image_shape(PAPER_STREAM, **kw) == expected
    assert not opened


# ----------------------------------------------------------------------------- same errors
@pytest.mark.parametrize("name", ["nope", "stl10-split2", "mnist5k-split", "cifar10-splitx"])
def test_unknown_stream(name):
    assert "unknown stream" in assert_same_error(name)


@pytest.mark.parametrize("name", BUNDLED)
def test_image_size_on_a_bundled_stream(name):
    assert "applies to local datasets" in assert_same_error(name, img_size=32)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mnist5k-split6", "digits-split0"])
def test_bundled_task_count(name):
    assert "has 10 classes: split into 1..5" in assert_same_error(name)


def test_bundled_task_count_without_loading(forbid):
    forbid()
    for name in ("mnist5k-split6", "digits-split0"):
        assert "has 10 classes" in _error(stream_image_shape, name)


def test_local_task_count(cifar10_root):  # noqa: F811
    assert "cifar10 has 10 classes" in assert_same_error("cifar10-split6",
                                                         data_root=str(cifar10_root[0]))


@pytest.mark.parametrize("name", [*LOCAL, *PAPER_LAYOUTS])
def test_no_missing_or_empty_root(tmp_path, name):
    assert "--data-root" in assert_same_error(f"{name}-split2")
    missing = tmp_path / "no" / "such"
    assert str(missing) in assert_same_error(f"{name}-split2", data_root=str(missing))
    for img_size in (None, 16):
        assert str(tmp_path) in assert_same_error(f"{name}-split2", data_root=str(tmp_path),
                                                  img_size=img_size)


def test_cifar_missing_batch(cifar10_root):  # noqa: F811
    root = cifar10_root[0]
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    assert "data_batch_3" in assert_same_error("cifar10-split2", data_root=str(root))


def test_fashionmnist_missing_file(fashionmnist_root):  # noqa: F811
    root = fashionmnist_root[0]
    (root / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    assert "not found" in assert_same_error("fashionmnist-split2", data_root=str(root))


def test_svhn_missing_test_file(svhn_root):  # noqa: F811
    root = svhn_root[0]
    (root / "test_32x32.mat").unlink()
    assert "not found" in assert_same_error("svhn-split2", data_root=str(root))


def test_imagefolder_without_test_folder(imagefolder_root):  # noqa: F811
    for cls in ("cat", "dog", "fox", "owl"):
        for f in (imagefolder_root / "test" / cls).iterdir():
            f.unlink()
        (imagefolder_root / "test" / cls).rmdir()
    (imagefolder_root / "test").rmdir()
    assert "test/" in assert_same_error("imagefolder-split2", data_root=str(imagefolder_root),
                                        img_size=16)


def test_imagefolder_class_mismatch(imagefolder_root):  # noqa: F811
    (imagefolder_root / "train" / "yak").mkdir()
    Image.new("RGB", (12, 10)).save(imagefolder_root / "train" / "yak" / "yak_0.png")
    assert "class folders differ" in assert_same_error(
        "imagefolder-split2", data_root=str(imagefolder_root), img_size=16)


def test_imagefolder_without_images(tmp_path):
    for part in ("train", "test"):
        (tmp_path / part / "cat").mkdir(parents=True)
        (tmp_path / part / "dog").mkdir(parents=True)
    assert "Found no valid file" in assert_same_error("imagefolder-split1",
                                                      data_root=str(tmp_path))


def test_mixed_sizes(mixed_sizes_root):  # noqa: F811
    name, root = "imagefolder-split2", str(mixed_sizes_root)
    msg = _error(stream_image_shape, name, data_root=root, check_sizes=True)
    assert msg == _error(build_stream, name, 0, data_root=root, val_fraction=VAL_FRACTION)
    assert "--img-size N" in msg
    # without check_sizes one header only: the first image's (train/cat/cat_0.png, 9 x 7)
    assert stream_image_shape(name, data_root=root) == (3, 7, 9)


def test_paper_stream_errors(paper_root):
    assert "give --data-root PATH" in assert_same_error(PAPER_STREAM)
    (paper_root / "aircraft" / "fgvc-aircraft-2013b" / "data" / "variants.txt").unlink()
    assert "variants.txt" in assert_same_error(PAPER_STREAM, data_root=str(paper_root))
    (paper_root / "cub" / "CUB_200_2011" / "train_test_split.txt").unlink()
    assert "train_test_split.txt" in assert_same_error(PAPER_STREAM, data_root=str(paper_root),
                                                       img_size=32)
    (paper_root / "cars" / "stanford_cars" / "devkit" / "cars_meta.mat").unlink()
    (paper_root / "cub").rename(paper_root / "cub.off")
    assert "data root for 'cub' does not exist" in assert_same_error(
        PAPER_STREAM, data_root=str(paper_root))
    (paper_root / "cub.off").rename(paper_root / "cub")
    assert "cars_meta.mat" in assert_same_error("cars-split1", data_root=str(paper_root / "cars"))
