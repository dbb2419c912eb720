#!/usr/bin/env python
"""Run continual-learning suites on ViT backbones and report their results.

  python run_benchmark.py --suite default [--strategies a,b] [--backbone NAME] [--seeds 0,1]
                          [--epochs N] [--out DIR] [--executor local|ray|slurm] ...
  python run_benchmark.py report RUN_DIR [RUN_DIR ...]
  python run_benchmark.py backbones [--format table|json]
  python run_benchmark.py cache --suite paper --data-root DIR [--cache DIR]
  python run_benchmark.py storage --backbone NAME --classes 200,196,100 [--base-classes 1000]
                                  [--format table|json|csv]

Every input is validated before any training: bad input prints one line on stderr naming the
problem and the valid choices, and exits with code 2 without writing anything. A sweep skips
finished runs and resumes interrupted ones; it exits with 1 if a run failed (the others still
ran), 130 on Ctrl-C (finished tasks stay on disk).
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from local files only

ROOT = Path(__file__).resolve().parent

from benchmarks.config import DEFAULT_CACHE  # noqa: E402  (torch-free)


class UsageError(Exception):
    """Bad command-line input (exit code 2)."""


class Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line naming the valid choices, exit code 2, and
    takes flags only as spelled (no abbreviations)."""

    def __init__(self, **kwargs):
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message: str):
        if "unrecognized arguments" in message:
            flags = sorted(s for s in self._option_string_actions if s.startswith("--"))
            message += f" (valid flags: {', '.join(flags)})"
        raise UsageError(message)


def csv_list(value: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def seed_list(value: str) -> list[int]:
    try:
        seeds = [int(v) for v in csv_list(value)]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"seeds must be integers like 0,1,2, got {value!r}") from e
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:  # a seed given twice would be one run counted as two
        raise argparse.ArgumentTypeError(f"seed {twice[0]} is given twice in {value!r}")
    return seeds


def warn(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr, flush=True)


def at_least(kind: type, low: float, what: str):
    """An argparse ``type``: a ``kind`` number >= ``low``, else one line saying so."""
    def parse(value: str):
        try:
            n = kind(value)
        except ValueError:
            n = None
        if n is None or n < low:
            raise argparse.ArgumentTypeError(f"must be {what}, got {value!r}")
        return n
    return parse


positive_int = at_least(int, 1, "an integer >= 1")
non_negative_float = at_least(float, 0, "a number >= 0")


