"""The single-run loop: ``run_one(config, out_dir)`` -> record, whatever process runs it.

For every task i of the stream: train the strategy on task i (Avalanche ``train``), evaluate every
task seen so far with its own head (``eval`` on ``test_stream[:i+1]``), count correct predictions
per task, save what predicting task i needs (``tasks/task_<i>.pt``: head, bit-packed masks, ...),
save what continuing the run needs (``resume.pt``, :mod:`benchmarks.resume`) and write the run
folder atomically (config.yaml, rows.csv, record.json) — so a killed run leaves every finished
task on disk and the next ``run_one`` of the same config continues after it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import random
import resource
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from tqdm import tqdm

from atomicio import atomic_write_text, file_lock
from benchmarks.config import RunConfig
from benchmarks.data.inputs import InputPipeline
from benchmarks.data.streams import Stream, build_stream
from benchmarks.pretrain import pretrained_checkpoint
from benchmarks.resume import clear_resume, load_resume, restore, run_lock, save_resume
from models.attention import set_dropkey
from models.factory import create_backbone, resolve
from models.masks import mask_movement
from models.tasks import TaskTensor, save_task_file, token_masks
from results.metrics import accuracy_from_counts, all_metrics, task_agnostic_metrics
from results.records import RecordError, load_record, read_token_masks, write_run, write_token_masks
from strategies import get_strategy
from strategies.class_incremental import ClassIncrementalEval
from strategies.features import FeatureCache, PassMeter, weights_key
from strategies.heads import ProbeHeadPlugin
from strategies.registry import TrainSettings
from strategies.storage import FP32, StorageItem, param_count, shared_items, storage_summary


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
    records). ``train_times`` keeps each training iteration's seconds. CPU timings: on a GPU
    they are launch times, unless ``sync`` is a CUDA device, synchronized around every iteration
    (``benchmarks/measure/perf.py``'s per-step times; the runner never synchronizes)."""

    def __init__(self, sync: torch.device | None = None):
        super().__init__()
        self.sync = sync if sync is not None and sync.type == "cuda" else None
        self.train_s = self.eval_s = 0.0
        self.train_times: list[float] = []
        self._start = 0.0

    def _now(self) -> float:
        if self.sync is not None:
            torch.cuda.synchronize(self.sync)
        return time.perf_counter()

    def before_training_iteration(self, strategy, **kwargs):
        self._start = self._now()

    def after_training_iteration(self, strategy, **kwargs):
        seconds = self._now() - self._start
        self.train_s += seconds
        self.train_times.append(seconds)

    def before_eval_iteration(self, strategy, **kwargs):
        self._start = self._now()

    def after_eval_iteration(self, strategy, **kwargs):
        self.eval_s += self._now() - self._start

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
                f"training loss is {row['loss']} in task {row['task'] + 1}: "
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

    def __init__(self, label: str, n_tasks: int):
        super().__init__()
        self.label, self.n_tasks = label, n_tasks
        self.bar = None
        self._loss, self._n = 0.0, 0

    def before_training_exp(self, strategy, **kwargs):
        task = strategy.experience.current_experience + 1
        self.bar = tqdm(total=strategy.task_steps(), leave=False, file=sys.stderr, disable=None,
                        desc=f"{self.label} task {task}/{self.n_tasks}")

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


def static_mask_warnings(config: RunConfig, movement: dict, task: int, n_tasks: int) -> list[str]:
    """One line per kind of mask that did not change at all in a task, with how to fix it: the
    kind's own rate (``<kind>_mask_lr``) or the strategy's rates, set in a suite file, or tuned."""
    name, hp = config.strategy, config.hparams
    rates = [k for k in hp if k.endswith("lr") and k != "head_lr"]
    lines = []
    for kind, m in movement.items():
        if m["changed"]:
            continue
        keys = [f"{kind}_mask_lr"] if f"{kind}_mask_lr" in hp else rates
        lines.append(
            f"warning: {name}, task {task + 1}/{n_tasks}: its {kind} masks did not change from "
            f"their initial state ({', '.join(f'{k} {hp[k]:g}' for k in keys)}): the budget or "
            "learning rate is too small to test the method; raise the rate in a suite file "
            f"(hparams: {{{name}: {{{keys[0]}: ...}}}}), or tune it (`python run_benchmark.py "
            f"tune --suite {config.suite} --strategies {name}`, then `--hparams tuned`)")
    return lines


