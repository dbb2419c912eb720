#!/usr/bin/env python
"""Run continual-learning suites on ViT backbones and report their results.

  python run_benchmark.py --suite default [--strategies a,b] [--backbone NAME] [--seeds 0,1]
                          [--epochs N] [--out DIR] [--executor local|ray|slurm] ...
  python run_benchmark.py report RUN_DIR [RUN_DIR ...]
  python run_benchmark.py backbones [--format table|json]
  python run_benchmark.py cache --suite paper --data-root DIR [--cache DIR]
  python run_benchmark.py prepare --dataset cub|cars|sketches|wikiart --archive FILE ...
                                  --data-root DIR
  python run_benchmark.py storage --backbone NAME --classes 200,196,100 [--base-classes 1000]
                                  [--format table|json|csv]

Every input is validated before any training: bad input prints one line on stderr naming the
problem and the valid choices, and exits with code 2 without writing anything. A sweep skips
finished runs and resumes interrupted ones; it exits with 1 if a run failed (the others still
ran), 130 on Ctrl-C (finished tasks stay on disk).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the hub only on request (--download)

from benchmarks.commands.inventory import cmd_backbones, cmd_cache, cmd_storage  # noqa: E402
from benchmarks.commands.parsing import (  # noqa: E402  (torch-free)
    Parser,
    UsageError,
    add_setting_flags,
    check_lockable,
    check_report_folder,
    csv_list,
    non_negative_float,
    positive_int,
    seed_list,
)
from benchmarks.commands.prepare import cmd_prepare  # noqa: E402
from benchmarks.commands.report import cmd_report, print_report  # noqa: E402
from benchmarks.config import DEFAULT_CACHE  # noqa: E402

ROOT = Path(__file__).resolve().parent


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
    if not tune:  # trackers (benchmarks/trackers.py); tuning trials are not tracked
        from benchmarks.trackers import wandb_project

        p.add_argument("--tensorboard", action="store_true",
                       help="also log every run as TensorBoard event files in its folder")
        p.add_argument("--wandb", metavar="PROJECT", type=wandb_project,
                       help="also log every run to this Weights & Biases project (W&B run id "
                            "= the run id; a resumed run continues it; needs the wandb extra)")
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
    from benchmarks.data.streams import PAPER_STREAM, is_bundled, stream_image_shape
    from benchmarks.suites import expand, stream_list
    from models.factory import HUB, BackboneError, hub_weights, resolve

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
        hub = suite["pretrained"] == HUB  # the backbones' timm weights, from the HF cache
        if suite["pretrained"] and not hub and not Path(suite["pretrained"]).is_file():
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
        if PAPER_STREAM in streams and not suite["pretrained"]:
            raise UsageError(f"stream {PAPER_STREAM!r} starts from ImageNet weights: give "
                             "--pretrained FILE (a local timm checkpoint of the backbone) or "
                             "--pretrained hub (its timm weights)")
        for backbone in stream_list(suite["backbone"]) if hub else ():
            hub_weights(backbone, network=suite["download"])  # cached, or fetchable: else 1 line
        for name in streams:  # the shapes and the data folders' layouts, no data loaded
            c, h, _ = stream_image_shape(name, data_root=suite["data_root"],
                                         img_size=suite["img_size"], check_sizes=True,
                                         download=suite["download"])
            for backbone in stream_list(suite["backbone"]):
                resolve(backbone, img_size=h, in_chans=c)
        has_base = any(is_bundled(name) for name in streams)  # base pre-training: bundled only
        if args.base_epochs is not None and (suite["pretrained"] or not has_base):
            source = "hub" if hub else "FILE"
            why = (f"--pretrained {source} replaces it" if suite["pretrained"] else
                   f"stream {', '.join(stream_list(suite['stream']))} has no base to pre-train on")
            raise UsageError(f"--base-epochs: no base pre-training runs ({why})")
        for backbone in stream_list(suite["backbone"]) if hub else ():  # all else valid: fetch
            hub_weights(backbone, fetch=True, network=suite["download"])
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
    from benchmarks.trackers import Trackers
    from results.records import find_records

    t0 = time.time()
    try:
        outcomes = run_all(configs, out, Path(args.cache), options, progress=not args.quiet,
                           trackers=Trackers(args.tensorboard, args.wandb))
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


COMMANDS = {"report": cmd_report, "cache": cmd_cache, "storage": cmd_storage,
            "backbones": cmd_backbones, "tune": cmd_tune, "prepare": cmd_prepare}


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
