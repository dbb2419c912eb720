"""Generated stand-ins for the paper's data: the six datasets' on-disk layouts and a random
ImageNet-style checkpoint, for the ``paper-mini`` suite and the data-path measurements.

    python -m benchmarks.data.synthetic DIR [--classes 2] [--train 4] [--test 2] [--real-sizes]

writes ``DIR/{cub,cars,aircraft,cifar100,sketches,wikiart}`` in the layouts
:mod:`benchmarks.data.layouts` reads (CUB-200-2011's text files, Stanford Cars' ``.mat``
annotations, FGVC-Aircraft's variant lists, CIFAR-100's pickles, Sketches as grey PNG class
folders without a split, WikiArt as JPEG ``train/``/``test/`` class folders) and
``DIR/deit_tiny_patch16_224.pth``, a randomly initialised DeiT-Ti saved as a timm checkpoint
(the stand-in for ImageNet weights).
Images are smooth random colour fields (upsampled noise: they compress and decode like photos,
unlike white noise); ``--real-sizes`` gives them the real datasets' typical sizes
(:data:`REAL_SIZES`), otherwise they are 64x48. CIFAR-100's pickles hold the first ``classes``
of its 100 classes (the task keeps its 100-way head).

    python -m benchmarks.data.synthetic DIR --digits [--classes 6] [--train 120] [--test 60]

writes instead an image folder of the bundled MNIST-5k digits (``DIR/{train,test}/<digit
name>/*.png``, RGB 28 x 28): a learnable stand-in for a user's own ``imagefolder`` data, as the
README's "Your own data" check uses it.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path

import numpy as np

# typical (width, height) of an image of each dataset, and its file format
REAL_SIZES = {"cub": (500, 375), "cars": (700, 480), "aircraft": (1000, 750),
              "sketches": (1111, 1111), "wikiart": (1000, 800)}
SMALL_SIZE = (64, 48)


def smooth_image(size: tuple[int, int], seed: int, grey: bool = False):
    """A PIL image of ``size`` (w, h): 8x6 random colours, bicubically upsampled."""
    from PIL import Image

    rng = np.random.RandomState(seed)
    small = rng.randint(0, 256, size=(6, 8) if grey else (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(small, mode="L" if grey else "RGB").resize(size, Image.BICUBIC)


class Writer:
    """Writes one dataset layout: ``classes`` classes, ``train``/``test`` images per class."""

    def __init__(self, root: Path, classes: int, train: int, test: int, real_sizes: bool):
        self.root, self.classes, self.train, self.test = Path(root), classes, train, test
        self.real_sizes = real_sizes
        self.count = 0

    def image(self, path: Path, dataset: str, grey: bool = False) -> None:
        self.count += 1
        size = REAL_SIZES[dataset] if self.real_sizes else SMALL_SIZE
        path.parent.mkdir(parents=True, exist_ok=True)
        options = {"quality": 90} if path.suffix == ".jpg" else {}
        smooth_image(size, self.count, grey).save(path, **options)

    def samples(self):
        """(class, is_train) of every image."""
        return [(c, i < self.train) for c in range(self.classes)
                for i in range(self.train + self.test)]

    def cub(self) -> None:
        base = self.root / "cub" / "CUB_200_2011"
        images, labels, split = [], [], []
        for k, (c, train) in enumerate(self.samples(), start=1):
            f = f"{c + 1:03d}.bird_{c}/img_{k}.jpg"
            self.image(base / "images" / f, "cub")
            images.append(f"{k} {f}")
            labels.append(f"{k} {c + 1}")
            split.append(f"{k} {int(train)}")
        for name, lines in (("images", images), ("image_class_labels", labels),
                            ("train_test_split", split),
                            ("classes", [f"{c + 1} {c + 1:03d}.bird_{c}"
                                         for c in range(self.classes)])):
            (base / f"{name}.txt").write_text("\n".join(lines) + "\n")

    def cars(self) -> None:
        import scipy.io

        base = self.root / "cars" / "stanford_cars"
        for folder, mat, is_train in (("cars_train", "devkit/cars_train_annos.mat", True),
                                      ("cars_test", "cars_test_annos_withlabels.mat", False)):
            rows = [c for c, t in self.samples() if t == is_train]
            annos = np.zeros(len(rows), dtype=[("fname", object), ("class", object)])
            for i, c in enumerate(rows):
                annos[i] = (f"{i:05d}.jpg", c + 1)
                self.image(base / folder / f"{i:05d}.jpg", "cars")
            (base / mat).parent.mkdir(parents=True, exist_ok=True)
            scipy.io.savemat(str(base / mat), {"annotations": annos})
        names = np.array([f"Car model {c}" for c in range(self.classes)], dtype=object)
        scipy.io.savemat(str(base / "devkit" / "cars_meta.mat"), {"class_names": names})

    def aircraft(self) -> None:
        data = self.root / "aircraft" / "fgvc-aircraft-2013b" / "data"
        variants = [f"7{c}7-200" for c in range(self.classes)]
        data.mkdir(parents=True, exist_ok=True)
        (data / "variants.txt").write_text("\n".join(variants) + "\n")
        rows = {True: [], False: []}
        for k, (c, train) in enumerate(self.samples()):
            self.image(data / "images" / f"{k:07d}.jpg", "aircraft")
            rows[train].append(f"{k:07d} {variants[c]}")
        for split, train in (("trainval", True), ("test", False)):
            (data / f"images_variant_{split}.txt").write_text("\n".join(rows[train]) + "\n")

    def cifar100(self) -> None:
        folder = self.root / "cifar100" / "cifar-100-python"
        folder.mkdir(parents=True, exist_ok=True)
        for fname, train in (("train", True), ("test", False)):
            labels = [c for c, t in self.samples() if t == train]
            pixels = [np.asarray(smooth_image((32, 32), 1000 + k)).transpose(2, 0, 1).ravel()
                      for k in range(len(labels))]
            self.pickle(folder / fname, {"data": np.stack(pixels), "fine_labels": labels,
                                         "coarse_labels": [c // 5 for c in labels]})
        self.pickle(folder / "meta", {"fine_label_names": [f"fine{i:02d}" for i in range(100)],
                                      "coarse_label_names": [f"c{i}" for i in range(20)]})

    @staticmethod
    def pickle(path: Path, obj: dict) -> None:
        with open(path, "wb") as f:
            pickle.dump(obj, f)

    def folders(self, dataset: str, split: bool) -> None:
        grey = dataset == "sketches"
        suffix = ".png" if grey else ".jpg"
        for k, (c, train) in enumerate(self.samples()):
            part = ("train" if train else "test") if split else ""
            self.image(self.root / dataset / part / f"class_{c}" / f"{k}{suffix}", dataset, grey)


def write_paper_layouts(root: Path, classes: int = 2, train: int = 4, test: int = 2,
                        real_sizes: bool = False) -> Path:
    """The six layouts under ``root`` (see the module docstring); returns ``root``."""
    w = Writer(root, classes, train, test, real_sizes)
    w.cub()
    w.cars()
    w.aircraft()
    w.cifar100()
    w.folders("sketches", split=False)  # TU-Berlin: grey PNGs, no split on disk
    w.folders("wikiart", split=True)
    return Path(root)


def write_random_checkpoint(path: Path, backbone: str = "deit_tiny_patch16_224",
                            seed: int = 0) -> Path:
    """A randomly initialised timm ``backbone`` (with its 1000-way head) saved as a checkpoint."""
    import timm
    import torch

    torch.manual_seed(seed)
    model = timm.create_model(backbone, pretrained=False)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return Path(path)


DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def write_digit_folder(root: Path, classes: int = 6, train: int = 120, test: int = 60) -> Path:
    """The first ``train`` / ``test`` images of each of the first ``classes`` digits of MNIST-5k
    (seed 0 split) as RGB PNGs in ``root/{train,test}/<digit name>/``; returns ``root``."""
    from PIL import Image

    from benchmarks.data.datasets import mnist5k

    if not 2 <= classes <= len(DIGIT_NAMES):
        raise ValueError(f"--classes {classes}: the digits have 2 to {len(DIGIT_NAMES)} classes")
    source = mnist5k(seed=0)
    for part, images, per_class in (("train", source.train, train), ("test", source.test, test)):
        for c in range(classes):
            folder = Path(root) / part / DIGIT_NAMES[c]
            folder.mkdir(parents=True, exist_ok=True)
            for k, i in enumerate(np.flatnonzero(np.asarray(images.targets) == c)[:per_class]):
                pixels = (images.images[i, 0] * 255).round().byte().numpy()
                Image.fromarray(pixels).convert("RGB").save(folder / f"{k}.png")
    return Path(root)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path)
    p.add_argument("--digits", action="store_true",
                   help="write an image folder of bundled digits instead (module docstring)")
    p.add_argument("--classes", type=int, default=None, help="default: 2 (--digits: 6)")
    p.add_argument("--train", type=int, default=None,
                   help="training images per class; default: 4 (--digits: 120)")
    p.add_argument("--test", type=int, default=None,
                   help="test images per class; default: 2 (--digits: 60)")
    p.add_argument("--real-sizes", action="store_true")
    args = p.parse_args()
    if args.digits:
        try:
            write_digit_folder(args.root, args.classes or 6, args.train or 120, args.test or 60)
        except ValueError as e:
            p.error(str(e))
        print(f"digit image folder in {args.root} (train/, test/)")
        return
    args.classes, args.train, args.test = args.classes or 2, args.train or 4, args.test or 2
    write_paper_layouts(args.root, args.classes, args.train, args.test, args.real_sizes)
    ckpt = write_random_checkpoint(args.root / "deit_tiny_patch16_224.pth")
    print(f"six dataset layouts in {args.root}; random DeiT-Ti checkpoint {ckpt}")


if __name__ == "__main__":
    main()
