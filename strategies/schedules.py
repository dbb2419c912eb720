"""Learning-rate rules and schedules: the one place where a strategy's rates are derived.

Rates. Papers that train with the DeiT recipe give a *base* rate at batch 1024 and scale it
linearly with the batch: lr = base x batch / 1024 (:func:`linear_scaled`, from the run's actual
batch size). Binary masks learned through Gumbel logits (MEAT) have two logits per entry in the
paper, (t_keep, t_drop), and one logit d = t_keep - t_drop here (``models.masks.GumbelRule``).
For the same loss, dL/dt_keep = dL/dd and dL/dt_drop = -dL/dd, so Adam's moment estimates of the
two logits are mirror images (m_keep = -m_drop, v_keep = v_drop) and each step moves them by
the same amount in opposite directions: Delta(t_keep - t_drop) = 2 x (Adam's step at lr). A single
logit at rate 2 lr takes exactly that step (Adam's step is linear in lr), so
:func:`one_logit_lr` = 2 x the two-logit rate (checked in ``tests/test_schedules.py``).

Schedules (a factor of each group's rate, per optimizer step s of a task's S steps):

- ``cosine``: 0.5 (1 + cos(pi s / S)), the suite's default;
- ``warmup_cosine``: linear warm-up from 0 over the first ``warmup`` fraction of the task, then
  cosine to 0 (MEAT's official code, the DeiT recipe: 5 warm-up epochs of 30, so 1/6; its
  absolute floors, warm-up from 1e-6 and a minimum of 1e-5, are left out);
- ``step``: 1, then 0.1 from the middle of the task on (Piggyback: x0.1 at epoch 15 of 30);
- ``constant``: 1 (HAT's SGD; the paper's decay on a validation-loss plateau is not used).
"""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "warmup_cosine", "step", "constant")
REFERENCE_BATCH = 1024
WARMUP_FRACTION = 1 / 6
STEP_AT, STEP_FACTOR = 0.5, 0.1
LR_SCALINGS = ("linear", "none")


def linear_scaled(base: float, batch_size: int, scaling: str = "linear") -> float:
    """base x batch / 1024 (``scaling="linear"``), or ``base`` unchanged (``"none"``)."""
    if scaling not in LR_SCALINGS:
        raise ValueError(f"lr scaling must be one of {LR_SCALINGS}, got {scaling!r}")
    return base * batch_size / REFERENCE_BATCH if scaling == "linear" else base


def one_logit_lr(two_logit_lr: float) -> float:
    """The rate at which one logit d moves as fast as t_keep - t_drop under a two-logit rate."""
    return 2.0 * two_logit_lr


def lr_factor(schedule: str, step: int, total: int) -> float:
    """The schedule's factor at optimizer step ``step`` (0-based) of ``total``."""
    total = max(total, 1)
    s = min(step, total)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * s / total))
    if schedule == "warmup_cosine":
        warm = max(1, round(WARMUP_FRACTION * total))
        if s < warm:
            return (s + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * (s - warm) / max(total - warm, 1)))
    if schedule == "step":
        return 1.0 if s < STEP_AT * total else STEP_FACTOR
    if schedule == "constant":
        return 1.0
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")

