"""Task-agnostic (class-incremental) prediction: the task id is not given at test time.

A class is a (task, label) pair; after training tasks 0..i the model predicts over every class
seen so far, and a prediction is right when both its task and its label are. The model scores a
sample under every task seen (``MultiTaskViT.task_scores``: the logits z_t of task t's head on
the features task t's per-task state gives) and a rule picks the task t^ and the label
argmax z_t^:

- ``max_logit`` — one classifier grown by a head per task: (t^, c^) = the argmax over the
  concatenation [z_0, ..., z_i], i.e. t^ = argmax_t max_c z_t,c. For strategies whose features
  do not depend on the task (classifier, fine-tuning, LwF; prompt pools that choose their prompts
  from the input) this is exactly a single growing head.
- ``entropy`` — SupSup's minimum-entropy rule (Wortsman et al., 2020): the task whose softmax is
  the most confident, t^ = argmin_t H(softmax(z_t)), H(p) = -sum_c p_c log p_c. Per-task state
  (masks, adapters, prompts, backbone copies) changes the features, and a wrong task's state
  tends to give flatter outputs.

Ties go to the earlier task. A model may predict on its own instead (a prompt pool's query-key
selection) by overriding ``MultiTaskViT.task_scores``.
"""

from __future__ import annotations

import torch

RULES = ("max_logit", "entropy")


def task_confidence(logits: torch.Tensor, rule: str) -> torch.Tensor:
    """Per sample, how strongly one task's logits (B, K) claim the sample under ``rule``
    (higher wins): the largest logit, or the negative entropy of the softmax."""
    if rule == "max_logit":
        return logits.float().amax(dim=1)
    if rule == "entropy":
        logp = torch.log_softmax(logits.float(), dim=1)
        return (logp.exp() * logp).sum(dim=1)
    raise ValueError(f"task-inference rule must be one of {RULES}, got {rule!r}")


def infer(scores: dict[int, torch.Tensor], rule: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(inferred task, predicted label) per sample from ``{task: logits (B, K_task)}``."""
    tasks = sorted(scores)
    confidence = torch.stack([task_confidence(scores[t], rule) for t in tasks], dim=1)
    best = confidence.argmax(dim=1)  # the first maximum: ties go to the earlier task
    labels = torch.stack([scores[t].argmax(dim=1) for t in tasks], dim=1)
    label = labels.gather(1, best[:, None]).squeeze(1)
    return torch.tensor(tasks, device=best.device)[best], label