def random_backbone(config: RunConfig, stream: Stream):
    """A randomly initialized copy of the run's backbone (seeded by the run's seed, without
    touching the run's random state): the reference of the pre-training gain."""
    c, h, _ = stream.image_shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return create_backbone(config.backbone, img_size=h, in_chans=c)


def data_key(config: RunConfig) -> str:
    """What a run's task datasets and their model inputs depend on, besides the backbone: the
    key of its frozen backbones' features (``strategies.features.FeatureCache``)."""
    fields = ("stream", "seed", "data_root", "img_size", "val_fraction", "preprocess",
              "precision", "tf32", "tuning")
    return json.dumps({k: getattr(config, k) for k in fields}, sort_keys=True)


def set_tf32(config: RunConfig) -> None:
    """TF32 matmuls and convolutions on CUDA as the config says (on by default: fp32 runs then
    use the tensor cores; bf16 autocast is unaffected)."""
    if str(config.device).startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = config.tf32
        torch.backends.cudnn.allow_tf32 = config.tf32


def set_determinism(config: RunConfig) -> None:
    """``torch.use_deterministic_algorithms`` as the config says (``deterministic``, off by
    default). On, a CUDA operation that has a deterministic kernel takes it instead of one that
    adds with atomics (whose order changes from call to call: attention and indexing backward,
    scatter-add, cuDNN's choices), and one without raises; ``CUBLAS_WORKSPACE_CONFIG=:4096:8``
    gives cuBLAS a fixed workspace per handle, which its bitwise reproducibility needs (torch
    refuses deterministic cuBLAS calls without it). Set before the run's first CUDA work."""
    if config.deterministic:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    torch.use_deterministic_algorithms(config.deterministic)


def loader_workers(config: RunConfig) -> int:
    """DataLoader worker processes: the config's ``loader_workers`` if set; else none on the
    CPU (the training threads need the cores; the bundled data and the image cache are in
    memory) and, to feed a GPU, one per CPU this process may use (a Slurm job's or Ray task's
    share), at most 8."""
    if config.loader_workers is not None:
        return config.loader_workers
    if not str(config.device).startswith("cuda"):
        return 0
    return min(8, len(os.sched_getaffinity(0)))


def prepare_backbone(config: RunConfig, stream: Stream, cache_dir: Path):
    """The run's starting backbone (local checkpoint, cached base pre-training, or random init)
    and the size of the base model's own head (counted in storage like the paper's 1000-way)."""
    c, h, w = stream.image_shape
    kwargs = {"img_size": h, "in_chans": c}
    resolve(config.backbone, **kwargs)  # validates sizes before any training
    ckpt, base_meta, base_head = config.pretrained, None, 0
    if ckpt is None and stream.base is not None:
        recipe = {"epochs": config.base_epochs, "batch_size": config.batch_size}
        # concurrent runs (workers, Ray, Slurm) wait for one pre-training, then share it; runs
        # of other seeds or streams pre-train at the same time
        lock = f".{config.backbone}-{stream.name}-seed{config.seed}.lock"  # names: [a-z0-9-]
        with file_lock(Path(cache_dir) / lock):
            ckpt, base_meta = pretrained_checkpoint(
                config.backbone, kwargs, f"{stream.name}:{stream.base.name}",
                stream.base.train, stream.base.test, stream.base.n_classes, config.seed,
                cache_dir, recipe, config.device)
    if ckpt is None:  # nothing to start from: the results say nothing about pre-training
        base_meta = {"base": "none"}
        print(f"warning: {config.backbone} starts from random weights: stream {stream.name!r} "
              "has no base to pre-train on and no --pretrained FILE was given", file=sys.stderr,
              flush=True)
    backbone = create_backbone(config.backbone, pretrained=ckpt, **kwargs)
    if config.dropkey:  # a regularizer of the strategy's training, not of pre-training
        set_dropkey(backbone, config.dropkey, config.dropkey_schedule)
    if ckpt is not None:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state.get("model", state))
        base_head = sum(v.numel() for k, v in state.items() if k.startswith("head."))
    return backbone, base_head, base_meta


