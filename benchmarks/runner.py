"""The single-run loop: ``run_one(config, out_dir)`` -> record, whatever process runs it.

For every task i of the stream: train the strategy on task i (Avalanche ``train``), evaluate every
task seen so far with its own head (``eval`` on ``test_stream[:i+1]``), count correct predictions
per task, save what predicting task i needs (``tasks/task_<i>.pt``: head, bit-packed masks, ...),
save what continuing the run needs (``resume.pt``, :mod:`benchmarks.resume`) and write the run
folder atomically (config.yaml, rows.csv, record.json) — so a killed run leaves every finished
task on disk and the next ``run_one`` of the same config continues after it.
"""

from __future__ import annotations

import math
import os
import random
import resource
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from torch.utils.data import DataLoader
from tqdm import tqdm

from benchmarks.inputs import NONE, InputPipeline
from benchmarks.resume import clear_resume, file_lock, load_resume, restore, run_lock, save_resume
from benchmarks.streams import Stream, build_stream
from models.attention import set_dropkey
from models.factory import create_backbone, resolve
from models.masks import mask_movement
from models.pretrain import pretrained_checkpoint
from models.tasks import save_task_file
from results.metrics import accuracy_from_counts, all_metrics
from results.records import RecordError, atomic_write_text, load_record, run_id, write_run
from strategies import get_strategy
from strategies.heads import ProbeHeadPlugin
from strategies.registry import TrainSettings
from strategies.storage import param_count, shared_items, storage_summary


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class EvalCounter(SupervisedPlugin):
    """Correct predictions, sample count and summed loss per evaluated experience. The sums
    stay on the device during the experience and are read once at its end: no device sync
    per batch."""

    def __init__(self):
        super().__init__()
        self.counts: dict[int, list] = {}
        self._sum: list = [0, 0, 0.0]  # correct, samples, loss (float64) of this experience

    def before_eval(self, strategy, **kwargs):
        self.counts = {}

    def before_eval_exp(self, strategy, **kwargs):
        self._sum = [0, 0, 0.0]

    def after_eval_iteration(self, strategy, **kwargs):
        out, y = strategy.mb_output, strategy.mb_y
        s = self._sum
        s[0] = s[0] + (out.argmax(1) == y).sum()
        s[1] += len(y)
        s[2] = s[2] + F.cross_entropy(out, y, reduction="sum").double()

    def after_eval_exp(self, strategy, **kwargs):
        correct, n, loss = self._sum
        self.counts[strategy.experience.current_experience] = [int(correct), n, float(loss)]


class StepTimer(SupervisedPlugin):
    """Seconds inside training iterations (forward, losses, backward, update and every plugin's
    iteration hooks) and evaluation iterations (forward): a run's wall time minus these is the
    runner's and Avalanche's own overhead (data loading, callbacks, probes, checkpoints,
    records). CPU timings; on a GPU without synchronization they are launch times."""

    def __init__(self):
        super().__init__()
        self.train_s = self.eval_s = 0.0
        self._start = 0.0

    def before_training_iteration(self, strategy, **kwargs):
        self._start = time.perf_counter()

    def after_training_iteration(self, strategy, **kwargs):
        self.train_s += time.perf_counter() - self._start

    def before_eval_iteration(self, strategy, **kwargs):
        self._start = time.perf_counter()

    def after_eval_iteration(self, strategy, **kwargs):
        self.eval_s += time.perf_counter() - self._start

    def take(self) -> tuple[float, float]:
        """(training, evaluation) seconds since the last call."""
        out = (self.train_s, self.eval_s)
        self.train_s = self.eval_s = 0.0
        return out


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite: the run stops."""


class TrainLog(SupervisedPlugin):
    """Per-epoch training loss and accuracy of every task: rows for ``train_log.csv``, and
    TensorBoard scalars when a ``SummaryWriter`` is given. A NaN or infinite epoch loss stops
    the run (checked once per epoch: the per-step sums stay on the device, without syncs)."""

    FIELDS = ("task", "epoch", "loss", "accuracy", "seconds")

    def __init__(self, writer=None):
        super().__init__()
        self.rows: list[dict] = []
        self.writer = writer
        self._sum = [0.0, 0, 0, 0.0]  # loss sum, correct, samples, start time

    def before_training_epoch(self, strategy, **kwargs):
        self._sum = [0.0, 0, 0, time.perf_counter()]

    def after_training_iteration(self, strategy, **kwargs):
        n = len(strategy.mb_y)  # sums stay tensors: no device sync per step
        self._sum[0] = self._sum[0] + strategy.loss.detach() * n
        self._sum[1] = self._sum[1] + (strategy.mb_output.argmax(1) == strategy.mb_y).sum()
        self._sum[2] += n

    def after_training_epoch(self, strategy, **kwargs):
        loss, correct, n, start = self._sum
        row = {"task": strategy.experience.current_experience,
               "epoch": strategy.clock.train_exp_epochs, "loss": float(loss) / max(n, 1),
               "accuracy": float(correct) / max(n, 1), "seconds": time.perf_counter() - start}
        if not math.isfinite(row["loss"]):
            raise NonFiniteLoss(
                f"training loss is {row['loss']} in task {row['task']}, epoch {row['epoch']}: "
                "the run stops (lower the learning rate, or check the data)")
        self.rows.append(row)
        if self.writer is not None:
            step = len(self.rows)
            self.writer.add_scalar(f"train/loss/task_{row['task']}", row["loss"], step)
            self.writer.add_scalar(f"train/accuracy/task_{row['task']}", row["accuracy"], step)

    def csv(self) -> str:
        lines = [",".join(self.FIELDS)]
        lines += [",".join(str(r[k]) for k in self.FIELDS) for r in self.rows]
        return "\n".join(lines) + "\n"


def tensorboard_writer(folder: Path):
    """A TensorBoard ``SummaryWriter`` writing into ``folder/tensorboard``."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(folder / "tensorboard"))


