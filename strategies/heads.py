"""Probe-initialized heads and the per-task linear-probe reference, for every strategy.

:class:`ProbeHeadPlugin` runs at the start of every training task, after Avalanche created the
task's head: it computes the task's features with the backbone *as the strategy will use it at
the start of that task* (eval mode, ``torch.inference_mode``, large batches, once per task), fits
a converged linear probe (``models.heads.fit_linear_probe``; C chosen on the task's validation
split; memoized on disk across runs, as strategies on frozen features fit the same one), records
the probe's test accuracy as the task's ``probe_acc`` reference and starts the new head's
standardization (``models.heads.StandardizedHead``) at the features' training statistics; with
``head_init="probe"`` the head's weights are the probe's too, so it starts predicting exactly what
the probe predicts. Features stay on the run's device, where the probe is fitted and its test
accuracy computed.

Two more references per task: the probe's accuracy on the task's training data
(``probe_train_acc``: a head that ends its task well below it did not converge), and, given a
``reference`` backbone (a randomly initialized copy of the run's architecture), the same probe on
that backbone's features (``random_probe_acc``): the probe minus it is how much the task gains
from pre-training.

Every registered strategy starts its heads from the probe (``head_init: auto``): on frozen
features a few SGD epochs leave a random head far from converged, and with the head's
standardization following the features (``models.heads.StandardizedHead``) a probe start also
helps the strategies that fine-tune the whole backbone (measured on validation data:
docs/strategies.md, "Heads"). A strategy may register ``head_init="random"``; ``--head-init
random`` forces random heads everywhere.

``head_init`` starts standardized heads only. A plain head (``models.heads.PlainHead``: the prompt
methods' paper form, their ``head: plain``) keeps its own trunc-normal start whatever
``head_init`` says: it has no standardization to start, and the probe folded into it would have
the huge weights ``models.heads`` explains. The probe references are computed for it all the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
from avalanche.core import SupervisedPlugin
from torch.utils.data import DataLoader, Dataset

from models.heads import C_GRID, LinearProbe, StandardizedHead, fit_linear_probe
from strategies.registry import HEAD_INITS


@torch.inference_mode()
def task_features(features, dataset: Dataset, device, batch_size: int = 1024,
                  inputs=None, autocast=nullcontext):
    """(features, labels) of a whole dataset through ``features(x)`` (e.g. a multi-task model's
    ``features(x, task)``), as float32 features and labels on ``device``. ``inputs(x,
    train=False)`` turns a batch on the device into model inputs and ``autocast()`` gives the
    precision context, as for evaluation. The global RNG is left as it was found: a run trains
    the same with or without probes and references."""
    feats, labels = [], []
    with torch.random.fork_rng(devices=[]):  # a DataLoader draws a seed: leave training's RNG
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            x, y = batch[0].to(device), batch[1]
            if inputs is not None:
                x = inputs(x, False)
            with autocast():
                feats.append(features(x).float())
            labels.append(torch.as_tensor(y).to(device))
    return torch.cat(feats), torch.cat(labels)


class ProbeHeadPlugin(SupervisedPlugin):
    """Fit the probe reference for each new task; start a standardized head from it (weights
    too with ``head_init="probe"``; a plain head is left as created: module docstring).

    ``benchmark`` must have a ``test_stream`` aligned with ``train_stream`` (experience i of each
    is task i, as ``benchmarks.streams.Stream.to_benchmark`` builds them); a ``valid_stream``
    aligned the same way chooses the probe's C (without one, C = 1). ``probe_acc[i]`` holds the
    reference test accuracy of experience ``i``.
    """

    def __init__(self, benchmark, head_init: str = "probe", c_grid=C_GRID,
                 cache_dir: Path | None = None, reference: torch.nn.Module | None = None,
                 announce: Callable[[str], None] | None = None):
        super().__init__()
        if head_init not in HEAD_INITS:
            raise ValueError(f"head_init must be one of {HEAD_INITS}, got {head_init!r}")
        self.benchmark = benchmark
        self.head_init = head_init
        self.c_grid = tuple(c_grid)
        self.cache_dir = cache_dir  # fitted probes, shared between runs (None: no cache)
        self.reference = reference  # a randomly initialized backbone, or None
        self.announce = announce  # announce(line): progress of probe fits that are not cached
        self.probe_acc: dict[int, float] = {}
        self.probe_train_acc: dict[int, float] = {}
        self.random_probe_acc: dict[int, float] = {}
        self.probes: dict[int, LinearProbe] = {}
        self.seconds = 0.0  # spent computing features and fitting probes

    def take_seconds(self) -> float:
        """Seconds spent since the last call."""
        out, self.seconds = self.seconds, 0.0
        return out

    def before_training_exp(self, strategy, **kwargs):
        start = time.perf_counter()
        exp = strategy.experience
        i, task = exp.current_experience, exp.task_label
        model, device = strategy.model, strategy.device
        was_training = model.training
        model.eval()
        head = model.heads[str(task)]
        n_classes = head.out_features
        as_eval = {"inputs": getattr(strategy, "inputs", None),
                   "autocast": getattr(strategy, "autocast", nullcontext)}
        valid = getattr(self.benchmark, "valid_stream", None)
        datasets = (exp.dataset.eval(), valid[i].dataset.eval() if valid is not None else None,
                    self.benchmark.test_stream[i].dataset.eval())
        where = f"task {i + 1}/{len(self.benchmark.train_stream)}"
        probe, (tr, _, te) = self.fit(lambda x: model.features(x, task), datasets, n_classes,
                                      device, as_eval, f"{where}: linear probe")
        self.probes[i] = probe
        self.probe_acc[i] = probe.accuracy(*te)
        self.probe_train_acc[i] = probe.accuracy(*tr)
        if self.reference is not None and i not in self.random_probe_acc:
            self.reference.to(device).eval()
            reference, (_, _, te) = self.fit(self.reference, datasets, n_classes, device,
                                             as_eval, f"{where}: random-init probe")
            self.random_probe_acc[i] = reference.accuracy(*te)
        if isinstance(head, StandardizedHead):  # a plain head keeps its own start
            if self.head_init == "probe":
                probe.copy_into(head)
            else:
                head.set_statistics(probe.mean, probe.std)
        model.train(was_training)
        self.seconds += time.perf_counter() - start

    def fit(self, features, datasets, n_classes: int, device, as_eval: dict, label: str):
        """The probe on ``features`` of (train, validation, test) and those features; a fit that
        is not cached is announced as ``label``."""
        tr, va, te = (task_features(features, d, device, **as_eval) if d is not None
                      else (None, None) for d in datasets)
        start, fitted = time.perf_counter(), []

        def on_fit():
            fitted.append(True)
            if self.announce is not None:
                self.announce(f"{label}: fitting on {len(tr[0]):,} training features "
                              f"(C from {len(self.c_grid)} values; cached for later runs) ...")

        probe = fit_linear_probe(*tr, n_classes, *va, c_grid=self.c_grid,
                                 cache_dir=self.cache_dir, on_fit=on_fit)
        if fitted and self.announce is not None:
            val = "" if probe.val_acc is None else f", validation accuracy {probe.val_acc:.1%}"
            self.announce(f"{label}: fitted in {time.perf_counter() - start:.1f} s "
                          f"(C = {probe.C:g}{val})")
        return probe, (tr, va, te)
