"""The data path measured: images per CPU-second of decoding on every access (the suite's path
before the image cache) vs reading the decode-once cache, on generated images at the paper
datasets' real sizes. ``python -m benchmarks.measure.perf --data`` runs it and writes its section of
``results/perf.md``.

- **decode**: ``ImageList`` items with ``Resize((224, 224))`` + ``ToTensor`` (what every epoch of
  every run did, in the main process), timed per image.
- **cache build**: decoding each image once into the cache (``preprocess`` ``deit``: resize 256,
  centre square), in this process.
- **cached read**: batches of uint8 images from the cache through a ``DataLoader`` (what a GPU
  run's host does per epoch; conversion, crops and normalization then run on the GPU), and the
  same plus :class:`benchmarks.data.inputs.InputPipeline` on the CPU (a CPU run).

CPU-seconds are ``time.process_time()`` of this process (every thread), so a busy machine
changes them less than wall time. The run also checks that with preprocessing ``none`` every
cached image equals the decoded one bit for bit. The per-run projection multiplies the measured
per-image costs by the number of decodes of one paper run (:func:`paper_run_decodes`) and is
labelled as a projection.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from benchmarks.data.imagecache import cached
from benchmarks.data.inputs import InputPipeline, storage_transform
from benchmarks.data.layouts import ImageList, to_rgb
from benchmarks.data.preprocess import NONE, resolve_preprocess
from benchmarks.data.synthetic import REAL_SIZES, Writer

# images per split of the paper's datasets (train, test): CUB-200-2011, Stanford Cars,
# FGVC-Aircraft (trainval/test), CIFAR-100, Sketches (TU-Berlin, 80/20 of 20,000), WikiArt (the
# Piggyback split)
PAPER_SPLITS = {"cub": (5994, 5794), "cars": (8144, 8041), "aircraft": (6667, 3333),
                "cifar100": (50000, 10000), "sketches": (16000, 4000),
                "wikiart": (42129, 10628)}


def paper_run_decodes(epochs: int = 30) -> int:
    """Image reads of one paper run: every training image every epoch, the probe's features of
    the task's train and test images once, and every earlier task's test images after each task."""
    n, total = list(PAPER_SPLITS.values()), 0
    for i, (train, test) in enumerate(n):
        total += epochs * train + train + test + sum(t for _, t in n[: i + 1])
    return total


def _files(root: Path, per_dataset: int) -> dict[str, list[Path]]:
    """``per_dataset`` generated images of each file-based paper dataset, at its real size."""
    w = Writer(root, classes=1, train=per_dataset, test=0, real_sizes=True)
    out = {}
    for name in REAL_SIZES:
        paths = [root / name / f"{k}{'.png' if name == 'sketches' else '.jpg'}"
                 for k in range(per_dataset)]
        for p in paths:
            w.image(p, name, grey=name == "sketches")
        out[name] = paths
    return out


def _cpu_seconds(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def measure(per_dataset: int = 24, batch: int = 64, repeats: int = 3) -> dict:
    """Per dataset: images per CPU-second of decoding, of the cache build and of cached reads;
    the ratio; and the bit-identity check of the ``none`` preprocessing."""
    rows = {}
    deit = resolve_preprocess("deit", ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = _files(tmp / "images", per_dataset)
        for name, paths in files.items():
            labels = [0] * len(paths)
            old = ImageList(paths, labels, storage_transform(NONE, 224))
            from torchvision import transforms as T

            old.transform = T.Compose([to_rgb, old.transform, T.ToTensor()])
            decode_s = min(_cpu_seconds(lambda: [old[i] for i in range(len(old))])  # noqa: B023
                           for _ in range(repeats))
            raw = ImageList(paths, labels, to_rgb)
            build_s = _cpu_seconds(lambda: cached(raw, name, "train",  # noqa: B023
                                                  storage_transform(deit, 224),
                                                  tmp / "cache", workers=1))
            images = cached(raw, name, "train", storage_transform(deit, 224), tmp / "cache")
            copies = torch.utils.data.ConcatDataset([images] * (4096 // len(images) + 1))
            pipe = InputPipeline(deit, 224)

            def read(transform: bool, data=copies, pipe=pipe) -> None:
                for x, _ in DataLoader(data, batch_size=batch, shuffle=True):
                    if transform:
                        pipe(x, train=True)

            read_s = min(_cpu_seconds(lambda: read(False)) for _ in range(repeats))
            cpu_s = min(_cpu_seconds(lambda: read(True)) for _ in range(repeats))
            none = cached(raw, name, "none", storage_transform(NONE, 224), tmp / "cache",
                          workers=1)
            identical = all(torch.equal(none[i][0].float().div(255), old[i][0])
                            for i in range(len(old)))
            n = len(paths)
            rows[name] = {"size": "x".join(map(str, REAL_SIZES[name])), "images": n,
                          "decode_ips": n / decode_s, "build_ips": n / build_s,
                          "read_ips": len(copies) / read_s,
                          "read_cpu_pipeline_ips": len(copies) / cpu_s,
                          "ratio": (len(copies) / read_s) / (n / decode_s),
                          "identical_none": identical}
    return rows


def projection(rows: dict, epochs: int = 30) -> dict:
    """Hours of one core spent on images in one paper run, old path vs cache (a projection from
    the measured per-image costs, averaged over the file-based datasets)."""
    decodes = paper_run_decodes(epochs)
    images = sum(n for n, _ in PAPER_SPLITS.values()) + sum(t for _, t in PAPER_SPLITS.values())
    mean = lambda key: sum(r["images"] for r in rows.values()) / sum(  # noqa: E731
        r["images"] / r[key] for r in rows.values())
    return {"decodes": decodes, "images": images,
            "old_h": decodes / mean("decode_ips") / 3600,
            "cache_build_h": images / mean("build_ips") / 3600,
            "cache_read_h": decodes / mean("read_ips") / 3600}


def markdown(rows: dict, proj: dict) -> str:
    lines = ["## Data path: decode on every access vs the decode-once cache", "",
             "Generated images at the paper datasets' typical sizes; images per CPU-second of "
             "this process (`python -m benchmarks.measure.perf --data`). Decode: "
             "`Resize((224, 224))` + `ToTensor` per access (the path before the cache). "
             "Build: decoding once into the cache (DeiT storage: resize 256, centre square). "
             "Read: uint8 batches of 64 from the cache (a GPU run's host per epoch); "
             "+ CPU pipeline: with crops, flips and normalization on the CPU (a CPU run).", "",
             "| dataset | image size | decode img/CPU-s | build img/CPU-s | read img/CPU-s | "
             "read + CPU pipeline img/CPU-s | read / decode | `none` cache bit-identical |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['size']} | {r['decode_ips']:.0f} | {r['build_ips']:.0f} | "
                     f"{r['read_ips']:.0f} | {r['read_cpu_pipeline_ips']:.0f} | "
                     f"{r['ratio']:.0f}x | {'yes' if r['identical_none'] else 'NO'} |")
    lines += ["", f"Projection for one paper run ({proj['decodes'] / 1e6:.2f} M image reads over "
              f"30 epochs, {proj['images'] / 1e3:.0f} k distinct images; from the per-image "
              "costs above, one core): decoding on every access "
              f"{proj['old_h']:.1f} h; with the cache {proj['cache_build_h']:.2f} h to build "
              f"it once (shared by every run of a sweep, parallel over all cores) plus "
              f"{proj['cache_read_h']:.2f} h of reads per run.", ""]
    return "\n".join(lines)