def run_parser(tune: bool = False) -> Parser:
    """Flags of a suite run; with ``tune``, of `run_benchmark.py tune` (same selection and
    executor flags, plus the trial budget)."""
    p = Parser(
        prog="run_benchmark.py tune" if tune else "run_benchmark.py",
        description=("Choose every strategy's hyperparameters on validation data (see "
                     "benchmarks/tuning.py); writes tuned/<suite>.yaml." if tune else
                     "Run a suite (configs/<suite>.yaml): strategies x seeds on its streams and "
                     "backbones. Subcommands: report, tune, cache, storage, backbones."),
    )
    if tune:
        p.add_argument("--budget", type=positive_int, default=8,
                       help="trials per strategy, the same for every strategy (default 8)")
        p.add_argument("--tune-tasks", type=positive_int, default=2,
                       help="tune on the first N tasks of the stream (default 2)")
    else:
        p.add_argument("--hparams", choices=["registered", "tuned"],
                       help="registered (default): each strategy's registered values (their "
                            "source, paper, paper+code, paper+suite or suite, is recorded with "
                            "every run); tuned: the values in tuned/<suite>.yaml from "
                            "`run_benchmark.py tune`")
    p.add_argument("--suite", required=True,
                   help="suite name (configs/<suite>.yaml) or the path of a suite YAML file")
    p.add_argument("--strategies", type=csv_list, help="comma list (default: the suite's)")
    p.add_argument("--backbone", type=csv_list,
                   help="backbone name(s), comma-separated (`run_benchmark.py backbones`)")
    p.add_argument("--stream", type=csv_list,
                   help="stream name(s) (default: the suite's), e.g. mnist5k-split5")
    p.add_argument("--seeds", type=seed_list, help="comma list of integer seeds, e.g. 0,1,2")
    add_setting_flags(p)
    p.add_argument("--out", help="output folder (default runs/<suite>)")
    p.add_argument("--cache", default=str(DEFAULT_CACHE),
                   help="folder of cached base checkpoints, probes and decoded images (env "
                        "VITCL_CACHE)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard event files into every run folder")
    x = p.add_argument_group("executors (where the runs execute; see benchmarks/executors.py)")
    x.add_argument("--executor", choices=["local", "ray", "slurm"], default="local",
                   help="local (default): this machine; ray: Ray tasks; slurm: submitit jobs")
    x.add_argument("--workers", type=positive_int, default=1,
                   help="local: runs in parallel worker processes (default 1: in-process)")
    x.add_argument("--ray-address", help="ray: join this cluster (auto or HOST:PORT); default: "
                                         "start a local Ray instance")
    x.add_argument("--cpus-per-run", type=positive_int, default=1,
                   help="ray/slurm: CPUs requested per run (and torch threads)")
    x.add_argument("--gpus-per-run", type=non_negative_float, default=0.0,
                   help="ray/slurm: GPUs requested per run (use with --device cuda)")
    x.add_argument("--slurm-cluster", choices=["auto", "slurm", "local"], default="auto",
                   help="slurm: auto = Slurm when sbatch is available, else submitit's local "
                        "executor; local = always local processes")
    x.add_argument("--slurm-partition", help="slurm: partition to submit to")
    x.add_argument("--slurm-time", type=positive_int, default=240,
                   help="slurm: time limit per job in minutes (default 240)")
    x.add_argument("--slurm-array", action="store_true",
                   help="slurm: submit one job array instead of one job per run")
    return p


def add_setting_flags(p: argparse.ArgumentParser, config_class=None) -> None:
    """A flag ``--<name-with-dashes>`` per run setting (``benchmarks.config``), typed, checked
    and documented by its declaration; not given, it leaves the suite's value (None)."""
    from benchmarks.config import RunConfig, settings

    groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for name, s in settings(config_class or RunConfig).items():
        if s.exclusive is not None and s.exclusive not in groups:
            groups[s.exclusive] = p.add_mutually_exclusive_group()
        where = p if s.exclusive is None else groups[s.exclusive]
        how = {"action": argparse.BooleanOptionalAction} if s.check.parse is None else {
            "type": checked(s.check.parse, s.check.wanted), "choices": s.check.choices}
        where.add_argument("--" + name.replace("_", "-"), default=s.flag_default, help=s.help,
                           **how)


def checked(parse, wanted: str):
    """An argparse ``type`` that says what a value must be."""
    def convert(text: str):
        try:
            return parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
    return convert


def report_parser() -> Parser:
    p = Parser(prog="run_benchmark.py report",
               description="Tables (Markdown, LaTeX, CSV) and figures (PNG, PDF) from finished "
                           "run folders.")
    p.add_argument("run_dirs", nargs="+", help="run folders or folders of run folders")
    p.add_argument("--out", help="output folder (default: <first RUN_DIR>/report)")
    p.add_argument("--compare", type=strategy_pair, metavar="A,B",
                   help="print only the paired difference of strategies A and B (final average "
                        "accuracy, same seeds, 95%% interval) per stream and backbone; B may be "
                        "simplecil or joint, the class-incremental references of runs "
                        "evaluated with --task-agnostic")
    p.add_argument("--strict", action="store_true",
                   help="refuse (exit 2) if a record is unreadable or corrupted, instead of "
                        "skipping it with a warning")
    return p


def strategy_pair(value: str) -> tuple[str, str]:
    names = csv_list(value)
    if len(names) != 2 or names[0] == names[1]:
        raise argparse.ArgumentTypeError(f"give two different strategies as A,B, got {value!r}")
    return names[0], names[1]


def class_counts(value: str) -> list[int]:
    try:
        counts = [int(v) for v in csv_list(value)]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(
            f"expected class counts >= 1 per task like 200,196,100, got {value!r}")
    return counts


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


