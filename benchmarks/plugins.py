"""The runner's Avalanche plugins: counting evaluation results on the device, timing the steps
inside training and evaluation, the per-epoch training log (also sent to the run's trackers,
``benchmarks.trackers``), the progress bar. Each is a plain ``SupervisedPlugin`` a user's own
loop could take too."""

from __future__ import annotations

import math
import sys
import time

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from tqdm import tqdm


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
    (``benchmarks/measure/stepperf.py``'s per-step times; the runner never synchronizes)."""

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
    """Per-epoch training loss and accuracy of every task: rows for ``train_log.csv``, each also
    given to ``tracker.log_epoch`` when a tracker is given (``benchmarks.trackers``: TensorBoard,
    W&B). A NaN or infinite epoch loss stops the run (checked once per epoch: the per-step sums
    stay on the device, without syncs)."""

    FIELDS = ("task", "epoch", "loss", "accuracy", "seconds")

    def __init__(self, tracker=None):
        super().__init__()
        self.rows: list[dict] = []
        self.tracker = tracker
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
        if self.tracker is not None:
            self.tracker.log_epoch(len(self.rows), row)

    def csv(self) -> str:
        lines = [",".join(self.FIELDS)]
        lines += [",".join(str(r[k]) for k in self.FIELDS) for r in self.rows]
        return "\n".join(lines) + "\n"


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
