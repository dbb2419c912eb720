"""Learning-rate rules and schedules: the one place where a strategy's rates are derived.

Rates. Papers that train with the DeiT recipe give a *base* rate at batch 1024 and scale it
linearly with the batch: lr = base x batch / 1024 (:func:`linear_scaled`, from the run's actual
batch size); L2P's and DualPrompt's code scale theirs the same way from batch 256
(``reference``). Binary masks learned through Gumbel logits (MEAT) have two logits per entry in
the paper, (t_keep, t_drop), and one logit d = t_keep - t_drop here (``models.masks.GumbelRule``).
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

Budgets (:func:`budget_factor`). A paper's rates belong to its budget: MEAT trains 30 epochs of
its datasets at batch 256, about 2,500 steps per task, in which a mask logit started at 8 can
cross 0; at 150 steps and the same rates none can. A strategy that registers its paper's budget
(:class:`PaperBudget`) has its registered rates scaled so that a task's *learning-rate mass*,
the sum of its rates over the task's steps, is the paper's: a schedule scales every budget
alike, so the mass is rate x steps x the schedule's mean, and

- a budget of E epochs trains at the rates x E_paper / E (the paper's mass over the same data;
  1 at the paper's epochs, so the paper protocol is untouched);
- a budget of S steps trains at the rates the paper used at its batch x S_paper / S, where
  S_paper = E_paper x (its datasets' mean training images) / B_paper. Linearly batch-scaled
  rates (lr = base x batch / 1024) are therefore taken at the paper's batch: x B_paper / B.

Adam moves a parameter by about its rate per step, so the same mass lets masks travel as far as
in the paper. Tuned and user values are never scaled (they were chosen at the run's budget);
runs at scaled rates are labelled ``+budget`` (``benchmarks.suites``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("cosine", "warmup_cosine", "step", "constant")
REFERENCE_BATCH = 1024
WARMUP_FRACTION = 1 / 6
STEP_AT, STEP_FACTOR = 0.5, 0.1
LR_SCALINGS = ("linear", "none")


def linear_scaled(base: float, batch_size: int, scaling: str = "linear",
                  reference: int = REFERENCE_BATCH) -> float:
    """base x batch / reference (``scaling="linear"``), or ``base`` unchanged (``"none"``)."""
    if scaling not in LR_SCALINGS:
        raise ValueError(f"lr scaling must be one of {LR_SCALINGS}, got {scaling!r}")
    return base * batch_size / reference if scaling == "linear" else base


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



@dataclass(frozen=True)
class PaperBudget:
    """A paper's budget per task: ``epochs`` over ``images`` training images (the mean of its
    datasets) at batch ``batch``; ``rates`` names the hyperparameters that are learning rates."""

    epochs: int
    images: int
    batch: int
    rates: tuple[str, ...]

    @property
    def steps(self) -> float:
        """Optimizer steps per task in the paper: E_paper x images / B_paper."""
        return self.epochs * self.images / self.batch


def budget_factor(budget: PaperBudget, *, epochs: int, steps_per_task: int | None,
                  batch_size: int, lr_scaling: str = "none") -> float:
    """The factor on the registered rates that keeps the paper's learning-rate mass per task
    (module docstring): E_paper / E for a budget in epochs; S_paper / S for one in steps, times
    B_paper / B for rates that are scaled linearly with the run's batch."""
    if steps_per_task is None:
        return budget.epochs / epochs
    factor = budget.steps / steps_per_task
    return factor * budget.batch / batch_size if lr_scaling == "linear" else factor