def resolve_device(choice: str, args=None) -> str:
    """auto -> cuda when available. With a cluster executor the runs execute elsewhere: there
    auto means cuda iff --gpus-per-run > 0, cuda needs --gpus-per-run > 0 (a job gets no GPU
    it did not ask for), and CUDA is not checked on this machine."""
    import torch

    remote = args is not None and args.executor != "local"
    if choice == "auto":
        if remote:
            return "cuda" if args.gpus_per_run > 0 else "cpu"
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and remote and args.gpus_per_run == 0:
        raise UsageError(f"--device cuda with --executor {args.executor}: --gpus-per-run is 0, "
                         "so every run would start without a GPU; give --gpus-per-run N (> 0) "
                         "or --device cpu")
    if choice == "cuda" and not remote and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available; valid here: auto, cpu")
    return choice


def build_configs(args) -> tuple[dict, list[dict]]:
    """Suite + flags -> (the suite with the flags applied, its validated run configs). A flag
    replaces the suite's value (``--epochs`` its steps too: a task has one budget); a flag that
    would have no effect is refused. Raises UsageError before any training."""
    from benchmarks.suitefile import SuiteError, load_suite

    try:  # the suite file first: its mistakes are reported before torch loads
        suite = load_suite(args.suite)
    except SuiteError as e:
        raise UsageError(str(e)) from e
    from benchmarks.config import settings
    from benchmarks.data.datasets import DataError
    from benchmarks.data.streams import PAPER_STREAM, build_stream, is_bundled
    from benchmarks.suites import expand, stream_list
    from models.factory import BackboneError, resolve

    try:
        for key in ("strategies", "backbone", "stream", "seeds", "hparams", *settings()):
            value = getattr(args, key, None)
            if value is not None:
                suite["hparams_from" if key == "hparams" else key] = value
        if args.epochs is not None:  # the flag's budget, not the suite's steps, is trained
            suite["steps_per_task"] = None
        if args.dropkey_schedule is not None and not suite["dropkey"]:
            raise UsageError(f"--dropkey-schedule {args.dropkey_schedule}: DropKey is off in "
                             "this suite (dropkey 0); give --dropkey P (0 < P < 1) too")
        suite["device"] = resolve_device(suite["device"], args)
        if suite["pretrained"] and not Path(suite["pretrained"]).is_file():
            raise UsageError(f"--pretrained: checkpoint file not found: {suite['pretrained']}")
        streams = stream_list(suite["stream"])
        if suite["data_root"] and all(is_bundled(name) for name in streams):
            raise UsageError(f"--data-root {suite['data_root']}: stream "
                             f"{', '.join(streams)} is bundled data and reads no folder; give "
                             "a local dataset's stream (e.g. --stream imagefolder-split5)")
        configs = expand(suite, say=lambda line: print(line, file=sys.stderr))
        if not configs:
            raise UsageError("nothing to run: every strategy of the suite refuses its backbones "
                             "(lines above)")
        if PAPER_STREAM in stream_list(suite["stream"]) and not suite["pretrained"]:
            raise UsageError(f"stream {PAPER_STREAM!r} starts from ImageNet weights: give "
                             "--pretrained FILE (a local timm checkpoint of the backbone)")
        has_base = False  # a stream whose backbone is pre-trained on its base (base_epochs)
        for name in stream_list(suite["stream"]):
            stream = build_stream(name, suite["seeds"][0], data_root=suite["data_root"],
                                  val_fraction=suite["val_fraction"], img_size=suite["img_size"])
            c, h, _ = stream.image_shape
            for backbone in stream_list(suite["backbone"]):
                resolve(backbone, img_size=h, in_chans=c)
            has_base = has_base or stream.base is not None
        if args.base_epochs is not None and (suite["pretrained"] or not has_base):
            why = ("--pretrained FILE replaces it" if suite["pretrained"] else
                   f"stream {', '.join(stream_list(suite['stream']))} has no base to pre-train on")
            raise UsageError(f"--base-epochs: no base pre-training runs ({why})")
    except (SuiteError, DataError, BackboneError) as e:
        raise UsageError(str(e)) from e
    return suite, configs


