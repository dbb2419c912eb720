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
import resource
import sys
import time
import traceback
from pathlib import Path

import torch

from atomicio import atomic_write_text
from benchmarks.config import RunConfig, shared_settings
from benchmarks.data.inputs import InputPipeline
from benchmarks.data.streams import build_stream
from benchmarks.plugins import (
    EvalCounter,
    ProgressBar,
    StepTimer,
    TrainLog,
)
from benchmarks.prepare import (
    data_key,
    loader_workers,
    prepare_backbone,
    random_backbone,
    seed_everything,
    set_determinism,
    set_tf32,
)
from benchmarks.resume import clear_resume, load_resume, restore, run_lock, save_resume
from benchmarks.trackers import Tracker, Trackers, task_scalars
from models.masks import mask_movement
from models.tasks import TaskTensor, save_task_file, token_masks
from results.metrics import accuracy_from_counts, all_metrics, task_agnostic_metrics
from results.records import (
    RecordError,
    RunRecord,
    load_record,
    read_token_masks,
    write_run,
    write_token_masks,
)
from strategies import get_strategy
from strategies.class_incremental import ClassIncrementalEval
from strategies.features import FeatureCache, PassMeter, weights_key
from strategies.heads import ProbeHeadPlugin
from strategies.registry import TrainSettings
from strategies.storage import FP32, StorageItem, param_count, shared_items, storage_summary


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


REFERENCES = ("probe_acc", "probe_train_acc", "random_probe_acc")  # per task, from the probe


def run_one(config: RunConfig, out_dir: Path, cache_dir: Path, progress: bool = True,
            trackers: Trackers | None = None) -> dict:
    """Run one (stream, backbone, strategy, seed) and return its finished record.

    Idempotent and resumable: a finished run folder with the same config is returned as is; an
    interrupted one (killed, Ctrl-C, failed) continues after its last finished task from
    ``resume.pt``; a corrupted record is redone. The folder's lock is held throughout
    (:class:`benchmarks.resume.RunLocked` if another process holds it). Besides the record, the
    folder gets ``train_log.csv`` (per-epoch loss and accuracy), one example test image per task
    (``examples.pt``, for figures). ``trackers``: where the run is also logged (TensorBoard event
    files in the folder, a W&B run; :mod:`benchmarks.trackers`), none by default.
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
        run = Run(config, folder, Path(cache_dir), progress, trackers)
        ended = False
        try:
            record = run.run()
            ended = True
            return record
        except Exception:
            run.record.status = "failed"
            run.record.error = traceback.format_exc()
            write_run(folder, run.record.to_dict(), run.rows)
            raise
        finally:
            run.tracker.close(failed=not ended)


class Run:
    """One run in named steps: :meth:`prepare` (data, backbone, strategy, plugins), :meth:`resume`
    (from ``resume.pt``), then per task :meth:`train_task`, :meth:`evaluate`, :meth:`keep` (what
    predicting it needs, its storage and references) and :meth:`save` (record, resume state)."""

    def __init__(self, config: RunConfig, folder: Path, cache_dir: Path, progress: bool,
                 trackers: Trackers | None = None):
        self.config, self.folder, self.cache_dir = config, folder, cache_dir
        self.progress, self.trackers = progress, trackers or Trackers()
        self.tracker = Tracker()  # the opened trackers, once prepared
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
        self.tracker.log_config(self.record.config)
        self.record.timing.started(torch.get_num_threads())
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
        """Open the trackers; seed, build the stream, the starting backbone, the runner's plugins
        and the strategy."""
        config, cache_dir = self.config, self.cache_dir
        self.tracker = self.trackers.open(self.folder, self.record.config)  # fails before work
        seed_everything(config.seed)
        set_tf32(config)
        set_determinism(config)
        stream = build_stream(config.stream, config.seed, data_root=config.data_root,
                              img_size=config.img_size,
                              val_fraction=config.val_fraction, preprocess=config.preprocess,
                              cache_dir=cache_dir / "images", download=config.download)
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
        self.log = TrainLog(self.tracker)
        self.plugins = [self.probe, self.counter, self.log, self.timer] + (
            [ProgressBar(config.strategy, T)] if self.progress else [])
        settings = TrainSettings(**{**shared_settings(config, TrainSettings),
                                    "loader_workers": loader_workers(config)},
                                 plugins=self.plugins, inputs=inputs, fixed_passes=self.meter)
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
        # the trackers get task i before its state is kept: an interrupted task is redone and
        # logged again, never lost
        self.tracker.log_task(i, record.acc_matrix[i][: i + 1], task_scalars(record.to_dict(), i))
        if record.status == "finished":
            self.tracker.log_final(record.to_dict())
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
