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
``docs/strategies.md``, "Strategies", its paragraph on heads). A strategy may register
``head_init="random"``; ``--head-init random`` forces random heads everywhere.

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

from models.heads import C_GRID, LinearProbe, StandardizedHead, fit_linear_probe
from strategies.features import FeatureCache, PassMeter, task_features, weights_key
from vocab import HEAD_INITS


class ProbeHeadPlugin(SupervisedPlugin):
    """Fit the probe reference for each new task; start a standardized head from it (weights
    too with ``head_init="probe"``; a plain head is left as created: module docstring).

    ``benchmark`` must have a ``test_stream`` aligned with ``train_stream`` (experience i of each
    is task i, as ``benchmarks.data.streams.Stream.to_benchmark`` builds them); a ``valid_stream``
    aligned the same way chooses the probe's C (without one, C = 1). ``probe_acc[i]`` holds the
    reference test accuracy of experience ``i``.
    """

    def __init__(self, benchmark, head_init: str = "probe", c_grid=C_GRID,
                 cache_dir: Path | None = None, reference: torch.nn.Module | None = None,
                 announce: Callable[[str], None] | None = None,
                 feature_cache: FeatureCache | None = None, start_weights: str | None = None,
                 meter: PassMeter | None = None):
        super().__init__()
        if head_init not in HEAD_INITS:
            raise ValueError(f"head_init must be one of {HEAD_INITS}, got {head_init!r}")
        self.benchmark = benchmark
        self.head_init = head_init
        self.c_grid = tuple(c_grid)
        self.cache_dir = cache_dir  # fitted probes, shared between runs (None: no cache)
        self.reference = reference  # a randomly initialized backbone, or None
        self.announce = announce  # announce(line): progress of probe fits that are not cached
        self.feature_cache = feature_cache  # features of frozen backbones, shared between runs
        self.start_weights = start_weights  # weights_key of the run's starting backbone
        self.meter = meter  # images and seconds of the feature passes
        self._reference_weights: str | None = None
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
        valid = getattr(self.benchmark, "valid_stream", None)
        datasets = {"train": exp.dataset.eval(),
                    "val": valid[i].dataset.eval() if valid is not None else None,
                    "test": self.benchmark.test_stream[i].dataset.eval()}
        as_eval = {"inputs": getattr(strategy, "inputs", None),
                   "autocast": getattr(strategy, "autocast", nullcontext),
                   "workers": getattr(strategy, "loader_workers", 0), "meter": self.meter}
        where = f"task {i + 1}/{len(self.benchmark.train_stream)}"
        own = self.start_weights
        if own is not None and weights_key(model.backbone_for(task)) != own:
            own = None  # moved (or conditioned on the task) since the start: not shareable
        feats = self.features(lambda x: model.features(x, task), own, i, datasets, device,
                              as_eval)
        probe = self.fit(feats, n_classes, f"{where}: linear probe")
        self.probes[i] = probe
        self.probe_acc[i] = probe.accuracy(*feats["test"])
        self.probe_train_acc[i] = probe.accuracy(*feats["train"])
        if self.reference is not None and i not in self.random_probe_acc:
            self.reference.to(device).eval()
            if self.feature_cache is not None and self._reference_weights is None:
                self._reference_weights = weights_key(self.reference)
            feats = self.features(self.reference, self._reference_weights, i, datasets, device,
                                  as_eval)
            reference = self.fit(feats, n_classes, f"{where}: random-init probe")
            self.random_probe_acc[i] = reference.accuracy(*feats["test"])
        if isinstance(head, StandardizedHead):  # a plain head keeps its own start
            if self.head_init == "probe":
                probe.copy_into(head)
            else:
                head.set_statistics(probe.mean, probe.std)
        model.train(was_training)
        self.seconds += time.perf_counter() - start

    def features(self, features, weights: str | None, i: int, datasets: dict, device,
                 as_eval: dict) -> dict:
        """Per split, (features, labels) through ``features``; from the shared cache when
        ``weights`` (the backbone's ``weights_key``) is given."""
        out = {}
        for split, data in datasets.items():
            def compute(data=data):
                return task_features(features, data, device, **as_eval)

            if data is None:
                out[split] = (None, None)
            elif weights is None or self.feature_cache is None:
                out[split] = compute()
            else:
                out[split] = self.feature_cache.get(weights, f"task{i}-{split}", device, compute)
        return out

    def fit(self, feats: dict, n_classes: int, label: str) -> LinearProbe:
        """The probe on ``feats`` (train, validation, test); a fit that is not cached is
        announced as ``label``."""
        tr, va = feats["train"], feats["val"]
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
        return probe
