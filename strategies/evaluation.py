"""Evaluation batches of a run's strategy, shared by the runner and its class-incremental
evaluation."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader


def eval_batches(strategy, dataset):
    """(model input on the device, labels) of ``dataset``'s batches, the model in evaluation
    mode (no augmentation). The global RNG is left as it was found (a DataLoader draws a seed),
    so measuring does not change the run's training."""
    model = strategy.model
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            for batch in DataLoader(dataset, batch_size=strategy.eval_mb_size):
                x, y = batch[0].to(strategy.device), batch[1]  # (x, y) or Avalanche's (x, y, t)
                yield (x if strategy.inputs is None else strategy.inputs(x, False)), y
    finally:
        model.train(was_training)