@dataclass
class Timing:
    """Seconds of one run: training and evaluation phases, base pre-training, inside training
    and evaluation iterations (``StepTimer``), probe fitting, the passes outside training
    (probe and reference features, the end-of-task pass, task statistics; with the images they
    read), wall time; peak memory; and the
    conditions they were measured under: torch's threads, the machine's CPUs and its 1-minute
    load average at the run's start and end (a resumed run keeps the highest of its parts), so
    a report can tell runs timed under other load (``results.tables.timing_conditions``)."""

    train_s: float = 0.0
    eval_s: float = 0.0
    pretrain_s: float = 0.0
    train_step_s: float = 0.0
    eval_step_s: float = 0.0
    probe_s: float = 0.0
    fixed_images: int = 0  # images read outside training (strategies.features.PassMeter)
    fixed_s: float = 0.0  # their passes' seconds
    wall_s: float = 0.0
    peak_rss_mib: float | None = None  # set once a task is done
    threads: int | None = None
    cpus: int | None = None
    load_start: float | None = None
    load_end: float | None = None  # set once a task is done

    def started(self) -> None:
        """Note the conditions at the start of (a part of) the run."""
        self.threads, self.cpus = torch.get_num_threads(), os.cpu_count()
        self.load_start = max(self.load_start or 0.0, os.getloadavg()[0])

    def ended(self) -> None:
        self.load_end = max(self.load_end or 0.0, os.getloadavg()[0])


CLASS_INCREMENTAL_FIELDS = ("task_inference", "cil_acc_matrix", "task_inference_matrix",
                            "task_inference_rules", "simplecil_acc_matrix", "joint_acc_matrix")


@dataclass
class RunRecord:
    """``record.json`` (``results.records`` documents the schema): per task i, the accuracy
    matrix row, the probe references, the trained model's training accuracy, its steps and how
    far its masks moved; storage, timing, metrics when finished."""

    config: dict
    run_id: str
    forgets: bool
    status: str = "running"
    tasks: list = field(default_factory=list)
    acc_matrix: list = field(default_factory=list)
    probe_acc: list = field(default_factory=list)
    probe_train_acc: list = field(default_factory=list)
    random_probe_acc: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    train_steps: list = field(default_factory=list)
    mask_movement: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    storage: dict = field(default_factory=dict)
    timing: Timing = field(default_factory=Timing)
    base: dict | None = None
    error: str | None = None
    # a run evaluated without task ids too (config task_agnostic): its task-inference rule and
    # R[i][j] in the class-incremental setting, and the share of task j's samples whose task
    # was inferred right after training task i
    # (the rule chosen on validation data, strategies.class_incremental); every rule's matrices
    # and validation accuracy; and the references on the frozen starting backbone
    task_inference: str | None = None
    cil_acc_matrix: list | None = None
    task_inference_matrix: list | None = None
    task_inference_rules: dict | None = None
    simplecil_acc_matrix: list | None = None
    joint_acc_matrix: list | None = None

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        if out["timing"]["peak_rss_mib"] is None:
            del out["timing"]["peak_rss_mib"]
        for key in CLASS_INCREMENTAL_FIELDS:
            if out[key] is None:  # a task-incremental run's record keeps its form
                del out[key]
        return out

    @classmethod
    def from_dict(cls, record: dict) -> RunRecord:
        return cls(**{**record, "timing": Timing(**record["timing"])})


REFERENCES = ("probe_acc", "probe_train_acc", "random_probe_acc")  # per task, from the probe