class ProgressBar(SupervisedPlugin):
    """A tqdm bar per training task (on a terminal; silent in logs), showing the mean loss of
    the last finished epoch: the per-step losses are summed on the device and read once per
    epoch, not synced every step."""

    def __init__(self, label: str):
        super().__init__()
        self.label = label
        self.bar = None
        self._loss, self._n = 0.0, 0

    def before_training_exp(self, strategy, **kwargs):
        total = strategy.task_steps()
        self.bar = tqdm(total=total, desc=f"{self.label} task {strategy.experience.task_label}",
                        leave=False, file=sys.stderr, disable=None)

    def before_training_epoch(self, strategy, **kwargs):
        self._loss, self._n = 0.0, 0

    def after_training_iteration(self, strategy, **kwargs):
        self.bar.update(1)
        n = len(strategy.mb_y)
        self._loss, self._n = self._loss + strategy.loss.detach() * n, self._n + n

    def after_training_epoch(self, strategy, **kwargs):
        self.bar.set_postfix(loss=f"{float(self._loss) / max(self._n, 1):.3f}")

    def after_training_exp(self, strategy, **kwargs):
        self.bar.close()


@torch.inference_mode()
def train_accuracy(strategy, dataset, task: int) -> float:
    """The trained model's accuracy on a task's training data (evaluation mode, no
    augmentation). Next to the probe's (``probe_train_acc``) it shows whether the head
    converged: a head far below the probe on its own training data underfits."""
    model = strategy.model
    was_training = model.training
    model.eval()
    correct, n = 0, 0
    for x, y in DataLoader(dataset, batch_size=strategy.eval_mb_size):
        x = x.to(strategy.device)
        if strategy.inputs is not None:
            x = strategy.inputs(x, False)
        with strategy.autocast():
            correct = correct + (model(x, task).argmax(1).cpu() == y).sum()
        n += len(y)
    model.train(was_training)
    return int(correct) / n


def static_mask_warnings(strategy: str, movement: dict, task: int, n_tasks: int) -> list[str]:
    """One line per kind of mask that did not change at all in a task."""
    return [f"warning: {strategy}, task {task + 1}/{n_tasks}: its {kind} masks did not change "
            "from their initial state; the budget or learning rate is too small to test the "
            "method" for kind, m in movement.items() if m["changed"] == 0]


def random_backbone(config: dict, stream: Stream):
    """A randomly initialized copy of the run's backbone (seeded by the run's seed, without
    touching the run's random state): the reference of the pre-training gain."""
    c, h, _ = stream.image_shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config["seed"])
        return create_backbone(config["backbone"], img_size=h, in_chans=c)


def set_tf32(config: dict) -> None:
    """TF32 matmuls and convolutions on CUDA as the config says (on by default: fp32 runs then
    use the tensor cores; bf16 autocast is unaffected)."""
    if str(config["device"]).startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = bool(config.get("tf32", True))
        torch.backends.cudnn.allow_tf32 = bool(config.get("tf32", True))


def loader_workers(device: str) -> int:
    """DataLoader worker processes: none on the CPU (the training threads need the cores; the
    bundled data and the image cache are in memory); to feed a GPU, one per CPU this process
    may use (a Slurm job's or Ray task's share), at most 8."""
    if not str(device).startswith("cuda"):
        return 0
    return min(8, len(os.sched_getaffinity(0)))


