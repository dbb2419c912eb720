"""The prompt-pool methods' paper form, shared by L2P, DualPrompt and CODA-Prompt
(``strategies.l2p``, ``strategies.dualprompt``, ``strategies.coda_prompt``).

Head (``head``). The papers train one linear classifier over every class seen, weight
trunc-normal (std 0.02), bias 0, with the logits of classes outside the current task masked in
training (L2P/DualPrompt ``train_mask``; CODA-Prompt sets past classes to -inf), and predict by
the argmax over every class seen. Here each task has its own head (``models.multitask``) trained
by cross-entropy over its own task's logits, and class-incremental prediction takes the argmax
over all heads' concatenated logits (``max_logit``, ``models.task_inference``): that *is* the
masked single classifier, since a masked logit gets zero gradient and other tasks' rows never
change. ``head: plain`` is that head (``models.heads.PlainHead``: no standardization, never
started from the probe, whatever ``head_init`` says); ``head: standardized`` is the suite's
``StandardizedHead``, started from the probe as ``head_init`` says (the suite's earlier form of
these methods). The probe references are computed either way.

Optimizer. Prompts (keys, components) and the head train in one group with Adam (betas 0.9,
0.999, no weight decay) at lr = ``lr`` x batch / 256 (``lr_scaling: linear``, L2P's and
DualPrompt's code: 0.03, constant schedule) or at ``lr`` itself (``lr_scaling: none``;
CODA-Prompt: 1e-3, cosine), the run's batch and ``schedule``. The rates are used as the papers
give them at any budget (no ``strategies.schedules.PaperBudget``: nothing here has to travel a
fixed distance, as MEAT's and Piggyback's mask logits do). Not done: L2P's and DualPrompt's
gradient clipping at norm 1.
"""

from __future__ import annotations

from torch import nn

from models.heads import PlainHead, StandardizedHead
from strategies.registry import TrainSettings
from strategies.schedules import linear_scaled
from strategies.skeleton import BackbonePlugin

HEADS = {"plain": PlainHead, "standardized": StandardizedHead}
REFERENCE_BATCH = 256  # L2P's and DualPrompt's code: lr x batch / 256


class PromptPlugin(BackbonePlugin):
    """A prompt method in its paper form (module docstring): ``hp["head"]`` heads, prompts and
    head in one Adam group."""

    optimizer = "adam"

    def head_type(self, hp: dict) -> type[nn.Linear]:
        if hp["head"] not in HEADS:
            raise ValueError(f"head must be one of {sorted(HEADS)}, got {hp['head']!r}")
        return HEADS[hp["head"]]

    def param_groups(self, model: nn.Module, task: int, hp: dict,
                     settings: TrainSettings) -> list[dict]:
        """One group: the task's prompts and its head at the rate the module docstring gives."""
        lr = linear_scaled(hp["lr"], settings.batch_size, hp["lr_scaling"], REFERENCE_BATCH)
        return [{"params": [*self.task_trainable(task), *model.heads[str(task)].parameters()],
                 "lr": lr}]