def announce_budget(suite: dict, args) -> None:
    """One line before any work: the budget every run trains with, and where it comes from
    (a budget flag replaces the suite's, ``build_configs``)."""
    if suite["steps_per_task"] is not None:
        n, unit = suite["steps_per_task"], "step"
    else:
        n, unit = suite["epochs"], "epoch"
    source = next((flag for flag, value in (("--epochs", args.epochs),
                                            ("--steps-per-task", args.steps_per_task))
                   if value is not None), "suite default")
    print(f"budget: {n} {unit}{'' if n == 1 else 's'} per task ({source})", file=sys.stderr,
          flush=True)


def executor_options(args):
    from benchmarks.executors import ExecutorError, ExecutorOptions, check_available

    options = ExecutorOptions(
        executor=args.executor, workers=args.workers, ray_address=args.ray_address,
        cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run,
        slurm_cluster=args.slurm_cluster, slurm_partition=args.slurm_partition,
        slurm_time_min=args.slurm_time, slurm_array=args.slurm_array)
    try:
        check_available(options)
    except ExecutorError as e:
        raise UsageError(str(e)) from e
    return options


def cmd_run(argv: list[str]) -> int:
    """Run every config of the suite through the executor, then report the finished runs.
    Exit code 1 if a run failed (the others still ran and are reported)."""
    args = run_parser().parse_args(argv)
    options = executor_options(args)
    suite, configs = build_configs(args)
    out = Path(args.out or ROOT / "runs" / Path(args.suite).stem)
    check_report_folder(out / "report")
    check_lockable(out=out, cache=Path(args.cache))
    announce_budget(suite, args)
    from benchmarks.executors import run_all
    from results.records import find_records

    t0 = time.time()
    try:
        outcomes = run_all(configs, out, Path(args.cache), options,
                           progress=not args.quiet, tensorboard=args.tensorboard)
    except KeyboardInterrupt:
        print(f"\ninterrupted: every finished task is on disk under {out}; the same command "
              "resumes", file=sys.stderr)
        return 130
    done = [out / c.run_id for c, o in zip(configs, outcomes, strict=True)
            if o.status == "finished"]
    if done:
        print_report(find_records(done), out / "report")
    print(f"\n{len(done)} of {len(configs)} runs finished in {time.time() - t0:.0f} s; "
          f"output folder: {out}")
    failed = [o for o in outcomes if o.status == "failed"]
    for o in outcomes:
        if o.status != "finished":
            print(f"{o.status}: {o.label}: {o.error}", file=sys.stderr)
    if failed:
        print(f"{len(failed)} run(s) failed; tracebacks are in their record.json; the same "
              "command retries them", file=sys.stderr)
    return 1 if failed else 0


def check_lockable(**folders: Path) -> None:
    """Refuse, before any work, a folder (``--out``, ``--cache``) where runs could not create
    files or take their locks (``atomicio``: Lustre without ``-o flock``)."""
    from atomicio import LocksUnsupported, check_locks

    for flag, folder in folders.items():
        try:
            check_locks(folder)
        except LocksUnsupported as e:
            raise UsageError(f"--{flag} {folder}: {e}") from e
        except OSError as e:
            raise UsageError(f"--{flag} {folder}: cannot create files there "
                             f"({e.strerror})") from e


def check_report_folder(out: Path) -> None:
    """Refuse, before any work, a report folder that holds files a report would replace."""
    from results.report import ReportError
    from results.report import check_report_folder as check

    try:
        check(out)
    except ReportError as e:
        raise UsageError(str(e)) from e


