"""Task-agnostic (class-incremental) prediction: the task id is not given at test time.

A class is a (task, label) pair; after training tasks 0..i the model predicts over every class
seen so far, and a prediction is right when both its task and its label are. The model scores a
sample under every task seen (``MultiTaskViT.forward_all_tasks``: the logits z_t of task t's head
on the features task t's per-task state gives); a rule picks the task t^, and the label is
argmax z_t^ — the predicted task's own masks, modules and head classify. Ties go to the earlier
task. The rules (:data:`RULES`):

- ``max_logit`` — one classifier grown by a head per task: t^ = argmax_t max_c z_t,c, i.e. the
  argmax over the concatenation [z_0, ..., z_i]. For strategies whose features do not depend on
  the task (classifier, fine-tuning, LwF, the prompt methods) this is exactly a single growing
  head, the prompt papers' own test rule.
- ``entropy`` — SupSup's entropy criterion, per sample (Wortsman et al., 2020): the task whose
  softmax is the most confident, t^ = argmin_t H(softmax(z_t)). SupSup itself decides once per
  test batch (see ``entropy_batch``).
- ``calibrated_max_logit`` — TPL's replay-free MLS term (Lin et al., ICLR 2024): max_c z_t,c
  divided by m_t, the mean of that max logit over task t's own training data after training t,
  so heads folded with different feature scales compare (|m_t|, kept away from 0).
- ``mahalanobis`` — the replay-free Mahalanobis term of TPL/MORE: on a task-independent view of
  the input (the frozen starting backbone, without any task's masks or modules), t^ = argmin_t
  min_c (f - mu_t,c)^T P_t (f - mu_t,c) over the class means mu_t,c of every task's training
  features. P_t is the inverse of a covariance estimated from the within-class scatter, one rule
  per estimate (:data:`MAHALANOBIS_COVARIANCE`): ``mahalanobis`` pools it over the tasks seen
  (one d x d estimate from every class, the steadiest with a few hundred images per task),
  ``mahalanobis_task`` uses task t's own (TPL's form) and ``mahalanobis_diagonal`` the pooled
  variances only. Each estimate is shrunk toward its mean variance, (1 - a) S + a tr(S)/d I
  (``shrinkage`` a, default :data:`SHRINKAGE`), so it inverts with fewer samples than
  dimensions; which estimate a run uses is chosen on validation data like every rule.

``entropy_batch`` (:data:`BATCH_RULES`) is SupSup's lowest-entropy task chosen once per test
batch, from the batch-mean entropy: it assumes every test batch comes from one task (true of
the suite's per-task test batches, not of a mixed stream), so it is reported beside the rules,
labelled so, and never chosen.

What task prediction keeps of each task (:class:`TaskStatistics`, saved in the task's file and
counted in its storage): K_t x d class means, the d x d within-class scatter, the sample count
and m_t.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MAHALANOBIS_COVARIANCE = {"mahalanobis": "shared", "mahalanobis_task": "task",
                          "mahalanobis_diagonal": "diagonal"}
RULES = ("max_logit", "entropy", "calibrated_max_logit", *MAHALANOBIS_COVARIANCE)
BATCH_RULES = ("entropy_batch",)
COVARIANCES = tuple(MAHALANOBIS_COVARIANCE.values())
SHRINKAGE = 0.1
RULE_LABELS = {
    "max_logit": "largest logit over every head (one growing classifier)",
    "entropy": "SupSup's entropy criterion, per sample",
    "calibrated_max_logit": "TPL's calibrated max logit (per-task mean on its training data)",
    "mahalanobis": "TPL's Mahalanobis distance on the frozen backbone, pooled covariance",
    "mahalanobis_task": "TPL's Mahalanobis distance on the frozen backbone, per-task covariance",
    "mahalanobis_diagonal": "TPL's Mahalanobis distance on the frozen backbone, pooled variances",
    "entropy_batch": "SupSup's lowest entropy per test batch (assumes one task per batch)",
}


@dataclass
class TaskStatistics:
    """Task t's training data as task prediction keeps it: class means (K, d) and within-class
    scatter sum_i (f_i - mu_y_i)(f_i - mu_y_i)^T (d, d) of the task-independent features, the
    sample count, and m_t, the mean max logit of its own head on its own features."""

    means: torch.Tensor
    scatter: torch.Tensor
    count: int
    mean_max_logit: float

    @classmethod
    def fit(cls, feats: torch.Tensor, labels: torch.Tensor, n_classes: int,
            mean_max_logit: float) -> TaskStatistics:
        feats = feats.double()
        means = torch.zeros(n_classes, feats.shape[1], dtype=torch.float64, device=feats.device)
        means.index_add_(0, labels, feats)
        counts = torch.bincount(labels, minlength=n_classes).clamp_min(1)
        means /= counts[:, None]
        centered = feats - means[labels]
        return cls(means.float(), (centered.T @ centered).float(), len(labels), mean_max_logit)

    def state(self) -> dict[str, torch.Tensor]:
        return {"means": self.means, "scatter": self.scatter,
                "count": torch.tensor(self.count), "mean_max_logit":
                torch.tensor(self.mean_max_logit)}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> TaskStatistics:
        return cls(state["means"], state["scatter"], int(state["count"]),
                   float(state["mean_max_logit"]))

    def size(self) -> int:
        """Numbers kept: means, scatter, count and m_t."""
        return self.means.numel() + self.scatter.numel() + 2


def shrunk(cov: torch.Tensor, shrinkage: float) -> torch.Tensor:
    """(1 - a) S + a tr(S)/d I."""
    d = cov.shape[0]
    return (1 - shrinkage) * cov + shrinkage * cov.diagonal().sum() / d * torch.eye(
        d, dtype=cov.dtype, device=cov.device)


def precisions(stats: list[TaskStatistics], covariance: str = "shared",
               shrinkage: float = SHRINKAGE) -> list[torch.Tensor]:
    """One precision matrix per task (the same one for ``shared`` and ``diagonal``)."""
    if covariance not in COVARIANCES:
        raise ValueError(f"covariance must be one of {COVARIANCES}, got {covariance!r}")

    def dof(s: TaskStatistics) -> int:
        return max(s.count - s.means.shape[0], 1)

    if covariance == "task":
        return [torch.linalg.inv(shrunk(s.scatter.double() / dof(s), shrinkage)).float()
                for s in stats]
    pooled = sum(s.scatter.double() for s in stats) / sum(dof(s) for s in stats)
    if covariance == "diagonal":
        pooled = torch.diag(pooled.diagonal())
    precision = torch.linalg.inv(shrunk(pooled, shrinkage)).float()
    return [precision] * len(stats)


def mahalanobis_confidence(feats: torch.Tensor, stats: list[TaskStatistics],
                           precision: list[torch.Tensor]) -> torch.Tensor:
    """(B, T): -min_c (f - mu_t,c)^T P_t (f - mu_t,c) for each task t."""
    out = []
    for s, p in zip(stats, precision, strict=True):
        diff = feats.float()[:, None, :] - s.means[None].to(feats.device)  # (B, K, d)
        out.append(-torch.einsum("bkd,de,bke->bk", diff, p.to(feats.device), diff).amin(dim=1))
    return torch.stack(out, dim=1)


def task_confidence(logits: torch.Tensor, rule: str, mean_max_logit: float = 1.0) -> torch.Tensor:
    """Per sample, how strongly one task's logits (B, K) claim the sample (higher wins): the
    largest logit (divided by the task's m_t for ``calibrated_max_logit``), or the negative
    entropy of the softmax."""
    if rule == "max_logit":
        return logits.float().amax(dim=1)
    if rule == "calibrated_max_logit":
        return logits.float().amax(dim=1) / max(abs(mean_max_logit), 1e-6)
    if rule in ("entropy", "entropy_batch"):
        logp = torch.log_softmax(logits.float(), dim=1)
        return (logp.exp() * logp).sum(dim=1)
    raise ValueError(f"task-inference rule must be one of {RULES + BATCH_RULES}, got {rule!r}")


def infer(scores: dict[int, torch.Tensor], rule: str,
          stats: dict[int, TaskStatistics] | None = None, frozen_feats: torch.Tensor | None = None,
          precision: dict[int, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(inferred task, predicted label) per sample from ``{task: logits (B, K_task)}``.

    ``calibrated_max_logit`` needs every task's ``stats``; the Mahalanobis rules also the batch's
    task-independent ``frozen_feats`` and a ``precision`` per task (:func:`precisions` of the
    rule's covariance)."""
    tasks = sorted(scores)
    if rule in MAHALANOBIS_COVARIANCE:
        confidence = mahalanobis_confidence(frozen_feats, [stats[t] for t in tasks],
                                            [precision[t] for t in tasks])
    else:
        confidence = torch.stack(
            [task_confidence(scores[t], rule,
                             stats[t].mean_max_logit if rule == "calibrated_max_logit" else 1.0)
             for t in tasks], dim=1)
    if rule == "entropy_batch":
        confidence = confidence.mean(dim=0, keepdim=True).expand_as(confidence)
    best = confidence.argmax(dim=1)  # the first maximum: ties go to the earlier task
    labels = torch.stack([scores[t].argmax(dim=1) for t in tasks], dim=1)
    label = labels.gather(1, best[:, None]).squeeze(1)
    return torch.tensor(tasks, device=best.device)[best], label


def cosine_nearest_mean(feats: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """SimpleCIL's prediction (Zhou et al., 2023): the index of the class mean (rows of
    ``means``, every class seen) with the largest cosine similarity to each feature."""
    f = torch.nn.functional.normalize(feats.float(), dim=1)
    m = torch.nn.functional.normalize(means.float().to(feats.device), dim=1)
    return (f @ m.T).argmax(dim=1)