def prepare_backbone(config: dict, stream: Stream, cache_dir: Path):
    """The run's starting backbone (local checkpoint, cached base pre-training, or random init)
    and the size of the base model's own head (counted in storage like the paper's 1000-way)."""
    c, h, w = stream.image_shape
    kwargs = {"img_size": h, "in_chans": c}
    resolve(config["backbone"], **kwargs)  # validates sizes before any training
    ckpt, base_meta, base_head = config.get("pretrained"), None, 0
    if ckpt is None and stream.base is not None:
        recipe = {"epochs": config["base_epochs"], "batch_size": config["batch_size"]}
        # concurrent runs (workers, Ray, Slurm) wait for one pre-training, then share it; runs
        # of other seeds or streams pre-train at the same time
        lock = f".{config['backbone']}-{stream.name}-seed{config['seed']}.lock"  # names: [a-z0-9-]
        with file_lock(Path(cache_dir) / lock):
            ckpt, base_meta = pretrained_checkpoint(
                config["backbone"], kwargs, f"{stream.name}:{stream.base.name}",
                stream.base.train, stream.base.test, stream.base.n_classes, config["seed"],
                cache_dir, recipe, config["device"])
    backbone = create_backbone(config["backbone"], pretrained=ckpt, **kwargs)
    if config.get("dropkey"):  # a regularizer of the strategy's training, not of pre-training
        set_dropkey(backbone, config["dropkey"], config["dropkey_schedule"])
    if ckpt is not None:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state.get("model", state))
        base_head = sum(v.numel() for k, v in state.items() if k.startswith("head."))
    return backbone, base_head, base_meta


def run_one(config: dict, out_dir: Path, cache_dir: Path, progress: bool = True,
            tensorboard: bool = False) -> dict:
    """Run one (stream, backbone, strategy, seed) and return its finished record.

    Idempotent and resumable: a finished run folder with the same config is returned as is; an
    interrupted one (killed, Ctrl-C, failed) continues after its last finished task from
    ``resume.pt``; a corrupted record is redone. The folder's lock is held throughout
    (:class:`benchmarks.resume.RunLocked` if another process holds it). Besides the record, the
    folder gets ``train_log.csv`` (per-epoch loss and accuracy), one example test image per task
    (``examples.pt``, for figures) and, with ``tensorboard``, TensorBoard event files.
    """
    folder = Path(out_dir) / run_id(config)
    folder.mkdir(parents=True, exist_ok=True)
    with run_lock(folder):
        if (folder / "record.json").exists():
            try:
                old = load_record(folder)
                if old["status"] == "finished":
                    return old
            except RecordError as e:
                print(f"redoing {folder.name}: {e}", file=sys.stderr)
                clear_resume(folder)
        return _run(config, folder, Path(cache_dir), progress, tensorboard)


