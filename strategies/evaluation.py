"""Evaluation batches of a run's strategy, shared by the runner and its class-incremental
evaluation."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader


def eval_batches(strategy, dataset):
    """(model input on the device, labels) of ``dataset``'s batches, the model in evaluation
    mode (no augmentation), through the training loader's workers (pinned, non-blocking copies on
    CUDA). The global RNG is left as it was found (a DataLoader draws a seed),
    so measuring does not change the run's training."""
    model = strategy.model
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            for batch in DataLoader(dataset, batch_size=strategy.eval_mb_size,
                                    num_workers=strategy.loader_workers,
                                    pin_memory=strategy.device.type == "cuda"):
                x = batch[0].to(strategy.device, non_blocking=True)
                y = batch[1]  # (x, y) or Avalanche's (x, y, t)
                yield (x if strategy.inputs is None else strategy.inputs(x, False)), y
    finally:
        model.train(was_training)
