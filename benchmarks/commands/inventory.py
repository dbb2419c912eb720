"""Commands that inspect without training: ``storage`` (the storage bill of every strategy),
``backbones`` (the available backbones with params and FLOPs) and ``cache`` (decode a suite's
local datasets once into the image cache, or check one in full)."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from benchmarks.commands.parsing import (
    Parser,
    UsageError,
    check_lockable,
    csv_list,
    positive_int,
)
from benchmarks.config import DEFAULT_CACHE
from vocab import PREPROCESS_PRESETS


def storage_parser() -> Parser:
    p = Parser(prog="run_benchmark.py storage",
               description="Storage bill of every strategy after the base model and T new tasks, "
                           "without training.")
    p.add_argument("--backbone", required=True, help="backbone name (see the README)")
    p.add_argument("--classes", required=True, type=class_counts,
                   help="classes of each new task, comma-separated (one task per entry)")
    p.add_argument("--base-classes", type=positive_int, default=1000,
                   help="classes of the base model's original head (default 1000, ImageNet)")
    p.add_argument("--img-size", type=positive_int, default=None,
                   help="input size (default: the backbone's own)")
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    return p


def class_counts(value: str) -> list[int]:
    try:
        counts = [int(v) for v in csv_list(value)]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(
            f"expected class counts >= 1 per task like 200,196,100, got {value!r}")
    return counts


def cmd_storage(argv: list[str]) -> int:
    args = storage_parser().parse_args(argv)
    from models.factory import BackboneError, create_backbone, family
    from results.storage import format_storage
    from strategies import STRATEGIES
    from strategies.registry import refusal
    from strategies.storage import strategy_bill

    try:
        backbone = create_backbone(args.backbone, img_size=args.img_size)
    except BackboneError as e:
        raise UsageError(str(e)) from e
    base_head = args.base_classes * (backbone.num_features + 1)
    bills = {}
    for name, info in STRATEGIES.items():
        why = refusal(name, family(args.backbone))
        try:
            if why is None:
                bills[name] = strategy_bill(info, backbone, args.classes, base_head)
        except ValueError as e:  # its registered layers do not exist in this backbone
            why = str(e)
        if why is not None:
            print(f"{name}: no bill on {args.backbone} ({why})", file=sys.stderr)
    print(format_storage(bills, args.classes, args.format))
    return 0


def cmd_backbones(argv: list[str]) -> int:
    p = Parser(prog="run_benchmark.py backbones",
               description="Backbones with parameters, FLOPs and supported attention options.")
    p.add_argument("--format", choices=("table", "json"), default="table")
    args = p.parse_args(argv)
    import json

    import pandas as pd

    from models.factory import backbone_card, backbone_names, timm_family_count
    from results.formats import WIDTH, as_text

    cards = [backbone_card(n) for n in backbone_names()]
    if args.format == "json":
        print(json.dumps(cards, indent=2))
        return 0
    df = pd.DataFrame(cards).set_index("name")
    df["token_masks"] = df["token_masks"].map({True: "yes", False: "no"})
    df["dropkey"] = df["dropkey"].map({True: "yes", False: "no"})
    print(as_text(df[["img_size", "tokens", "params_m", "gflops", "token_masks", "dropkey"]],
                  float_format=lambda v: f"{v:.3f}"))
    width = max(map(len, df.index)) + 2
    print()
    for name, text in df["description"].items():
        print(textwrap.fill(text, WIDTH, initial_indent=f"{name:<{width}}",
                            subsequent_indent=" " * width))
    print(f"\n+ any timm vit_*/deit_*/cait_* name ({timm_family_count()} in this timm)\n"
          "FLOPs: one image, forward, counted by torch.utils.flop_counter")
    return 0


def cmd_cache(argv: list[str]) -> int:
    """Decode a suite's local datasets once into the image cache, with every core; every file
    re-stat-ed and every cache's whole sha256 checked (what runs' opens trust afterwards)."""
    p = Parser(prog="run_benchmark.py cache",
               description="Build the decode-once image cache of a suite's local datasets (the "
                           "paper's six) under --cache, with all cores, or check an existing one "
                           "in full (every file's stat, the whole sha256); runs then read it.")
    p.add_argument("--suite", required=True, help="suite name or YAML file")
    p.add_argument("--stream", type=csv_list, help="stream name(s) (default: the suite's)")
    p.add_argument("--data-root", help="folder of the local datasets")
    p.add_argument("--preprocess", choices=PREPROCESS_PRESETS, help="input preset")
    p.add_argument("--cache", default=str(DEFAULT_CACHE), help="cache folder (env VITCL_CACHE)")
    args = p.parse_args(argv)
    from benchmarks.data.datasets import DataError
    from benchmarks.data.imagecache import thorough
    from benchmarks.data.streams import build_stream
    from benchmarks.suitefile import SuiteError, load_suite
    from benchmarks.suites import resolved_preprocess, stream_list

    try:
        suite = load_suite(args.suite)
        for key in ("stream", "data_root", "preprocess"):
            if getattr(args, key) is not None:
                suite[key] = getattr(args, key)
        check_lockable(cache=Path(args.cache))
        images = Path(args.cache) / "images"
        # what is stored depends on the resize, never on the backbone's normalization
        preprocess = resolved_preprocess({**suite, "backbone": stream_list(suite["backbone"])[0]})
        for name in stream_list(suite["stream"]):
            with thorough():
                stream = build_stream(name, suite["seeds"][0], data_root=suite["data_root"],
                                      val_fraction=suite["val_fraction"], preprocess=preprocess,
                                      cache_dir=images)
            print(f"{name}: {len(stream.tasks)} tasks cached")
    except (SuiteError, DataError) as e:
        raise UsageError(str(e)) from e
    folders = sorted(f for f in images.glob("*") if f.is_dir()) if images.is_dir() else []
    for f in folders:
        size = sum(x.stat().st_size for x in f.iterdir()) / 2**30
        print(f"  {f} ({size:.2f} GiB)")
    return 0