def run_one(config: RunConfig, out_dir: Path, cache_dir: Path, progress: bool = True,
            tensorboard: bool = False) -> dict:
    """Run one (stream, backbone, strategy, seed) and return its finished record.

    Idempotent and resumable: a finished run folder with the same config is returned as is; an
    interrupted one (killed, Ctrl-C, failed) continues after its last finished task from
    ``resume.pt``; a corrupted record is redone. The folder's lock is held throughout
    (:class:`benchmarks.resume.RunLocked` if another process holds it). Besides the record, the
    folder gets ``train_log.csv`` (per-epoch loss and accuracy), one example test image per task
    (``examples.pt``, for figures) and, with ``tensorboard``, TensorBoard event files.
    """
    folder = Path(out_dir) / config.run_id
    folder.mkdir(parents=True, exist_ok=True)
    with run_lock(folder):
        if (folder / "record.json").exists():
            try:
                old = load_record(folder)
                if old["status"] == "finished":
                    print(f"{folder.name}: skipped (finished earlier; delete its folder to redo "
                          "it)", file=sys.stderr, flush=True)
                    return old
            except RecordError as e:
                print(f"redoing {folder.name}: {e}", file=sys.stderr)
                clear_resume(folder)
        run = Run(config, folder, Path(cache_dir), progress, tensorboard)
        try:
            return run.run()
        except Exception:
            run.record.status = "failed"
            run.record.error = traceback.format_exc()
            write_run(folder, run.record.to_dict(), run.rows)
            raise


