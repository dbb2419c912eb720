"""``run_benchmark.py prepare``: make one of the paper's datasets that no library downloads
(CUB-200-2011, Stanford Cars, Sketches, WikiArt) from the official archive(s) the user
downloaded, into ``--data-root`` as the ``meat-paper6`` stream reads it
(:mod:`benchmarks.data.prepare`; CIFAR-100 and FGVC-Aircraft come with ``--download``)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.commands.parsing import Parser, UsageError

DATASETS = ("cub", "cars", "sketches", "wikiart")  # benchmarks.data.prepare.PAPER_CLASSES


def prepare_parser() -> Parser:
    p = Parser(prog="run_benchmark.py prepare",
               description="Make DATA_ROOT/<dataset> from the official archive(s), checked "
                           "through the paper stream's readers against the paper's class count "
                           "(cub 200, cars 196, sketches 250, wikiart 195). Sources and "
                           "archives: docs/paper.md.")
    p.add_argument("--dataset", required=True, choices=DATASETS,
                   help="cub: CUB_200_2011.tgz; cars: car_devkit.tgz, cars_train.tgz, "
                        "cars_test.tgz and cars_test_annos_withlabels.mat; sketches: "
                        "sketches_png.zip (TU-Berlin); wikiart: wikiart.zip (PiggyBack's split)")
    p.add_argument("--archive", required=True, action="append", type=Path,
                   help="a downloaded archive (repeat the flag for several: Stanford Cars' four)")
    p.add_argument("--data-root", required=True, type=Path,
                   help="the folder the paper suite reads (--data-root of the run); the dataset "
                        "goes to DATA_ROOT/<dataset>")
    return p


def cmd_prepare(argv: list[str]) -> int:
    args = prepare_parser().parse_args(argv)
    from benchmarks.data.datasets import DataError
    from benchmarks.data.prepare import prepare

    try:
        made = prepare(args.dataset, args.archive, args.data_root,
                       say=lambda line: print(f"{args.dataset}: {line}", flush=True))
    except DataError as e:
        raise UsageError(str(e)) from e
    print(f"{made.name}: {made.n_classes} classes, {made.n_images} images in {made.folder}")
    return 0
