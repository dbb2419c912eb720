"""Passes over whole datasets outside training: features for probes, head calibration and task
statistics, and their cache for frozen backbones.

:func:`task_features` reads a dataset through the same kind of loader as training (its worker
processes; on CUDA pinned memory and non-blocking copies) and keeps the features on the device.
A :class:`PassMeter` counts the images these passes read and their seconds (a run's
``timing.fixed_images`` / ``timing.fixed_s``).

:class:`FeatureCache` keeps on disk the features of a backbone that no run changes — the random
reference, the frozen starting backbone of class-incremental evaluation, and a run's own backbone
at a task's start while its weights are still the starting ones (e.g. ``classifier``, or
``finetune`` at its first task) — keyed by (the backbone's weights, the run's data key, task,
split): every run of a sweep with the same backbone, seed and data reads them instead of
recomputing them. A backbone is eligible only when its function is fixed by its class and state:
no task modules (whose current task also decides the output) and no forward hooks.
:func:`weights_key` is sha256 of the class, ``repr`` (the architecture) and every state tensor.
Runs computing the same entry take one lock: one computes, the others read. Features computed
with another torch thread count may differ in the last bits (one sweep runs with one count).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from atomicio import atomic_write, file_lock
from models.tasks import task_modules

Features = tuple[torch.Tensor, torch.Tensor]  # (features, labels) on the run's device


@dataclass
class PassMeter:
    """Images read by passes outside training, and their seconds."""

    images: int = 0
    seconds: float = 0.0

    def add(self, images: int, seconds: float) -> None:
        self.images += images
        self.seconds += seconds

    def take(self) -> tuple[int, float]:
        """(images, seconds) since the last call."""
        out = (self.images, self.seconds)
        self.images, self.seconds = 0, 0.0
        return out


@torch.inference_mode()
def task_features(features, dataset: Dataset, device, batch_size: int = 1024, inputs=None,
                  autocast=nullcontext, workers: int = 0,
                  meter: PassMeter | None = None) -> Features:
    """(features, labels) of a whole dataset through ``features(x)`` (e.g. a multi-task model's
    ``features(x, task)``), as float32 features and labels on ``device``. ``inputs(x,
    train=False)`` turns a batch on the device into model inputs and ``autocast()`` gives the
    precision context, as for evaluation; ``workers`` loader processes read ahead. The global
    RNG is left as it was found: a run trains the same with or without these passes."""
    start, device = time.perf_counter(), torch.device(device)
    feats, labels = [], []
    with torch.random.fork_rng(devices=[]):  # a DataLoader draws a seed: leave training's RNG
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                            pin_memory=device.type == "cuda")
        for batch in loader:
            x = batch[0].to(device, non_blocking=True)
            if inputs is not None:
                x = inputs(x, False)
            with autocast():
                feats.append(features(x).float())
            labels.append(torch.as_tensor(batch[1]).to(device, non_blocking=True))
    out = torch.cat(feats), torch.cat(labels)
    if meter is not None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # one wait per pass, for its seconds
        meter.add(len(out[1]), time.perf_counter() - start)
    return out


def weights_key(backbone: nn.Module) -> str | None:
    """sha256 of what fixes ``backbone``'s evaluation function (class, architecture, state), or
    None when more than its state decides it (task modules, forward hooks)."""
    if task_modules(backbone) or any(m._forward_hooks or m._forward_pre_hooks
                                     for m in backbone.modules()):
        return None
    h = hashlib.sha256(f"{type(backbone).__qualname__}|{backbone!r}|".encode())
    for name, tensor in backbone.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class FeatureCache:
    """Features of frozen backbones on one run's data, shared on disk (module docstring).

    ``data_key`` names everything besides the backbone that the features depend on (stream,
    seed, data, preprocessing, precision); ``folder`` None keeps nothing on disk."""

    def __init__(self, folder: Path | None, data_key: str):
        self.folder, self.data_key = (None if folder is None else Path(folder)), data_key
        self.hits = 0  # entries read from disk (what a sweep's later runs save)

    def get(self, weights: str, name: str, device, compute: Callable[[], Features]) -> Features:
        """The features named ``name`` (e.g. ``task3-train``) of the backbone whose
        :func:`weights_key` is ``weights``: read, or computed by ``compute()`` and stored."""
        if self.folder is None:
            return compute()
        key = hashlib.sha256(f"{weights}|{self.data_key}|{name}".encode()).hexdigest()[:32]
        path = self.folder / f"{key}.pt"
        self.folder.mkdir(parents=True, exist_ok=True)
        with file_lock(self.folder / f".{key}.lock"):
            if path.is_file():
                self.hits += 1
                feats, labels = torch.load(path, map_location=device, weights_only=True)
                return feats, labels
            feats, labels = compute()
            atomic_write(path, lambda f: torch.save((feats.cpu(), labels.cpu()), f))
        return feats, labels
