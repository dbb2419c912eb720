"""Where the runs of a sweep execute. Every executor calls the same function, :func:`execute`
(``run_one`` of one config, with its failures contained), so a run gives the same folder
whether it ran in-process, in a worker process, as a Ray task or as a Slurm job.

- ``local``: in this process, one run after the other; or ``workers`` > 1 processes
  (``concurrent.futures`` with spawned workers, torch threads split between them). On a
  multi-GPU machine worker k sees only GPU k mod n (``CUDA_VISIBLE_DEVICES`` set to one of the
  GPUs visible to the sweep, before the worker touches CUDA), so its runs' ``cuda`` is that GPU
  rather than every run's being GPU 0.
- ``ray``: each run a Ray task asking for ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs; joins
  the cluster at ``ray_address`` (``auto`` or ``HOST:PORT``) or starts a local Ray instance.
- ``slurm``: through submitit, one job per run or one job array (``slurm_array``), with
  partition, time limit, CPUs and GPUs per job (whole GPUs: Slurm does not share one between
  jobs); ``slurm_cluster="local"`` runs the same jobs as local processes (submitit's local
  executor: how the path is tested without Slurm), ``auto`` uses Slurm when ``sbatch`` is on
  the PATH.

Ray and submitit are optional extras (``pip install -e '.[ray]'``, ``'.[slurm]'``). On a cluster
the output and cache folders must be on a filesystem every node sees, and every node needs the
project installed (the same ``make install`` / ``pip install -e .``, with the ``wandb`` extra
for ``--wandb``).

Every run gets the same :class:`benchmarks.trackers.Trackers` (TensorBoard, W&B): run options
passed with the config, which open the trackers in the process that runs it.

A run that raises is recorded as failed (traceback in its ``record.json``) and the sweep goes
on; a run whose folder is locked by another sweep is skipped.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from benchmarks.config import RunConfig
from benchmarks.trackers import WANDB_EXTRA, Trackers, wandb_available

EXECUTORS = ("local", "ray", "slurm")
EXTRAS = {"ray": ("ray", "ray"), "slurm": ("submitit", "slurm")}
SLURM_CLUSTERS = ("auto", "slurm", "local")


class ExecutorError(RuntimeError):
    """An executor cannot be used as asked (missing extra, bad option)."""


@dataclass
class Outcome:
    """What became of one run: ``finished``, ``failed`` (``error`` = the exception's last line)
    or ``locked`` (another process was running it)."""

    run_id: str
    label: str
    status: str
    error: str | None = None


@dataclass
class ExecutorOptions:
    executor: str = "local"
    workers: int = 1
    ray_address: str | None = None
    cpus_per_run: int = 1
    gpus_per_run: float = 0.0
    slurm_cluster: str = "auto"
    slurm_partition: str | None = None
    slurm_time_min: int = 240
    slurm_array: bool = False


def run_label(config: RunConfig) -> str:
    return f"{config.strategy} on {config.backbone} / {config.stream} seed {config.seed}"


def execute(config: RunConfig, out: str, cache: str, progress: bool = False,
            trackers: Trackers | None = None, threads: int | None = None) -> Outcome:
    """Run one config to its folder under ``out``; never raises for a failing run."""
    import torch

    from benchmarks.resume import RunLocked
    from benchmarks.runner import run_one

    if threads:
        torch.set_num_threads(threads)
    rid, label = config.run_id, run_label(config)
    try:
        run_one(config, Path(out), Path(cache), progress=progress, trackers=trackers)
        return Outcome(rid, label, "finished")
    except RunLocked as e:
        return Outcome(rid, label, "locked", str(e))
    except Exception as e:
        last = traceback.format_exception_only(type(e), e)[-1].strip()
        return Outcome(rid, label, "failed", last)


def check_available(options: ExecutorOptions) -> None:
    """Raise ExecutorError, before any work, if the executor cannot run as configured."""
    if options.executor not in EXECUTORS:
        raise ExecutorError(f"unknown executor {options.executor!r}; valid: "
                            f"{', '.join(EXECUTORS)}")
    if options.workers > 1 and options.executor != "local":
        raise ExecutorError("--workers is for --executor local; Ray and Slurm size themselves "
                            "with --cpus-per-run / --gpus-per-run")
    if options.slurm_cluster not in SLURM_CLUSTERS:
        raise ExecutorError(f"unknown Slurm cluster {options.slurm_cluster!r}; valid: "
                            f"{', '.join(SLURM_CLUSTERS)}")
    if options.executor == "slurm" and options.gpus_per_run != int(options.gpus_per_run):
        raise ExecutorError(f"--gpus-per-run {options.gpus_per_run:g}: Slurm allocates whole "
                            "GPUs per job; use a whole number (or --executor ray for fractional "
                            "GPUs)")
    if options.executor in EXTRAS:
        module, extra = EXTRAS[options.executor]
        try:
            __import__(module)
        except ImportError as e:
            raise ExecutorError(f"--executor {options.executor} needs {module}, which is not "
                                f"installed: pip install -e '.[{extra}]'") from e


Report = Callable[[int, int, Outcome], None]


def print_outcome(k: int, n: int, outcome: Outcome) -> None:
    note = "" if outcome.status == "finished" else f": {outcome.error}"
    print(f"[{k}/{n}] {outcome.status}: {outcome.label}{note}", file=sys.stderr, flush=True)


def run_all(configs: list[RunConfig], out: Path, cache: Path, options: ExecutorOptions,
            progress: bool = False, trackers: Trackers | None = None,
            report: Report = print_outcome) -> list[Outcome]:
    """Every config through the chosen executor; outcomes in ``configs`` order; every run
    logged to ``trackers`` too (none by default)."""
    check_available(options)
    if trackers is not None and trackers.wandb_project and not wandb_available():
        raise ExecutorError(f"W&B tracking needs wandb, which is not installed: {WANDB_EXTRA}")
    runner = {"local": _local, "ray": _ray, "slurm": _slurm}[options.executor]
    return runner(configs, str(out), str(cache), options, progress, trackers or Trackers(),
                  report)


def visible_gpus() -> list[str]:
    """The CUDA devices this process sees, as ``CUDA_VISIBLE_DEVICES`` entries: the ones that
    variable lists, if set (a worker must name GPU 3, not 0, under ``CUDA_VISIBLE_DEVICES=3,5``),
    else 0..n-1; empty without CUDA."""
    import torch

    n = torch.cuda.device_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is None:
        return [str(i) for i in range(n)]
    return [i.strip() for i in listed.split(",")][:n]


def use_one_gpu(gpus: list[str], counter) -> None:
    """Worker initializer: the k-th worker started (k from the shared ``counter``) sees only
    ``gpus[k % len(gpus)]``. It runs before the worker's first task, so before CUDA reads
    ``CUDA_VISIBLE_DEVICES``."""
    with counter.get_lock():
        k = counter.value
        counter.value += 1
    os.environ["CUDA_VISIBLE_DEVICES"] = gpus[k % len(gpus)]


def _local(configs, out, cache, options, progress, trackers, report):
    n = len(configs)
    if options.workers <= 1:
        outcomes = []
        for k, cfg in enumerate(configs, 1):
            print(f"[{k}/{n}] {run_label(cfg)}", file=sys.stderr, flush=True)
            outcomes.append(execute(cfg, out, cache, progress, trackers))
            if outcomes[-1].status != "finished":
                report(k, n, outcomes[-1])
        return outcomes
    threads = max(1, (os.cpu_count() or 1) // options.workers)
    results: dict[int, Outcome] = {}
    context, gpus = get_context("spawn"), visible_gpus()
    one_gpu = {"initializer": use_one_gpu,
               "initargs": (gpus, context.Value("i", 0))} if gpus else {}
    with ProcessPoolExecutor(max_workers=options.workers, mp_context=context,
                             **one_gpu) as pool:
        futures = {pool.submit(execute, cfg, out, cache, False, trackers, threads): i
                   for i, cfg in enumerate(configs)}
        for k, fut in enumerate(as_completed(futures), 1):
            results[futures[fut]] = fut.result()
            report(k, n, results[futures[fut]])
    return [results[i] for i in range(n)]


def _ray(configs, out, cache, options, progress, trackers, report):
    import ray

    started = not ray.is_initialized()
    if started:
        if options.ray_address:
            ray.init(address=options.ray_address, include_dashboard=False,
                     log_to_driver=False)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(num_cpus=options.cpus_per_run, num_gpus=options.gpus_per_run)(execute)
        refs = [task.remote(cfg, out, cache, False, trackers, options.cpus_per_run)
                for cfg in configs]
        index = {ref: i for i, ref in enumerate(refs)}
        results: dict[int, Outcome] = {}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            i = index[done[0]]
            try:
                results[i] = ray.get(done[0])
            except Exception as e:  # the task itself died (worker lost, out of memory)
                results[i] = Outcome(configs[i].run_id, run_label(configs[i]), "failed",
                                     f"Ray: {e}")
            report(len(results), len(configs), results[i])
        return [results[i] for i in range(len(configs))]
    finally:
        if started:
            ray.shutdown()


def _slurm(configs, out, cache, options, progress, trackers, report):
    import submitit

    cluster = None if options.slurm_cluster == "auto" else options.slurm_cluster
    executor = submitit.AutoExecutor(folder=Path(out) / "slurm" / "%j", cluster=cluster)
    params = {"timeout_min": options.slurm_time_min, "cpus_per_task": options.cpus_per_run,
              "name": "vitcl-run"}
    if executor.cluster == "slurm":
        if options.gpus_per_run:
            params["gpus_per_node"] = int(options.gpus_per_run)
        if options.slurm_partition:
            params["slurm_partition"] = options.slurm_partition
    executor.update_parameters(**params)
    print(f"submitit: {executor.cluster} executor, logs in {Path(out) / 'slurm'}",
          file=sys.stderr, flush=True)
    n = len(configs)
    args = (out, cache, False, trackers, options.cpus_per_run)
    if options.slurm_array:
        jobs = executor.map_array(execute, configs, *[[a] * n for a in args])
    else:
        jobs = [executor.submit(execute, cfg, *args) for cfg in configs]
    outcomes = []
    for k, (cfg, job) in enumerate(zip(configs, jobs, strict=True), 1):
        try:
            outcomes.append(job.result())
        except Exception as e:  # the job died (time limit, node failure, cancelled)
            outcomes.append(Outcome(cfg.run_id, run_label(cfg), "failed",
                                    f"Slurm job {job.job_id}: {str(e).splitlines()[0]}"))
        report(k, n, outcomes[-1])
    return outcomes
