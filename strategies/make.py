"""Any registered strategy for your own Avalanche loop, set up as the suite's runner sets it up.

:func:`make_strategy` gives the strategy its registered hyperparameters (rates scaled to the
budget as the runner scales them, ``strategies.registry.budget_hparams``; updated with yours), its
per-group learning rates and per-task optimizer (``strategies.common.ContinualTemplate``), the
probe head (``strategies.heads.ProbeHeadPlugin``, started as ``head_init`` says) and, if you pass
one, your Avalanche evaluator::

    strategy = make_strategy("meat", backbone, benchmark, epochs=1, evaluator=evaluator)
    for i, experience in enumerate(benchmark.train_stream):
        strategy.train(experience)
        metrics = strategy.eval(benchmark.test_stream[: i + 1])

``backbone`` is a timm ViT that returns pooled features (``timm.create_model(name,
num_classes=0)``); ``benchmark`` is an Avalanche benchmark with task labels whose ``train_stream``
and ``test_stream`` are aligned (experience i of each is task i). A ``valid_stream`` aligned the
same way, if present, chooses the probe's regularization (C = 1 without one). With the suite's
own streams (``benchmarks.data.streams.build_stream(...).to_benchmark()``), the same seed and the
same budget, the accuracies equal the runner's (tests/test_make_strategy.py).
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import models.registered  # noqa: F401  (the suite's backbones, for timm.create_model in your loop)
from models.inputs import to_float
from strategies.class_incremental import ClassIncrementalEval
from strategies.common import ContinualTemplate
from strategies.heads import ProbeHeadPlugin
from strategies.registry import (
    TrainSettings,
    budget_hparams,
    get_strategy,
    resolve_hparams,
)
from vocab import HEAD_INIT_CHOICES


def as_float_images(x, train: bool):
    """Model inputs from image batches (``models.inputs.to_float``: uint8 -> [0, 1], floats
    pass), as the runner's ``preprocess: none`` gives them."""
    return to_float(x)


def make_strategy(name: str, backbone, benchmark, *, hparams: dict | None = None,
                  head_init: str = "auto", epochs: int = 1, steps_per_task: int | None = None,
                  batch_size: int = 64, eval_batch_size: int = 512, device: str = "cpu",
                  precision: str = "fp32", inputs=as_float_images, plugins=(), evaluator=None,
                  probe_cache: Path | None = None,
                  task_agnostic: bool = False) -> ContinualTemplate:
    """The registered strategy ``name`` on ``backbone``, trained and evaluated on ``benchmark``.

    ``hparams`` override the registered values (``docs/strategies.md``, "Strategies", lists them);
    ``head_init`` is ``auto`` (the strategy's registered choice), ``probe`` or ``random``; a budget
    is ``epochs`` per task or exactly ``steps_per_task`` optimizer steps; ``inputs(x, train)``
    turns a batch on the device into model inputs; ``plugins`` are added to the strategy's own;
    ``probe_cache`` memoizes probe fits on disk. The probe plugin is ``strategy.probe``: its
    ``probe_acc`` holds each task's linear-probe reference accuracy. With ``task_agnostic``,
    ``strategy.class_incremental`` (``strategies.class_incremental.ClassIncrementalEval``, on a
    copy of ``backbone`` taken now) predicts without task ids as the runner does: call its
    ``after_task(i)`` after training experience i for the record's class-incremental fields
    (every rule's matrices, the rule chosen on ``valid_stream``, SimpleCIL and the joint probe).
    """
    info = get_strategy(name)
    if head_init not in HEAD_INIT_CHOICES:
        raise ValueError(f"head_init must be one of {HEAD_INIT_CHOICES}, got {head_init!r}")
    head_init = info.head_init if head_init == "auto" else head_init
    probe = ProbeHeadPlugin(benchmark, head_init, cache_dir=probe_cache)
    settings = TrainSettings(epochs=epochs, steps_per_task=steps_per_task, batch_size=batch_size,
                             eval_batch_size=eval_batch_size, device=device, head_init=head_init,
                             plugins=[probe, *plugins], precision=precision, inputs=inputs,
                             evaluator=evaluator)
    hp, _ = budget_hparams(name, resolve_hparams(name, hparams), set(hparams or {}),
                           epochs=epochs, steps_per_task=steps_per_task, batch_size=batch_size)
    frozen = copy.deepcopy(backbone) if task_agnostic else None  # before the strategy
    strategy = info.build(backbone, hp, settings)
    strategy.probe = probe
    if task_agnostic:
        valid = getattr(benchmark, "valid_stream", None)
        tasks = [SimpleNamespace(train=train.dataset.eval(), test=test.dataset.eval(),
                                 val=None if valid is None else valid[i].dataset.eval())
                 for i, (train, test) in enumerate(zip(benchmark.train_stream,
                                                       benchmark.test_stream, strict=True))]
        strategy.class_incremental = ClassIncrementalEval(
            strategy, frozen, tasks, [exp.task_label for exp in benchmark.test_stream],
            info.task_inference, probe_cache=probe_cache)
    return strategy