class Run:
    """One run in named steps: :meth:`prepare` (data, backbone, strategy, plugins), :meth:`resume`
    (from ``resume.pt``), then per task :meth:`train_task`, :meth:`evaluate`, :meth:`keep` (what
    predicting it needs, its storage and references) and :meth:`save` (record, resume state)."""

    def __init__(self, config: RunConfig, folder: Path, cache_dir: Path, progress: bool,
                 tensorboard: bool):
        self.config, self.folder, self.cache_dir = config, folder, cache_dir
        self.progress, self.tensorboard = progress, tensorboard
        self.info = get_strategy(config.strategy)
        self.record = RunRecord(config=config.to_dict(), run_id=folder.name,
                                forgets=self.info.forgets)
        self.rows: list[dict] = []
        self.storage_items: list = []  # per finished task: what it keeps (strategies.storage)
        self.file_bytes: list[int] = []  # per finished task: bytes of tasks/task_<t>.pt
        self._wall = time.perf_counter()

    def run(self) -> dict:
        self.prepare()
        start = self.resume()
        self.record.timing.started()
        for i, exp in enumerate(self.bench.train_stream):
            if i < start:
                continue
            self.train_task(i, exp)
            self.evaluate(i)
            self.keep(i, exp)
            self.save(i)
        clear_resume(self.folder)
        return self.record.to_dict()

    def prepare(self) -> None:
        """Seed, build the stream, the starting backbone, the runner's plugins and the strategy."""
        config, cache_dir = self.config, self.cache_dir
        seed_everything(config.seed)
        set_tf32(config)
        set_determinism(config)
        stream = build_stream(config.stream, config.seed, data_root=config.data_root,
                              img_size=config.img_size,
                              val_fraction=config.val_fraction, preprocess=config.preprocess,
                              cache_dir=cache_dir / "images")
        if config.tuning is not None:  # a tuning trial: the first tasks, on validation data
            stream = stream.validation_only(config.tuning["tasks"])
        t0 = time.perf_counter()
        backbone, self.base_head, base_meta = prepare_backbone(config, stream, cache_dir)
        self.record.timing.pretrain_s = time.perf_counter() - t0
        self.record.base = base_meta
        self.record.tasks = stream.describe()
        self.T = T = len(stream.tasks)
        self.record.acc_matrix = [[None] * T for _ in range(T)]
        self.stream, self.bench = stream, stream.to_benchmark()
        inputs = InputPipeline(config.preprocess, stream.image_shape[-1])
        torch.save({"images": [inputs.view(task.test[0][0]).cpu().clone()
                               for task in stream.tasks]},
                   self.folder / "examples.pt")  # copies on the CPU: not views, readable anywhere
        self.counter, self.timer, self.meter = EvalCounter(), StepTimer(), PassMeter()
        features = FeatureCache(cache_dir / "features", data_key(config))
        start_weights = weights_key(backbone)
        self.probe = ProbeHeadPlugin(self.bench, config.head_init,
                                     cache_dir=cache_dir / "probes",
                                     reference=random_backbone(config, stream),
                                     announce=self.say, feature_cache=features,
                                     start_weights=start_weights, meter=self.meter)
        self.log = TrainLog(tensorboard_writer(self.folder) if self.tensorboard else None)
        self.plugins = [self.probe, self.counter, self.log, self.timer] + (
            [ProgressBar(config.strategy, T)] if self.progress else [])
        settings = TrainSettings(epochs=config.epochs, steps_per_task=config.steps_per_task,
                                 batch_size=config.batch_size,
                                 eval_batch_size=config.eval_batch_size, device=config.device,
                                 head_init=config.head_init, plugins=self.plugins,
                                 precision=config.precision, inputs=inputs,
                                 loader_workers=loader_workers(config),
                                 fixed_passes=self.meter)
        self.backbone = backbone
        self.backbone_params = param_count(backbone)  # before the strategy adds to it
        self.shared = shared_items(self.info, backbone, config.hparams)
        self.shared_frozen_view = False  # whether the frozen view is billed (it is once changed)
        frozen = copy.deepcopy(backbone) if config.task_agnostic else None  # before the strategy
        seed_everything(config.seed)
        self.strategy = self.info.build(backbone, dict(config.hparams), settings)
        self.class_incremental = None
        if config.task_agnostic:
            self.class_incremental = ClassIncrementalEval(
                self.strategy, frozen, stream.tasks,
                [exp.task_label for exp in self.bench.test_stream], self.info.task_inference,
                probe_cache=cache_dir / "probes", feature_cache=features,
                frozen_weights=start_weights)

    def say(self, line: str) -> None:
        """A progress line on stderr, prefixed by the run's id."""
        print(f"{self.folder.name}: {line}", file=sys.stderr, flush=True)

    def resume(self) -> int:
        """Restore the state after the last finished task, if any; the next task's index."""
        saved = load_resume(self.folder)
        if saved is None:
            return 0
        done = restore(self.strategy, self.plugins, saved)
        self.record = RunRecord.from_dict(done["record"])
        self.rows, self.log.rows = done["rows"], done["log_rows"]
        self.storage_items, self.file_bytes = done["items"], done["file_bytes"]
        if "shared" in done:  # (a resume state written before the frozen view was billed has none)
            self.shared = done["shared"]
            self.shared_frozen_view = any(item.name.startswith("frozen starting backbone")
                                          for item in self.shared)
        if done.get("class_incremental") is not None:
            self.class_incremental.load_state(done["class_incremental"])
        for name in REFERENCES:
            setattr(self.probe, name,
                    {k: v for k, v in enumerate(getattr(self.record, name)) if v is not None})
        self.say(f"resuming at task {done['next'] + 1}/{self.T}")
        return done["next"]

    def train_task(self, i: int, exp) -> None:
        """Train task i; record its steps, training accuracy and how far its masks moved."""
        record, strategy = self.record, self.strategy
        t = time.perf_counter()
        strategy.train(exp)
        record.timing.train_s += time.perf_counter() - t
        record.train_steps.append(strategy.steps_taken)
        record.train_acc.append(strategy.trained[exp.task_label].accuracy)
        movement = mask_movement(strategy.model, exp.task_label)
        record.mask_movement.append(movement)
        for line in static_mask_warnings(self.config, movement, i, self.T):
            self.say(line)

    def evaluate(self, i: int) -> None:
        """Evaluate tasks 0..i: row i of the accuracy matrix and the raw counts."""
        record, config, timing = self.record, self.config, self.record.timing
        t = time.perf_counter()
        self.strategy.eval(self.bench.test_stream[: i + 1])
        timing.eval_s += time.perf_counter() - t
        train_step_s, eval_step_s = self.timer.take()
        timing.train_step_s += train_step_s
        timing.eval_step_s += eval_step_s
        timing.probe_s += self.probe.take_seconds()
        for j, (correct, n, loss) in sorted(self.counter.counts.items()):
            record.acc_matrix[i][j] = accuracy_from_counts(correct, n)
            self.rows.append({"seed": config.seed, "strategy": config.strategy,
                              "backbone": config.backbone, "stream": config.stream,
                              "train_task": i, "eval_task": j, "n": n, "correct": correct,
                              "loss": loss / n})
        if self.class_incremental is not None:
            t = time.perf_counter()
            for key, value in self.class_incremental.after_task(i).items():
                setattr(record, key, value)
            timing.eval_s += time.perf_counter() - t
        images, seconds = self.meter.take()
        timing.fixed_images += images
        timing.fixed_s += seconds

    def keep(self, i: int, exp) -> None:
        """Save what predicting task i needs (``tasks/task_<i>.pt``); account its storage; copy
        the probe's references; note peak memory."""
        record = self.record
        items = self.info.storage(self.backbone, self.stream.tasks[i].n_classes,
                                  self.config.hparams)
        state = self.strategy.model.export_task(exp.task_label)
        if self.class_incremental is not None:
            stats = self.class_incremental.stats[exp.task_label]
            items = [*items, StorageItem("task statistics (class means, scatter)", stats.size(),
                                         FP32)]
            state.update({f"task_statistics.{k}": TaskTensor(v, "task statistics")
                          for k, v in stats.state().items()})
            if not self.shared_frozen_view and self.class_incremental.backbone_changed():
                self.shared_frozen_view = True
                self.shared = [*self.shared, StorageItem(
                    "frozen starting backbone (task prediction)", self.backbone_params, FP32)]
        self.storage_items.append(items)
        task_file = self.folder / "tasks" / f"task_{i}.pt"
        save_task_file(state, task_file)
        self.file_bytes.append(task_file.stat().st_size)
        if masks := token_masks(state):
            write_token_masks(self.folder, [*read_token_masks(self.folder)[:i],
                                            {k: m.tolist() for k, m in masks.items()}])
        for name in REFERENCES:
            setattr(record, name, [getattr(self.probe, name).get(k) for k in range(self.T)])
        record.storage = storage_summary(self.backbone_params, self.base_head,
                                         self.storage_items, self.shared)
        record.storage["per_task_file_bytes"] = self.file_bytes
        record.timing.peak_rss_mib = max(
            record.timing.peak_rss_mib or 0.0,
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)

    def save(self, i: int) -> None:
        """Write the run folder after task i (and the resume state, unless it was the last)."""
        record = self.record
        record.timing.wall_s += time.perf_counter() - self._wall
        record.timing.ended()
        self._wall = time.perf_counter()
        if i == self.T - 1:
            record.metrics = all_metrics(record.acc_matrix)
            if self.config.task_agnostic:
                record.metrics.update(task_agnostic_metrics(
                    record.cil_acc_matrix, record.task_inference_matrix,
                    [task["n_test"] for task in record.tasks],
                    {"simplecil": record.simplecil_acc_matrix,
                     "joint": record.joint_acc_matrix}))
            record.status = "finished"
        else:
            save_resume(self.folder, self.strategy, self.plugins,
                        {"next": i + 1, "record": record.to_dict(), "rows": self.rows,
                         "log_rows": self.log.rows, "items": self.storage_items,
                         "file_bytes": self.file_bytes, "shared": self.shared,
                         "class_incremental": (None if self.class_incremental is None
                                               else self.class_incremental.state())})
        write_run(self.folder, record.to_dict(), self.rows)
        atomic_write_text(self.folder / "train_log.csv", self.log.csv())
        self.say(f"task {i + 1}/{self.T} done")
        writer = self.log.writer
        if writer is not None:
            for j, acc in enumerate(record.acc_matrix[i][: i + 1]):
                writer.add_scalar(f"eval/accuracy/task_{j}", acc, i)
            writer.flush()
