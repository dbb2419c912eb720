"""``run_benchmark.py prepare``: the paper's datasets that no library downloads, made from
archives generated here in each official layout (CUB_200_2011.tgz, Stanford Cars' devkit, image
tars and test-label .mat, TU-Berlin's sketches_png.zip, PiggyBack's wikiart.zip) with the
paper's class counts, then read through the stream's own readers; a wrong class count, a missing
piece or a bad archive is one line, exit 2, with nothing left behind."""

from __future__ import annotations

import io
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image
from test_cli import run_main

import benchmarks.data.prepare as prep
from benchmarks.commands.prepare import DATASETS
from benchmarks.data.datasets import DataError
from benchmarks.data.local import PREPARED, local_shape_and_classes, local_source
from benchmarks.data.prepare import PAPER_CLASSES
from benchmarks.data.streams import PAPER_STREAM, stream_image_shape
from benchmarks.data.synthetic import write_paper_layouts


def _image(seed: int, suffix: str = ".jpg", grey: bool = False) -> bytes:
    rng = np.random.RandomState(seed)
    pixels = rng.randint(0, 256, size=(6, 8) if grey else (6, 8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG" if suffix == ".png" else "JPEG")
    return buf.getvalue()


def _mat(**arrays) -> bytes:
    buf = io.BytesIO()
    scipy.io.savemat(buf, arrays)
    return buf.getvalue()


def _tgz(path: Path, files: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


# ----------------------------------------------------------------------------- archives
def cub_archive(where: Path, classes: int = 200) -> list[Path]:
    """``CUB_200_2011.tgz``: ``CUB_200_2011/`` with the four text files and ``images/``, one
    training and one test image per class, plus ``attributes.txt`` beside it (as released)."""
    base, files = "CUB_200_2011", {"attributes.txt": b"1 has_bill_shape::curved\n"}
    images, labels, split = [], [], []
    for k in range(1, 2 * classes + 1):
        c = (k - 1) // 2
        f = f"{c + 1:03d}.Bird_{c}/Bird_{c}_{k:04d}.jpg"
        files[f"{base}/images/{f}"] = _image(k)
        images.append(f"{k} {f}")
        labels.append(f"{k} {c + 1}")
        split.append(f"{k} {k % 2}")
    files[f"{base}/images.txt"] = ("\n".join(images) + "\n").encode()
    files[f"{base}/image_class_labels.txt"] = ("\n".join(labels) + "\n").encode()
    files[f"{base}/train_test_split.txt"] = ("\n".join(split) + "\n").encode()
    files[f"{base}/classes.txt"] = "".join(f"{c + 1} {c + 1:03d}.Bird_{c}\n"
                                           for c in range(classes)).encode()
    files[f"{base}/README"] = b"CUB-200-2011\n"
    return [_tgz(where / "CUB_200_2011.tgz", files)]


def _annotations(n: int, classes: list[int] | None) -> np.ndarray:
    fields = [("bbox_x1", object), ("bbox_y1", object), ("bbox_x2", object),
              ("bbox_y2", object)] + ([("class", object)] if classes is not None else []) + [
        ("fname", object)]
    annos = np.zeros(n, dtype=fields)
    for i in range(n):
        box = (1, 1, 7, 5)
        annos[i] = (*box, classes[i], f"{i + 1:05d}.jpg") if classes is not None else (
            *box, f"{i + 1:05d}.jpg")
    return annos


def cars_archives(where: Path, classes: int = 196) -> list[Path]:
    """Stanford Cars' four official files: ``car_devkit.tgz``, ``cars_train.tgz``,
    ``cars_test.tgz`` and ``cars_test_annos_withlabels.mat``."""
    train = [c + 1 for c in range(classes)]  # one image of each class per split
    test = list(reversed(train))
    names = np.array([f"AM General Hummer {c}" for c in range(classes)], dtype=object)
    devkit = {"devkit/cars_meta.mat": _mat(class_names=names.reshape(1, -1)),
              "devkit/cars_train_annos.mat": _mat(annotations=_annotations(len(train), train)),
              "devkit/cars_test_annos.mat": _mat(annotations=_annotations(len(test), None)),
              "devkit/README.txt": b"devkit\n"}
    (where / "cars_test_annos_withlabels.mat").parent.mkdir(parents=True, exist_ok=True)
    (where / "cars_test_annos_withlabels.mat").write_bytes(
        _mat(annotations=_annotations(len(test), test)))
    return [_tgz(where / "car_devkit.tgz", devkit),
            _tgz(where / "cars_train.tgz", {f"cars_train/{i + 1:05d}.jpg": _image(i)
                                             for i in range(len(train))}),
            _tgz(where / "cars_test.tgz", {f"cars_test/{i + 1:05d}.jpg": _image(1000 + i)
                                            for i in range(len(test))}),
            where / "cars_test_annos_withlabels.mat"]


def sketches_archive(where: Path, classes: int = 250, per_class: int = 5) -> list[Path]:
    """TU-Berlin's ``sketches_png.zip``: ``png/<class>/<n>.png`` and ``png/filelist.txt``
    (a class is named ``train``, as in the real data)."""
    names = ["train", *(f"object {c}" for c in range(1, classes))][:classes]
    files = {f"png/{name}/{c * per_class + i + 1}.png": _image(c * per_class + i, ".png", True)
             for c, name in enumerate(names) for i in range(per_class)}
    files["png/filelist.txt"] = "\n".join(files).encode()
    return [_zip(where / "sketches_png.zip", files)]


def wikiart_archive(where: Path, classes: int = 195, test_classes: int | None = None
                    ) -> list[Path]:
    """PiggyBack's ``wikiart.zip``: ``wikiart/{train,test}/<artist>/*.jpg``."""
    files = {}
    for part, n in (("train", classes), ("test", classes if test_classes is None
                                         else test_classes)):
        for c in range(n):
            files[f"wikiart/{part}/artist_{c:03d}/{part}_{c}.jpg"] = _image(c)
    return [_zip(where / "wikiart.zip", files)]


ARCHIVES = {"cub": cub_archive, "cars": cars_archives, "sketches": sketches_archive,
            "wikiart": wikiart_archive}


def _prepare(name: str, archives: list[Path], root: Path):
    args = ["prepare", "--dataset", name, "--data-root", str(root)]
    for a in archives:
        args += ["--archive", str(a)]
    return run_main(*args)


def _one_error_line(r) -> str:
    assert r.returncode == 2, (r.stdout, r.stderr)
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("run_benchmark.py: error: ")
    return line


def _nothing_in(root: Path) -> bool:
    return not root.exists() or not any(root.iterdir())


# ----------------------------------------------------------------------------- made and read
def test_the_command_covers_the_papers_four():
    assert set(DATASETS) == set(PAPER_CLASSES) == set(PREPARED)  # PREPARED: the readers' hint
    assert PAPER_CLASSES == {"cub": 200, "cars": 196, "sketches": 250, "wikiart": 195}


@pytest.mark.parametrize("name", sorted(ARCHIVES))
def test_an_official_archive_is_made_into_what_the_stream_reads(tmp_path, name):
    root = tmp_path / "data"
    r = _prepare(name, ARCHIVES[name](tmp_path / "downloads"), root)
    assert r.returncode == 0, r.stderr
    n = PAPER_CLASSES[name]
    assert f"{name}: {n} classes" in r.stdout
    assert sorted(p.name for p in root.iterdir()) == [name]  # no partial folder, no lock left
    assert not list((root / name).rglob(".prepare.lock"))
    assert local_shape_and_classes(name, root / name, 16) == ((3, 16, 16), n)
    source = local_source(name, root / name, 16)
    assert len(source.class_names) == n
    x, _ = source.train[0]
    assert tuple(x.shape) == (3, 16, 16)
    if name != "sketches":  # a split on disk: one training and one test image per class
        assert len(source.train) == len(source.test) == n


def test_the_four_prepared_read_as_the_paper_stream(tmp_path):
    root = tmp_path / "data"
    for name, make in ARCHIVES.items():
        assert _prepare(name, make(tmp_path / "downloads" / name), root).returncode == 0
    generated = write_paper_layouts(tmp_path / "generated")  # CIFAR-100, Aircraft: --download
    for name in ("cifar100", "aircraft"):
        shutil.move(generated / name, root / name)
    assert stream_image_shape(PAPER_STREAM, data_root=root, img_size=16) == (3, 16, 16)


def test_cub_layout_as_released(tmp_path):
    root = tmp_path / "data"
    assert _prepare("cub", cub_archive(tmp_path / "dl"), root).returncode == 0
    base = root / "cub" / "CUB_200_2011"
    assert (base / "README").is_file() and not (root / "cub" / "attributes.txt").exists()
    assert (base / "images" / "001.Bird_0" / "Bird_0_0001.jpg").is_file()


def test_cars_in_torchvisions_layout(tmp_path):
    root = tmp_path / "data"
    assert _prepare("cars", cars_archives(tmp_path / "dl"), root).returncode == 0
    base = root / "cars" / "stanford_cars"
    assert {p.name for p in base.iterdir()} == {"devkit", "cars_train", "cars_test",
                                               "cars_test_annos_withlabels.mat"}


def test_sketches_keep_a_class_named_train(tmp_path):
    root = tmp_path / "data"
    assert _prepare("sketches", sketches_archive(tmp_path / "dl"), root).returncode == 0
    assert len(list((root / "sketches" / "train").glob("*.png"))) == 5
    assert not (root / "sketches" / "filelist.txt").exists()


# ----------------------------------------------------------------------------- refused
@pytest.mark.parametrize("name, make, expect", [
    ("cub", lambda d: cub_archive(d, classes=199),
     "cub: the archives give 199 classes, the paper's CUB-200-2011 has 200"),
    ("cars", lambda d: cars_archives(d, classes=195),
     "cars: the archives give 195 classes, the paper's Stanford Cars has 196"),
    ("sketches", lambda d: sketches_archive(d, classes=249, per_class=1),
     "sketches: the archives give 249 classes, the paper's Sketches (TU-Berlin) has 250"),
    ("wikiart", lambda d: wikiart_archive(d, classes=27),
     "wikiart: the archives give 27 classes, the paper's WikiArt (PiggyBack's split) has 195"),
])
def test_a_wrong_class_count_is_one_line_and_nothing_is_written(tmp_path, name, make, expect):
    root = tmp_path / "data"
    line = _one_error_line(_prepare(name, make(tmp_path / "dl"), root))
    assert expect in line and prep.SOURCES[name][0] in line
    assert _nothing_in(root)


def test_a_class_missing_from_the_test_split_is_named(tmp_path):
    line = _one_error_line(_prepare("wikiart", wikiart_archive(tmp_path / "dl", test_classes=193),
                                    tmp_path / "data"))
    assert "only in train/: ['artist_193', 'artist_194']" in line
    assert _nothing_in(tmp_path / "data")


def test_cars_without_the_test_labels_names_the_file(tmp_path):
    archives = cars_archives(tmp_path / "dl")[:3]
    line = _one_error_line(_prepare("cars", archives, tmp_path / "data"))
    assert "missing cars_test_annos_withlabels.mat" in line
    assert "give cars_test_annos_withlabels.mat too" in line
    assert _nothing_in(tmp_path / "data")


def test_cars_without_the_test_images_names_them(tmp_path):
    archives = [a for a in cars_archives(tmp_path / "dl") if a.name != "cars_test.tgz"]
    line = _one_error_line(_prepare("cars", archives, tmp_path / "data"))
    assert "missing cars_test/" in line and "give cars_test.tgz" in line


def test_cub_missing_images_are_named(tmp_path):
    (archive,) = cub_archive(tmp_path / "dl")
    with tarfile.open(archive) as tf:
        files = {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}
    del files["CUB_200_2011/images/002.Bird_1/Bird_1_0003.jpg"]
    line = _one_error_line(_prepare("cub", [_tgz(tmp_path / "cut" / archive.name, files)],
                                    tmp_path / "data"))
    assert "1 of the 400 annotated images are not in the archives" in line
    assert "CUB_200_2011/images/002.Bird_1/Bird_1_0003.jpg" in line and "partial" not in line


@pytest.mark.parametrize("trouble, expect", [
    ("missing", "archive not found"),
    ("text", "is not a tar or zip archive"),
    ("truncated", "extracting"),
    ("other", "nothing of CUB_200_2011.tgz belongs to CUB-200-2011"),
    ("unsafe", "unsafe member path"),
])
def test_bad_archives_are_refused_and_leave_nothing(tmp_path, trouble, expect):
    (good,) = cub_archive(tmp_path / "dl")
    bad = tmp_path / "bad" / "CUB_200_2011.tgz"
    bad.parent.mkdir()
    if trouble == "text":
        bad.write_text("not an archive\n")
    elif trouble == "truncated":
        bad.write_bytes(good.read_bytes()[:len(good.read_bytes()) // 2])
    elif trouble == "other":
        _tgz(bad, {"something/else.jpg": _image(0)})
    elif trouble == "unsafe":
        _tgz(bad, {"../CUB_200_2011/images.txt": b"1 a.jpg\n"})
    root = tmp_path / "data"
    line = _one_error_line(_prepare("cub", [bad], root))
    assert expect in line
    assert not root.exists()


def test_an_existing_dataset_is_not_overwritten(tmp_path):
    root = tmp_path / "data"
    (root / "cub").mkdir(parents=True)
    (root / "cub" / "mine.txt").write_text("keep")
    line = _one_error_line(_prepare("cub", cub_archive(tmp_path / "dl"), root))
    assert "already exists" in line
    assert sorted(p.name for p in root.rglob("*")) == ["cub", "mine.txt"]


def test_usage_errors_are_one_line():
    assert "invalid choice: 'flowers'" in _one_error_line(run_main(
        "prepare", "--dataset", "flowers", "--archive", "x.tgz", "--data-root", "d"))
    assert "--archive" in _one_error_line(run_main("prepare", "--dataset", "cub",
                                                   "--data-root", "d"))


# ----------------------------------------------------------------------------- interrupted
def test_an_interrupted_prepare_never_looks_finished(tmp_path, monkeypatch):
    root = tmp_path / "data"
    archives = sketches_archive(tmp_path / "dl")

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(prep, "_verify", interrupted)
    r = _prepare("sketches", archives, root)
    assert r.returncode == 130
    assert _nothing_in(root)
    monkeypatch.undo()
    # killed outright (no cleanup): a partial folder is left, which the stream does not read
    stale = root / ".sketches.partial-killed"
    (stale / "some class").mkdir(parents=True)
    (stale / ".prepare.lock").touch()
    with pytest.raises(DataError, match="data root for 'sketches' does not exist"):
        stream_image_shape("sketches-split2", data_root=root / "sketches")
    # the next prepare clears it and finishes
    assert _prepare("sketches", archives, root).returncode == 0
    assert sorted(p.name for p in root.iterdir()) == ["sketches"]


def test_a_prepare_in_progress_is_not_cleared(tmp_path):
    from atomicio import file_lock

    root = tmp_path / "data"
    busy = root / ".wikiart.partial-busy"
    busy.mkdir(parents=True)
    with file_lock(busy / ".prepare.lock"):
        made = prep.prepare("wikiart", wikiart_archive(tmp_path / "dl"), root)
        assert busy.is_dir()
    assert made.n_classes == 195 and made.n_images == 2 * 195
