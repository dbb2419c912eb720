"""The data path of local datasets: the decode-once image cache and the on-device preprocessing."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import transforms as T

from benchmarks.data import imagecache
from benchmarks.data.inputs import InputPipeline, storage_transform
from benchmarks.data.layouts import folder_source
from benchmarks.data.local import local_source
from benchmarks.data.preprocess import NONE, PreprocessError, resolve_preprocess
from benchmarks.data.streams import _select, _subset
from benchmarks.data.synthetic import smooth_image
from benchmarks.data.transforms import compose, invert, patch_shuffle, rotate
from results.records import run_id

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@pytest.fixture
def folder_root(tmp_path):
    """An ImageFolder tree of JPEGs and PNGs of different sizes and modes."""
    for part, n in (("train", 3), ("test", 2)):
        for c in range(2):
            folder = tmp_path / "data" / part / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                img = smooth_image((40 + 7 * i, 30 + 5 * c), seed=100 * c + i, grey=(i == 1))
                img.save(folder / f"{i}.{'png' if i else 'jpg'}")
    return tmp_path / "data"


def test_none_preset_is_left_out_of_run_ids():
    from benchmarks.config import RunConfig

    config = RunConfig(suite="s", stream="mnist5k-split5", backbone="vit_micro", strategy="meat",
                       seed=0, hparams={}, hparams_source="paper")
    assert config.preprocess == NONE and config.to_dict()["preprocess"] == NONE
    bare = {k: v for k, v in config.to_dict().items()
            if k not in ("preprocess", "precision", "tf32", "steps_per_task")}
    assert config.run_id == run_id(bare)
    assert config.replace(precision="bf16").run_id != config.run_id


@pytest.mark.parametrize("preprocess", ["none", "deit"])
def test_cached_items_are_bit_identical_to_decoding(folder_root, tmp_path, preprocess):
    p = resolve_preprocess(preprocess, IMAGENET)
    plain = local_source("imagefolder", folder_root, img_size=32, preprocess=p)
    cached = local_source("imagefolder", folder_root, img_size=32, preprocess=p,
                          cache_dir=tmp_path / "cache")
    assert cached.image_shape == plain.image_shape == (3, 32, 32)
    for split in ("train", "test"):
        a, b = getattr(plain, split), getattr(cached, split)
        assert a.targets == b.targets
        for i in range(len(a)):
            x, y = b[i]
            assert x.dtype == torch.uint8 and y == a[i][1]
            assert torch.equal(x.float().div(255), a[i][0])  # ToTensor's own arithmetic


def test_a_built_cache_is_reused_and_a_corrupt_one_rebuilt(folder_root, tmp_path, monkeypatch,
                                                          capsys):
    cache = tmp_path / "cache"
    first = local_source("imagefolder", folder_root, img_size=32, cache_dir=cache)
    reference = [first.train[i][0].clone() for i in range(len(first.train))]
    folder = first.train.folder
    build = imagecache._build

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt an intact cache")

    monkeypatch.setattr(imagecache, "_build", no_build)
    again = local_source("imagefolder", folder_root, img_size=32, cache_dir=cache)
    assert again.train.folder == folder
    data = bytearray((folder / imagecache.IMAGES).read_bytes())
    data[123] ^= 0xFF  # one flipped byte
    (folder / imagecache.IMAGES).write_bytes(bytes(data))
    assert "checksum" in imagecache.problem(folder)
    with pytest.raises(AssertionError, match="rebuilt"):
        local_source("imagefolder", folder_root, img_size=32, cache_dir=cache)
    monkeypatch.setattr(imagecache, "_build", build)
    (folder / imagecache.IMAGES).write_bytes(bytes(data[:-10]))  # truncated
    rebuilt = local_source("imagefolder", folder_root, img_size=32, cache_dir=cache)
    assert "rebuilding" in capsys.readouterr().err
    assert all(torch.equal(rebuilt.train[i][0], x) for i, x in enumerate(reference))


def test_key_follows_files_and_preprocessing(folder_root, tmp_path):
    src = local_source("imagefolder", folder_root, img_size=32)
    raw = src.train
    key = imagecache.cache_key(raw, "imagefolder", "train", storage_transform(NONE, 32))
    assert key != imagecache.cache_key(raw, "imagefolder", "train",
                                       storage_transform(NONE, 28))
    assert key != imagecache.cache_key(raw, "imagefolder", "train",
                                       storage_transform(resolve_preprocess("deit"), 32))
    path = raw.samples[0][0]
    smooth_image((50, 50), seed=7).save(path)  # a changed file
    assert key != imagecache.cache_key(raw, "imagefolder", "train", storage_transform(NONE, 32))


def test_concurrent_users_build_one_cache(folder_root, tmp_path, monkeypatch):
    builds = []
    build = imagecache._build
    monkeypatch.setattr(imagecache, "_build", lambda *a, **k: builds.append(1) or build(*a, **k))
    raw = folder_source("imagefolder", folder_root, None).train  # PIL items, as the cache reads
    out = []
    threads = [threading.Thread(target=lambda: out.append(imagecache.cached(
        raw, "imagefolder", "train", T.Resize((16, 16)), tmp_path / "cache", workers=1)))
        for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and len({o.folder for o in out}) == 1


def test_deit_storage_is_resize_then_center_square():
    img = smooth_image((300, 200), seed=1)
    stored = storage_transform(resolve_preprocess("deit"), 224)(img)
    expect = T.CenterCrop(256)(T.Resize(256, interpolation=T.InterpolationMode.BICUBIC)(img))
    assert stored.size == (256, 256) and list(stored.getdata()) == list(expect.getdata())


def test_evaluation_crops_the_centre_and_normalizes():
    p = resolve_preprocess("deit", IMAGENET)
    pipe = InputPipeline(p, img_size=224)
    x = torch.randint(0, 256, (2, 3, 256, 256), dtype=torch.uint8)
    out = pipe(x, train=False)
    mean = torch.tensor(IMAGENET[0]).reshape(1, 3, 1, 1)
    std = torch.tensor(IMAGENET[1]).reshape(1, 3, 1, 1)
    expect = (T.CenterCrop(224)(x).float().div(255) - mean) / std
    assert out.shape == (2, 3, 224, 224)
    assert torch.allclose(out, expect, atol=1e-6)


def test_none_pipeline_leaves_inputs_as_they_were():
    pipe = InputPipeline(NONE, img_size=28)
    x = torch.rand(4, 1, 28, 28)
    assert pipe(x, train=True) is x
    u = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8)
    assert torch.equal(pipe(u, train=True), u.float().div(255))


def test_random_resized_crops_follow_torchvision_ranges():
    pipe = InputPipeline(resolve_preprocess("deit"), img_size=224)
    torch.manual_seed(0)
    top, left, h, w = pipe.crop_boxes(4000, 256, 256, "cpu").unbind(1)
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 256).all() and (left + w <= 256).all()
    area, ratio = h * w / 256**2, w / h
    assert area.min() >= 0.08 - 0.01 and area.max() <= 1.0
    assert ratio.min() >= 0.75 - 0.02 and ratio.max() <= 4 / 3 + 0.02
    assert area.std() > 0.2  # spread over the scale range, not one size


def test_training_crops_flip_and_keep_values():
    pipe = InputPipeline(resolve_preprocess({"name": "deit", "hflip": 1.0,
                                             "train_crop": "none"}), img_size=8)
    x = torch.arange(64, dtype=torch.float32).reshape(1, 1, 8, 8).div(64).repeat(1, 3, 1, 1)
    out = pipe(x, train=True)  # the whole image, always flipped
    assert torch.allclose(out, x.flip(-1), atol=1e-5)
    const = torch.full((16, 3, 40, 30), 77, dtype=torch.uint8)
    crops = InputPipeline(resolve_preprocess("deit"), img_size=24)(const, train=True)
    assert crops.shape == (16, 3, 24, 24)
    assert torch.allclose(crops, torch.full_like(crops, 77 / 255), atol=1e-5)


def test_bad_preprocess_settings_name_the_valid_values():
    with pytest.raises(PreprocessError, match="valid: none, deit"):
        resolve_preprocess("imagenet")
    with pytest.raises(PreprocessError, match="unknown preprocess keys"):
        resolve_preprocess({"name": "deit", "crop": 0.9})
    with pytest.raises(PreprocessError, match="bicubic"):
        resolve_preprocess({"name": "deit", "interpolation": "nearest"})
    assert resolve_preprocess("deit", IMAGENET)["mean"] == list(IMAGENET[0])
    assert resolve_preprocess("deit")["mean"] is None  # auto without a checkpoint: none


def test_a_build_over_worker_processes_stores_the_same_bytes(folder_root, tmp_path,
                                                            monkeypatch):
    raw = folder_source("imagefolder", folder_root, None).train  # PIL items
    one = imagecache.cached(raw, "imagefolder", "train", T.Resize((16, 16)), tmp_path / "a",
                            workers=1)
    monkeypatch.setattr(imagecache, "MIN_PER_WORKER", 1)  # this small set over 2 processes
    two = imagecache.cached(raw, "imagefolder", "train", T.Resize((16, 16)), tmp_path / "b",
                            workers=2)
    assert (one.folder / imagecache.IMAGES).read_bytes() == \
        (two.folder / imagecache.IMAGES).read_bytes()



class PerItem(torch.utils.data.Dataset):
    """A dataset read item by item (``torch.utils.data.Subset`` would pass ``__getitems__``
    on)."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return self.ds[i]


@pytest.mark.parametrize("transform", [None, rotate(1), compose(patch_shuffle(2, 0), invert)],
                         ids=["none", "rot90", "shuffled+inverted"])
def test_batched_reads_are_the_per_item_reads(folder_root, tmp_path, monkeypatch, transform):
    """A batch of the image cache (and of task subsets of it, with their transforms) is one
    gather from the memory map; a DataLoader gives exactly the batches of per-item reads."""
    source = local_source("imagefolder", folder_root, img_size=16, cache_dir=tmp_path / "cache")
    train = _subset(_select(source.train, [1, 0], transform), np.array([5, 0, 3, 1, 4, 2]))

    def batches(ds):
        order = torch.Generator().manual_seed(0)
        return list(DataLoader(ds, batch_size=4, shuffle=True, generator=order))

    expected = batches(PerItem(train))
    monkeypatch.setattr(imagecache.CachedImages, "__getitem__", None)  # no per-item reads
    got = batches(train)
    assert [len(y) for _, y in got] == [4, 2]
    for (x, y), (x_ref, y_ref) in zip(got, expected, strict=True):
        assert x.dtype == x_ref.dtype and torch.equal(x, x_ref) and torch.equal(y, y_ref)