def print_report(records: list[dict], out: Path) -> None:
    """Summary table, then the paper-style table (final accuracy per task) for every (stream,
    backbone); writes every table and figure into ``out`` and lists the files."""
    from results.arms import group_records
    from results.formats import as_text
    from results.per_task import per_task_table
    from results.report import ReportError, run_order, write_report
    from results.summary import budget_note, format_summary, summary
    from results.task_agnostic import task_agnostic_table

    records = run_order(records)
    try:
        paths = write_report(records, out)
    except ReportError as e:
        raise UsageError(str(e)) from e
    note = budget_note(records)
    if note:
        print(note)
    print(format_summary(summary(records)))
    for (stream, backbone), recs in group_records(records).items():
        print(f"\n{stream} / {backbone}: final accuracy per task (%); probe_acc = the converged "
              "linear\nprobe on the task's starting features")
        print(as_text(per_task_table(recs).round(1)))
    agnostic = task_agnostic_table(records)
    groups = [] if agnostic.empty else agnostic.groupby(["stream", "backbone"], sort=False)
    for (stream, backbone), rows in groups:
        print(f"\n{stream} / {backbone}: without task ids (class-incremental: a class is a "
              "(task, label)\npair, right when both are; the task is inferred by the rule)")
        print(as_text(rows.drop(columns=["stream", "backbone"]).set_index("strategy")))
    figures = sorted(str(p) for p in paths if p.suffix == ".png")
    print(f"\nTables (md, tex, csv) and figures (png, pdf) in {out}:")
    print("\n".join(f"  {p}" for p in figures))


def cmd_report(argv: list[str]) -> int:
    args = report_parser().parse_args(argv)
    from results.records import RecordError, find_records

    missing = [d for d in args.run_dirs if not Path(d).is_dir()]
    if missing:
        raise UsageError(f"run folder not found: {missing[0]}")
    try:
        records = find_records(args.run_dirs, strict=args.strict, warn=warn)
    except RecordError as e:
        raise UsageError(f"{e} (without --strict it is skipped)") from e
    if not records:
        raise UsageError(f"no finished run records under {', '.join(args.run_dirs)}")
    if args.compare:
        return print_comparison(records, *args.compare)
    out = Path(args.out) if args.out else Path(args.run_dirs[0]) / "report"
    check_report_folder(out)
    print_report(records, out)
    return 0


def print_comparison(records: list[dict], a: str, b: str) -> int:
    from results.arms import by_arm
    from results.comparisons import compare
    from results.formats import as_text

    table = compare(records, a, b)
    if table.empty:
        found = sorted(set(by_arm(records)))
        raise UsageError(f"--compare {a},{b}: no stream and backbone with finished runs of both "
                         f"on common seeds; strategies found: {', '.join(found)} (and, for runs "
                         "evaluated with --task-agnostic, the references simplecil and joint)")
    print(as_text(table, index=False))
    return 0


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


def cmd_tune(argv: list[str]) -> int:
    """Tune every strategy of the suite on validation data; write tuned/<suite>.yaml."""
    args = run_parser(tune=True).parse_args(argv)
    options = executor_options(args)
    args.hparams = "registered"  # trials search around the registered values
    suite, _ = build_configs(args)  # validates everything before any trial
    from benchmarks.suites import tuned_path
    from benchmarks.tuning import tune

    out = Path(args.out or ROOT / "runs" / f"tune-{suite['suite']}")
    check_lockable(out=out, cache=Path(args.cache))
    announce_budget(suite, args)
    try:
        result = tune(suite, out, Path(args.cache), options, args.budget, args.tune_tasks)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished trials are on disk under {out}; the same command "
              "resumes", file=sys.stderr)
        return 130
    for name, entry in result["strategies"].items():
        scores = ", ".join("failed" if t["val_acc"] is None else f"{100 * t['val_acc']:.1f}"
                           for t in entry["trials"])
        best = "none" if entry["chosen"] is None else (
            f"{100 * entry['val_acc']:.1f}% with {entry['chosen']}")
        print(f"{name}: trials (val acc %) {scores}\n  chosen: {best}")
    print(f"\nwritten: {tuned_path(suite['suite'])}; use it with --hparams tuned")
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
    p.add_argument("--preprocess", choices=["none", "deit"], help="input preset")
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


COMMANDS = {"report": cmd_report, "cache": cmd_cache, "storage": cmd_storage,
            "backbones": cmd_backbones, "tune": cmd_tune}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] in COMMANDS:
            return COMMANDS[argv[0]](argv[1:])
        return cmd_run(argv)
    except UsageError as e:
        print(f"run_benchmark.py: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # outside a sweep (which resumes): e.g. while a report is drawn
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like: the reader left
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout
        return 141


if __name__ == "__main__":
    sys.exit(main())