def _run(config: dict, folder: Path, cache_dir: Path, progress: bool, tensorboard: bool) -> dict:
    info = get_strategy(config["strategy"])
    hp = config["hparams"]
    record = {"config": config, "run_id": folder.name, "forgets": info.forgets,
              "status": "running", "tasks": [],
              "acc_matrix": [], "probe_acc": [], "probe_train_acc": [], "random_probe_acc": [],
              "train_acc": [], "train_steps": [], "mask_movement": [], "metrics": {},
              "storage": {},
              "timing": {"train_s": 0.0, "eval_s": 0.0, "pretrain_s": 0.0, "train_step_s": 0.0,
                         "eval_step_s": 0.0, "probe_s": 0.0, "wall_s": 0.0}, "base": None,
              "error": None}
    rows: list[dict] = []
    try:
        wall = time.perf_counter()
        torch.set_flush_denormal(False)  # the process default, whatever an earlier run set
        seed_everything(config["seed"])
        set_tf32(config)
        preprocess = config.get("preprocess", NONE)
        stream = build_stream(config["stream"], config["seed"], data_root=config.get("data_root"),
                              val_fraction=config["val_fraction"], preprocess=preprocess,
                              cache_dir=cache_dir / "images")
        if "tuning" in config:  # a tuning trial: the first tasks, evaluated on validation data
            stream = stream.validation_only(config["tuning"]["tasks"])
        t0 = time.perf_counter()
        backbone, base_head, base_meta = prepare_backbone(config, stream, cache_dir)
        record["timing"]["pretrain_s"] = time.perf_counter() - t0
        record["base"] = base_meta
        record["tasks"] = stream.describe()
        T = len(stream.tasks)
        R = [[None] * T for _ in range(T)]
        record["acc_matrix"] = R
        bench = stream.to_benchmark()
        inputs = InputPipeline(preprocess, stream.image_shape[-1])
        torch.save({"images": [inputs.view(task.test[0][0]).cpu().clone()
                               for task in stream.tasks]},
                   folder / "examples.pt")  # copies on the CPU: not views, readable anywhere
        counter = EvalCounter()
        probe = ProbeHeadPlugin(bench, config["head_init"], cache_dir=cache_dir / "probes",
                                reference=random_backbone(config, stream))
        log, timer = TrainLog(tensorboard_writer(folder) if tensorboard else None), StepTimer()
        runner_plugins = [probe, counter, log, timer] + (
            [ProgressBar(config["strategy"])] if progress else [])
        settings = TrainSettings(epochs=config["epochs"],
                                 steps_per_task=config.get("steps_per_task"),
                                 batch_size=config["batch_size"],
                                 eval_batch_size=config["eval_batch_size"],
                                 device=config["device"], head_init=config["head_init"],
                                 plugins=runner_plugins,
                                 precision=config.get("precision", "fp32"), inputs=inputs,
                                 loader_workers=loader_workers(config["device"]))
        backbone_params = param_count(backbone)  # the base model, before the strategy adds to it
        shared = shared_items(info, backbone, hp)
        seed_everything(config["seed"])
        strategy = info.build(backbone, dict(hp), settings)
        per_task_items, file_bytes, start = [], [], 0
        saved = load_resume(folder)
        if saved is not None:
            done = restore(strategy, runner_plugins, saved)
            record, rows, log.rows = done["record"], done["rows"], done["log_rows"]
            per_task_items, file_bytes, start = done["items"], done["file_bytes"], done["next"]
            for name in ("probe_acc", "probe_train_acc", "random_probe_acc"):
                setattr(probe, name, {k: v for k, v in enumerate(record[name]) if v is not None})
            R = record["acc_matrix"]
            print(f"{folder.name}: resuming at task {start} of {T}", file=sys.stderr, flush=True)
        for i, exp in enumerate(bench.train_stream):
            if i < start:
                continue
            t = time.perf_counter()
            strategy.train(exp)
            record["timing"]["train_s"] += time.perf_counter() - t
            record["train_steps"].append(strategy.steps_taken)
            record["train_acc"].append(train_accuracy(strategy, stream.tasks[i].train,
                                                      exp.task_label))
            movement = mask_movement(strategy.model, exp.task_label)
            record["mask_movement"].append(movement)
            for line in static_mask_warnings(config["strategy"], movement, i, T):
                print(f"{folder.name}: {line}", file=sys.stderr, flush=True)
            t = time.perf_counter()
            strategy.eval(bench.test_stream[: i + 1])
            record["timing"]["eval_s"] += time.perf_counter() - t
            timing = record["timing"]
            train_step_s, eval_step_s = timer.take()
            timing["train_step_s"] += train_step_s
            timing["eval_step_s"] += eval_step_s
            timing["probe_s"] += probe.take_seconds()
            for j, (correct, n, loss) in sorted(counter.counts.items()):
                R[i][j] = accuracy_from_counts(correct, n)
                rows.append({"seed": config["seed"], "strategy": config["strategy"],
                             "backbone": config["backbone"], "stream": config["stream"],
                             "train_task": i, "eval_task": j, "n": n, "correct": correct,
                             "loss": loss / n})
            per_task_items.append(info.storage(backbone, stream.tasks[i].n_classes, hp))
            task_file = folder / "tasks" / f"task_{i}.pt"  # what predicting task i needs
            save_task_file(strategy.model.export_task(exp.task_label), task_file)
            file_bytes.append(task_file.stat().st_size)
            for name in ("probe_acc", "probe_train_acc", "random_probe_acc"):
                record[name] = [getattr(probe, name).get(k) for k in range(T)]
            record["storage"] = storage_summary(backbone_params, base_head, per_task_items, shared)
            record["storage"]["per_task_file_bytes"] = file_bytes
            record["timing"]["peak_rss_mib"] = max(
                record["timing"].get("peak_rss_mib", 0.0),
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            timing["wall_s"] += time.perf_counter() - wall
            wall = time.perf_counter()
            if i == T - 1:
                record["metrics"] = all_metrics(R)
                record["status"] = "finished"
            else:
                save_resume(folder, strategy, runner_plugins,
                            {"next": i + 1, "record": record, "rows": rows, "log_rows": log.rows,
                             "items": per_task_items, "file_bytes": file_bytes})
            write_run(folder, record, rows)
            atomic_write_text(folder / "train_log.csv", log.csv())
            print(f"{folder.name}: task {i + 1}/{T} done", file=sys.stderr, flush=True)
            if log.writer is not None:
                for j, acc in enumerate(R[i][: i + 1]):
                    log.writer.add_scalar(f"eval/accuracy/task_{j}", acc, i)
                log.writer.flush()
        clear_resume(folder)
    except Exception:
        record["status"] = "failed"
        record["error"] = traceback.format_exc()
        write_run(folder, record, rows)
        raise
    return record
