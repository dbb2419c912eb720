"""What makes a run survive interruption: a lock per run folder and a checkpoint per task.

- :func:`run_lock`: an exclusive, non-blocking lock (:func:`atomicio.file_lock`) on
  ``<run folder>/.lock`` held for the whole run, so two sweeps writing into the same output
  folder never run (and write) the same run at once; the kernel releases it when the process
  dies, even by SIGKILL. A filesystem without ``flock`` (Lustre without ``-o flock``) is
  :class:`atomicio.LocksUnsupported`, which the CLI checks for before any work.
- :func:`save_resume` / :func:`load_resume`: ``<run folder>/resume.pt``, rewritten atomically
  after every finished task, holds what continuing the run needs: the whole multi-task model
  (every head, mask, gate, adapter and per-task backbone), the state of the strategy's own
  plugins (LwF's previous model, HAT's gates, Avalanche's clock, ...), the record so far and the
  RNG states of torch, numpy, ``random`` and the run's CUDA device. Model and plugin states are
  pickled together, so a plugin that points at a module of the model still points at the same
  module after loading. A run resumed from it continues exactly as if it had never stopped (same
  accuracy matrix on CPU; tested by SIGKILL in ``tests/test_sweeps.py``). It is loaded on the
  CPU, whatever device wrote it: ``torch.set_rng_state`` takes only CPU tensors, and a CPU-only
  machine can read a GPU run's state; :func:`restore` then moves model and plugin states to the
  strategy's device.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from avalanche.training.plugins import EvaluationPlugin
from torch import nn

from atomicio import LockHeld, atomic_write, file_lock

RESUME_FILE = "resume.pt"
LOCK_FILE = ".lock"
FORMAT = 1


RunLocked = LockHeld  # another process is running this run (its folder's lock is held)


def run_lock(folder: Path):
    return file_lock(Path(folder) / LOCK_FILE, blocking=False)


def rng_state(device: torch.device) -> dict:
    """The RNG states of torch (CPU), numpy, ``random`` and, on a CUDA run, of its own device
    only: a run draws on no other GPU, and a resume may see fewer GPUs than the run did."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
             "random": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore :func:`rng_state`'s states, the CUDA one onto ``device`` (the resumed run's)."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["random"])
    if "cuda" in state and device.type == "cuda":
        cuda = state["cuda"]
        if isinstance(cuda, list):  # an older file: one state per GPU the run saw, and its
            cuda = cuda[0]  # device ``cuda`` was the first of them
        torch.cuda.set_rng_state(cuda, device)


def strategy_plugins(strategy, runner_plugins) -> list:
    """The plugins whose state belongs to the strategy: all but the runner's own (counting,
    logging, probe) and Avalanche's evaluator (no state the run needs)."""
    return [p for p in strategy.plugins
            if not any(p is q for q in runner_plugins) and not isinstance(p, EvaluationPlugin)]


def save_resume(folder: Path, strategy, runner_plugins, progress: dict) -> None:
    """Atomically write the state after a finished task. ``progress`` is the runner's own part
    (next task index, record, rows, log rows, ...)."""
    state = {"format": FORMAT, "progress": progress, "model": strategy.model,
             "plugins": [p.__dict__ for p in strategy_plugins(strategy, runner_plugins)],
             "rng": rng_state(strategy.device)}
    atomic_write(Path(folder) / RESUME_FILE, lambda f: torch.save(state, f))


def load_resume(folder: Path) -> dict | None:
    """The saved state, on the CPU, or None if there is none or it cannot be read (then the run
    starts over)."""
    path = Path(folder) / RESUME_FILE
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # a checkpoint that does not load is no checkpoint
        return None
    return state if isinstance(state, dict) and state.get("format") == FORMAT else None


def move_to(value, device, seen: set | None = None) -> None:
    """Move every module and tensor reachable from ``value`` (through dicts, lists, tuples,
    sets and objects' attributes) to ``device``, in place: a plugin's reference to a module or
    tensor it shares with the model (or with another plugin) stays shared."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, nn.Module):
        value.to(device)
    elif isinstance(value, torch.Tensor):
        value.data = value.data.to(device)
    elif isinstance(value, dict):
        for v in value.values():
            move_to(v, device, seen)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            move_to(v, device, seen)
    elif hasattr(value, "__dict__") and not isinstance(value, type):
        move_to(vars(value), device, seen)


def restore(strategy, runner_plugins, state: dict) -> dict:
    """Put a saved state (as loaded, on the CPU) into a freshly built strategy (same config),
    move model and plugin states to the strategy's device, and return the runner's progress.
    Call right before training the next task: the RNG states are restored too."""
    plugins = strategy_plugins(strategy, runner_plugins)
    if len(plugins) != len(state["plugins"]):
        raise RuntimeError("resume state does not match the strategy's plugins")
    strategy.model = state["model"]
    for plugin, saved in zip(plugins, state["plugins"], strict=True):
        plugin.__dict__.update(saved)
    move_to([strategy.model, *plugins], strategy.device)
    set_rng_state(state["rng"], strategy.device)
    return state["progress"]


def clear_resume(folder: Path) -> None:
    """Drop the checkpoint of a finished run (the per-task files keep what prediction needs)."""
    (Path(folder) / RESUME_FILE).unlink(missing_ok=True)
