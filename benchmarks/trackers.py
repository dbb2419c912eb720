"""Experiment trackers: a run's progress sent to TensorBoard (``--tensorboard``) and Weights &
Biases (``--wandb PROJECT``) as well as to its record files.

Both get the same set (``docs/running.md``, "Trackers"): the run's config; per training epoch
the loss and accuracy (``train/loss/task_<t>``, ``train/accuracy/task_<t>``); after every task
i the row of the accuracy matrix, the accuracy of every task seen so far
(``eval/accuracy/task_<j>``, j <= i, at task step i), the storage so far
(``storage/total_mib``, ``storage/task_mib``, ...) and the timing so far (``timing/train_s``,
``timing/wall_s``, ...); at the end the final metrics (``final/<metric>``).

Which trackers a run uses is a run option (:class:`Trackers`, passed to ``run_one`` by every
executor), not a run setting: it changes neither the run id nor the record. The runner opens
one :class:`Tracker` per run (:meth:`Trackers.open`) and calls it at fixed points: the config
once the run starts or resumes, every epoch (``benchmarks.plugins.TrainLog``), every task before
the task's state is kept (so a task is logged at least once: an interrupted task is redone and
logged again), the final metrics, and ``close``.

TensorBoard writes event files into ``<run folder>/tensorboard`` (a resumed run adds a file; the
steps continue). W&B logs through Avalanche's ``WandBLogger`` into a W&B run whose id is the
suite's run id, with ``resume="allow"``: a resumed run continues its W&B run. ``wandb`` is an
optional extra (``pip install -e '.[wandb]'``); the usual ``WANDB_*`` variables apply
(``WANDB_MODE=offline``, ``WANDB_ENTITY``, ...).

This module imports neither torch nor wandb at import time (the CLI checks ``--wandb`` with it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path

WANDB_EXTRA = "pip install -e '.[wandb]'"


@dataclass(frozen=True)
class Trackers:
    """Where a run is also logged: TensorBoard event files in its folder, a W&B project. Run
    options (how a run reports, never what it computes): outside the config and the run id."""

    tensorboard: bool = False
    wandb_project: str | None = None

    def open(self, folder: Path, config: dict) -> Tracker:
        """The run's tracker (one calling each asked-for tracker, or one doing nothing)."""
        opened: list[Tracker] = []
        try:
            if self.tensorboard:
                opened.append(TensorBoardTracker(Path(folder)))
            if self.wandb_project:
                opened.append(WandBTracker(self.wandb_project, Path(folder), config))
        except BaseException:
            for tracker in opened:
                tracker.close(failed=True)
            raise
        return opened[0] if len(opened) == 1 else TrackerGroup(opened)


def wandb_available() -> bool:
    return importlib.util.find_spec("wandb") is not None


def wandb_project(value: str) -> str:
    """``--wandb PROJECT``: a project name, refused (before any work) without the extra."""
    if not value.strip():
        raise argparse.ArgumentTypeError("expected a W&B project name")
    if not wandb_available():
        raise argparse.ArgumentTypeError(f"needs wandb, which is not installed: {WANDB_EXTRA}")
    return value.strip()


class Tracker:
    """The tracker interface; this base logs nothing (a run without trackers)."""

    def log_config(self, config: dict) -> None:
        """The run's config (``config.yaml``), at every start of the run."""

    def log_epoch(self, step: int, row: dict) -> None:
        """One training epoch: ``row`` of ``train_log.csv`` (task, epoch, loss, accuracy,
        seconds); ``step`` counts the run's epochs from 1."""

    def log_task(self, i: int, accuracies: list[float], scalars: dict[str, float]) -> None:
        """After task i: ``accuracies[j]`` = accuracy on task j <= i (row i of the accuracy
        matrix); ``scalars``: storage and timing so far (:func:`task_scalars`)."""

    def log_final(self, record: dict) -> None:
        """The finished run's record: its final metrics (:func:`final_scalars`)."""

    def close(self, failed: bool = False) -> None:
        """Flush and end (``failed``: the run raised or was interrupted)."""


