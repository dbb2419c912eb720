"""The paper suite's data: tiny folders in each dataset's real layout (CUB-200-2011, Stanford
Cars, FGVC-Aircraft, CIFAR-100, Sketches, WikiArt), read through the suite's loaders, then one
training step of MEAT on the resulting stream."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from test_local_datasets import _labels, _pickle, _pixels, skip_md5  # noqa: F401

from benchmarks.data.datasets import DataError
from benchmarks.data.local import local_source
from benchmarks.data.streams import PAPER_TASKS, build_stream
from benchmarks.suitefile import load_suite
from benchmarks.suites import expand
from strategies import get_strategy

N_CLASSES, TRAIN, TEST = 3, 5, 2


def _image(path, seed, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (20, 24, 3) if mode == "RGB" else (20, 24)
    Image.fromarray(_pixels(shape, seed), mode=mode).save(path)


def _write_cub(root):
    base = root / "CUB_200_2011"
    images, labels, split = [], [], []
    for k, (c, train) in enumerate([(c, i < TRAIN) for c in range(N_CLASSES)
                                    for i in range(TRAIN + TEST)], start=1):
        f = f"{c + 1:03d}.bird_{c}/img_{k}.jpg"
        _image(base / "images" / f, k)
        images.append(f"{k} {f}")
        labels.append(f"{k} {c + 1}")
        split.append(f"{k} {int(train)}")
    (base / "images.txt").write_text("\n".join(images) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (base / "classes.txt").write_text("\n".join(f"{c + 1} {c + 1:03d}.bird_{c}"
                                                for c in range(N_CLASSES)) + "\n")


def _write_cars(root):
    base = root / "stanford_cars"
    for part, mat, per in (("cars_train", "devkit/cars_train_annos.mat", TRAIN),
                           ("cars_test", "cars_test_annos_withlabels.mat", TEST)):
        y = _labels(N_CLASSES, per, seed=len(part))
        annos = np.zeros(len(y), dtype=[("fname", object), ("class", object)])
        for i, c in enumerate(y):
            annos[i] = (f"{i:05d}.jpg", int(c) + 1)
            _image(base / part / f"{i:05d}.jpg", 100 + i)
        (base / mat).parent.mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(str(base / mat), {"annotations": annos})
    names = np.array([f"Car model {c}" for c in range(N_CLASSES)], dtype=object)
    scipy.io.savemat(str(base / "devkit" / "cars_meta.mat"), {"class_names": names})


def _write_aircraft(root):
    data = root / "fgvc-aircraft-2013b" / "data"
    variants = [f"7{c}7-200" for c in range(N_CLASSES)]
    (data / "images").mkdir(parents=True)
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    k = 0
    for split, per in (("trainval", TRAIN), ("test", TEST)):
        rows = []
        for c in _labels(N_CLASSES, per, seed=per):
            k += 1
            _image(data / "images" / f"{k:07d}.jpg", 200 + k)
            rows.append(f"{k:07d} {variants[c]}")
        (data / f"images_variant_{split}.txt").write_text("\n".join(rows) + "\n")


def _write_cifar100(root):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for fname, per in (("train", TRAIN), ("test", TEST)):
        y = _labels(100, per, seed=per)
        _pickle(folder / fname, {"data": _pixels((len(y), 3072), seed=3), "fine_labels":
                                 y.tolist(), "coarse_labels": (y // 5).tolist()})
    _pickle(folder / "meta", {"fine_label_names": [f"fine{i:02d}" for i in range(100)],
                              "coarse_label_names": [f"c{i}" for i in range(20)]})


def _write_folder(root, mode, split: bool):
    for c in range(N_CLASSES):
        for i in range(TRAIN + TEST):
            part = ("train" if i < TRAIN else "test") if split else ""
            _image(root / part / f"class_{c}" / f"{i}.png", 300 + 10 * c + i, mode)


@pytest.fixture
def paper_root(tmp_path, skip_md5):  # noqa: F811
    _write_cub(tmp_path / "cub")
    _write_cars(tmp_path / "cars")
    _write_aircraft(tmp_path / "aircraft")
    _write_cifar100(tmp_path / "cifar100")
    _write_folder(tmp_path / "sketches", "L", split=False)  # TU-Berlin: grey, no split
    _write_folder(tmp_path / "wikiart", "RGB", split=True)
    return tmp_path


@pytest.mark.parametrize("name, classes, n_train, n_test", [
    ("cub", N_CLASSES, N_CLASSES * TRAIN, N_CLASSES * TEST),
    ("cars", N_CLASSES, N_CLASSES * TRAIN, N_CLASSES * TEST),
    ("aircraft", N_CLASSES, N_CLASSES * TRAIN, N_CLASSES * TEST),
    ("cifar100", 100, 100 * TRAIN, 100 * TEST),
    ("sketches", N_CLASSES, None, None),
    ("wikiart", N_CLASSES, N_CLASSES * TRAIN, N_CLASSES * TEST),
])
def test_each_layout_loads_as_rgb_at_the_requested_size(paper_root, name, classes, n_train,
                                                       n_test):
    src = local_source(name, paper_root / name, img_size=32)
    assert len(src.class_names) == classes
    assert src.image_shape == (3, 32, 32)
    if n_train is not None:
        assert (len(src.train), len(src.test)) == (n_train, n_test)
    else:  # no split on disk: a seeded stratified 80/20 split of every class
        assert len(src.train) + len(src.test) == N_CLASSES * (TRAIN + TEST)
        assert sorted(set(src.test.targets)) == list(range(N_CLASSES))
    x, y = src.train[0]
    assert x.shape == (3, 32, 32) and 0 <= y < classes


def test_missing_annotation_file_is_a_clear_error(paper_root):
    (paper_root / "cub" / "CUB_200_2011" / "train_test_split.txt").unlink()
    with pytest.raises(DataError, match="train_test_split.txt"):
        local_source("cub", paper_root / "cub", img_size=32)


def test_paper_stream_and_one_meat_training_step(paper_root):
    from models.factory import create_backbone
    from strategies import get_strategy
    from strategies.registry import TrainSettings, resolve_hparams

    stream = build_stream("meat-paper6", seed=0, data_root=str(paper_root), img_size=32,
                          val_fraction=0.2)
    assert [t.name for t in stream.tasks] == list(PAPER_TASKS)
    assert stream.base is None and stream.image_shape == (3, 32, 32)
    bench = stream.to_benchmark()
    backbone = create_backbone("deit_tiny_patch16_224", img_size=32)
    settings = TrainSettings(epochs=1, batch_size=64, head_init="random")
    strategy = get_strategy("meat").build(backbone, resolve_hparams("meat"), settings)
    before = {k: v.clone() for k, v in strategy.model.backbone.state_dict().items()}
    strategy.train(bench.train_stream[0])
    assert strategy.clock.train_exp_iterations == 1
    state = strategy.model.backbone.state_dict()
    assert all(torch.equal(state[k], v) for k, v in before.items())
    assert strategy.model.heads["0"].out_features == N_CLASSES


def test_paper_suite_config():
    suite = load_suite("paper")
    assert suite["stream"] == "meat-paper6" and suite["epochs"] == 30
    assert suite["batch_size"] == 256
    meat = next(c for c in expand(suite) if c.strategy == "meat")
    assert meat.hparams_source == "paper+code"  # no override: the registered values
    from models.factory import create_backbone
    from strategies.registry import TrainSettings

    strategy = get_strategy("meat").build(create_backbone("vit_nano"), meat.hparams,
                                          TrainSettings(batch_size=suite["batch_size"]))
    strategy.model.heads["0"] = torch.nn.Linear(strategy.model.num_features, 200)  # task 0's
    token, ffn, head = strategy.param_groups(strategy.model, 0)
    # the paper: lr = base x batch / 1024, masks 0.1 (two logits: x2 for one), heads 5e-4
    assert token["lr"] == ffn["lr"] == pytest.approx(2 * 0.1 * 256 / 1024)
    assert head["lr"] == pytest.approx(5e-4 * 256 / 1024) and head["weight_decay"] == 0.05
    assert strategy.schedule == "warmup_cosine"