class TrackerGroup(Tracker):
    """Several trackers, called in turn."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def log_config(self, config):
        for t in self.trackers:
            t.log_config(config)

    def log_epoch(self, step, row):
        for t in self.trackers:
            t.log_epoch(step, row)

    def log_task(self, i, accuracies, scalars):
        for t in self.trackers:
            t.log_task(i, accuracies, scalars)

    def log_final(self, record):
        for t in self.trackers:
            t.log_final(record)

    def close(self, failed=False):
        for t in self.trackers:
            t.close(failed)


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def task_scalars(record: dict, i: int) -> dict[str, float]:
    """Storage and timing after task i, from the record so far: ``storage/<key>`` for the run's
    totals (``total_mib``, ``base_mib``, ...), ``storage/task_<key>`` for task i's entry of the
    per-task lists (``per_task_mib`` -> ``task_mib``, ``per_task_file_bytes`` ->
    ``task_file_bytes``, ...), ``timing/<field>`` for every timing field set."""
    out = {}
    for key, value in (record.get("storage") or {}).items():
        if _number(value):
            out[f"storage/{key}"] = value
        elif key.startswith("per_task_") and isinstance(value, list) and len(value) > i \
                and _number(value[i]):
            out[f"storage/task_{key.removeprefix('per_task_')}"] = value[i]
    timing = record.get("timing") or {}
    timing = asdict(timing) if is_dataclass(timing) else timing
    out.update({f"timing/{key}": value for key, value in timing.items() if _number(value)})
    return out


def final_scalars(record: dict) -> dict[str, float]:
    """``final/<metric>`` for every numeric metric of the finished record."""
    return {f"final/{key}": value for key, value in (record.get("metrics") or {}).items()
            if _number(value)}


def run_name(config: dict) -> str:
    return (f"{config.get('strategy')} {config.get('backbone')} {config.get('stream')} "
            f"seed {config.get('seed')}")


class TensorBoardTracker(Tracker):
    """TensorBoard event files in ``<folder>/tensorboard``: scalars under the tags above, the
    config as text (``config``) and, at the end, as hparams with the final metrics."""

    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder / "tensorboard"))
        self.config: dict = {}

    def log_config(self, config):
        import yaml

        self.config = config
        text = yaml.safe_dump(config, sort_keys=True)
        self.writer.add_text("config", "\n".join("    " + line for line in text.splitlines()),
                             0)  # indented: a code block in TensorBoard's markdown
        self.writer.flush()

    def log_epoch(self, step, row):
        self.writer.add_scalar(f"train/loss/task_{row['task']}", row["loss"], step)
        self.writer.add_scalar(f"train/accuracy/task_{row['task']}", row["accuracy"], step)

    def log_task(self, i, accuracies, scalars):
        for j, acc in enumerate(accuracies):
            self.writer.add_scalar(f"eval/accuracy/task_{j}", acc, i)
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, i)
        self.writer.flush()

    def log_final(self, record):
        from torch.utils.tensorboard.summary import hparams

        step = len(record["acc_matrix"]) - 1
        final = final_scalars(record)
        for tag, value in final.items():
            self.writer.add_scalar(tag, value, step)
        # the hparams plugin's view: one session of the flattened config with its final metrics
        # (written into this run's own event file, not the sub-run add_hparams would make)
        file_writer = self.writer._get_file_writer()
        for summary in hparams(hparam_values(self.config), final):
            file_writer.add_summary(summary, step)
        self.writer.flush()

    def close(self, failed=False):
        self.writer.close()


def hparam_values(config: dict, prefix: str = "") -> dict:
    """The config flattened to TensorBoard hparams: ``hparams.lr``-style keys, numbers, strings
    and booleans as they are, lists as JSON text, unset values left out."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(hparam_values(value, f"{name}."))
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        elif value is not None:
            out[name] = json.dumps(value)
    return out


class WandBTracker(Tracker):
    """A W&B run through Avalanche's ``WandBLogger``: id = the suite's run id (the run folder's
    name), ``resume="allow"``, local files in ``<folder>/wandb``. The per-epoch values are
    plotted against ``epoch`` and the per-task ones against ``task`` (W&B step metrics), so a
    resumed run's values continue its curves; the final metrics go to the run's summary."""

    def __init__(self, project: str, folder: Path, config: dict):
        from avalanche.logging import WandBLogger

        params = {"id": folder.name, "resume": "allow", "group": config.get("suite")}
        # Avalanche's logger starts (or resumes) the W&B run in its constructor; the run's
        # values are logged through its wandb handle: its own log_single_metric puts every
        # value at a single step, which cannot hold both epochs and tasks
        self.logger = WandBLogger(project_name=project, run_name=run_name(config),
                                  save_code=False, dir=str(folder), params=params)
        self.run = self.logger.wandb.run
        self.run.define_metric("epoch")
        self.run.define_metric("train/*", step_metric="epoch")
        self.run.define_metric("task")
        for pattern in ("eval/*", "storage/*", "timing/*"):
            self.run.define_metric(pattern, step_metric="task")

    def log_config(self, config):
        self.run.config.update({**config, "run_id": self.run.id}, allow_val_change=True)

    def log_epoch(self, step, row):
        t = row["task"]
        self.run.log({"epoch": step, f"train/loss/task_{t}": row["loss"],
                      f"train/accuracy/task_{t}": row["accuracy"]})

    def log_task(self, i, accuracies, scalars):
        self.run.log({"task": i, **{f"eval/accuracy/task_{j}": acc
                                    for j, acc in enumerate(accuracies)}, **scalars})

    def log_final(self, record):
        final = {k: v for k, v in final_scalars(record).items() if math.isfinite(v)}
        self.run.summary.update(final)

    def close(self, failed=False):
        self.run.finish(exit_code=1 if failed else 0)
