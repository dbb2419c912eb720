"""Class-incremental evaluation of one run (config ``task_agnostic``).

After each task i, every test sample of tasks 0..i is predicted without its task id by every
rule of ``models.task_inference`` (one pass of the model over every seen task's heads; the
rules only read its logits and the frozen view), giving per rule the class-incremental matrix
C[i][j] (share of task j's samples whose task and label are right) and the task-inference
matrix I[i][j] (share whose task is right). The same is done on every seen task's validation
split: the rule the run reports (``chosen``) is the one with the best sample-weighted validation
accuracy over all seen classes after the last task (ties: the order of ``RULES``; per-batch
rules are reported, never chosen).

The frozen view is a copy of the run's starting backbone taken before the strategy touched it
(no task's masks, modules or updates): on it every task keeps its
:class:`models.task_inference.TaskStatistics`, and two references are computed per run, paired
with the run by seed like every strategy:

- SimpleCIL (Zhou et al., 2023): cosine nearest class mean over every class seen;
- the joint probe: one linear probe over every class seen, fitted on all their training data at
  once (``models.heads.fit_linear_probe``, C on the validation splits, memoized on disk) — the
  bound of what a classifier on the frozen features reaches without task ids, not of a strategy
  that adapts the features to each task.
"""

from __future__ import annotations

import torch

from models.heads import fit_linear_probe
from models.task_inference import (
    BATCH_RULES,
    MAHALANOBIS_COVARIANCE,
    RULES,
    SHRINKAGE,
    TaskStatistics,
    cosine_nearest_mean,
    infer,
    precisions,
)
from strategies.evaluation import eval_batches
from strategies.features import FeatureCache, task_features

ALL_RULES = RULES + BATCH_RULES
SPLITS = ("test", "val")


def empty(T: int) -> list[list[float | None]]:
    return [[None] * T for _ in range(T)]


class ClassIncrementalEval:
    """The class-incremental matrices of a run, kept as it trains (see the module docstring).

    ``strategy`` is the run's template (its model, device, inputs and autocast); ``frozen`` the
    untouched copy of its starting backbone; ``tasks`` give each task's ``train``, ``val`` (or
    None) and ``test`` datasets (labels 0..K-1 within the task) and ``labels`` their task
    labels. After training task i, :meth:`after_task` computes row i."""

    def __init__(self, strategy, frozen: torch.nn.Module, tasks: list, labels: list[int],
                 own_rule: str, probe_cache=None, shrinkage: float = SHRINKAGE,
                 feature_cache: FeatureCache | None = None, frozen_weights: str | None = None):
        self.strategy, self.frozen = strategy, frozen.eval().requires_grad_(False)
        self.feature_cache, self.frozen_weights = feature_cache, frozen_weights
        self.tasks, self.labels, self.own_rule = tasks, labels, own_rule
        self.probe_cache, self.shrinkage = probe_cache, shrinkage
        T = len(tasks)
        self.stats: dict[int, TaskStatistics] = {}
        self.rules = {rule: {"cil_acc_matrix": empty(T), "task_inference_matrix": empty(T),
                             "val_acc": [None] * T} for rule in ALL_RULES}
        self.simplecil_acc_matrix = empty(T)
        self.joint_acc_matrix = empty(T)
        self._frozen_memo: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}

    # -- per task ---------------------------------------------------------------------------
    def frozen_features(self, j: int, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, labels) of task j's ``split`` on the frozen view, computed once."""
        key = (j, split)
        if key not in self._frozen_memo:
            s = self.strategy
            self.frozen.to(s.device)

            def compute():
                return task_features(self.frozen, getattr(self.tasks[j], split), s.device,
                                     inputs=s.inputs, autocast=s.autocast,
                                     workers=s.loader_workers, meter=s.fixed_passes)

            self._frozen_memo[key] = (
                compute() if self.feature_cache is None or self.frozen_weights is None
                else self.feature_cache.get(self.frozen_weights, f"task{j}-{split}", s.device,
                                            compute))
        return self._frozen_memo[key]

    def finish_task(self, i: int) -> TaskStatistics:
        """Task i's statistics, once it is trained: class means and scatter on the frozen view,
        and the mean max logit of its own head on its own training features (from the
        template's final pass, ``strategies.common.ContinualTemplate.final_pass``)."""
        task = self.labels[i]
        feats, labels = self.frozen_features(i, "train")
        self.stats[task] = TaskStatistics.fit(feats, labels, self.n_classes(i),
                                              self.strategy.trained[task].mean_max_logit)
        return self.stats[task]

    def n_classes(self, j: int) -> int:
        return self.strategy.model.heads[str(self.labels[j])].out_features

    def after_task(self, i: int) -> dict:
        """Task i's statistics and row i of every matrix, once task i is trained; the record's
        class-incremental fields (:meth:`record_fields`)."""
        self.finish_task(i)
        self.evaluate(i)
        return self.record_fields(i)

    def evaluate(self, i: int) -> None:
        """Row i of every rule's matrices (test) and validation accuracy, and of the
        references."""
        seen = [self.labels[j] for j in range(i + 1)]
        precision = {rule: dict(zip(seen, precisions([self.stats[t] for t in seen], covariance,
                                                     self.shrinkage), strict=True))
                     for rule, covariance in MAHALANOBIS_COVARIANCE.items()}
        val_right = dict.fromkeys(ALL_RULES, 0)
        val_n = 0
        for j in range(i + 1):
            for split in SPLITS:
                if getattr(self.tasks[j], split) is None:
                    continue
                right_class, right_task, n = self.counts(j, split, precision)
                if split == "test":
                    for rule in ALL_RULES:
                        m = self.rules[rule]
                        m["cil_acc_matrix"][i][j] = right_class[rule] / n
                        m["task_inference_matrix"][i][j] = right_task[rule] / n
                else:
                    val_n += n
                    for rule in ALL_RULES:
                        val_right[rule] += right_class[rule]
        for rule in ALL_RULES:
            self.rules[rule]["val_acc"][i] = val_right[rule] / val_n if val_n else None
        self.references(i)

    @torch.inference_mode()
    def counts(self, j: int, split: str, precision: dict) -> tuple[dict, dict, int]:
        """Per rule, (right class, right task) counts on task j's ``split``, and its size
        (``precision``: per Mahalanobis rule, its precision matrix per task)."""
        s, task = self.strategy, self.labels[j]
        frozen_feats, _ = self.frozen_features(j, split)
        right_class, right_task = dict.fromkeys(ALL_RULES, 0), dict.fromkeys(ALL_RULES, 0)
        n, start = 0, 0
        for x, y in eval_batches(s, getattr(self.tasks[j], split)):
            with s.autocast():
                scores = s.model.forward_all_tasks(x)
            f = frozen_feats[start: start + len(y)]
            start += len(y)
            for rule in ALL_RULES:
                pred_task, pred_label = infer(scores, rule, self.stats, f, precision.get(rule))
                hit = pred_task.cpu() == task
                right_task[rule] += int(hit.sum())
                right_class[rule] += int((hit & (pred_label.cpu() == y)).sum())
            n += len(y)
        return right_class, right_task, n

    def references(self, i: int) -> None:
        """Row i of SimpleCIL's and the joint probe's matrices, over the classes of tasks
        0..i on the frozen view (a class's index: its task's offset + its label)."""
        offsets = [0]
        for j in range(i + 1):
            offsets.append(offsets[-1] + self.n_classes(j))

        def stacked(split: str) -> tuple[torch.Tensor, torch.Tensor]:
            parts = [self.frozen_features(j, split) for j in range(i + 1)]
            return (torch.cat([f for f, _ in parts]),
                    torch.cat([y + offsets[j] for j, (_, y) in enumerate(parts)]))

        means = torch.cat([self.stats[self.labels[j]].means for j in range(i + 1)])
        has_val = all(self.tasks[j].val is not None and len(self.tasks[j].val)
                      for j in range(i + 1))
        joint = fit_linear_probe(*stacked("train"), offsets[-1],
                                 *(stacked("val") if has_val else (None, None)),
                                 cache_dir=self.probe_cache)
        for j in range(i + 1):
            f, y = self.frozen_features(j, "test")
            y = y + offsets[j]
            self.simplecil_acc_matrix[i][j] = float((cosine_nearest_mean(f, means) == y)
                                                    .float().mean())
            self.joint_acc_matrix[i][j] = joint.accuracy(f, y)

    def backbone_changed(self) -> bool:
        """Whether the strategy's backbone no longer holds the frozen view's weights (it trains
        them), so predicting the task needs the view kept beside it."""
        current = self.strategy.model.backbone.state_dict()
        return any(name not in current or not torch.equal(current[name].to(value.device), value)
                   for name, value in self.frozen.state_dict().items())

    # -- what the record keeps --------------------------------------------------------------
    def chosen(self, i: int) -> str:
        """The rule with the best validation accuracy after task i (the strategy's own rule
        without validation data)."""
        scored = [(self.rules[r]["val_acc"][i], -k, r) for k, r in enumerate(RULES)
                  if self.rules[r]["val_acc"][i] is not None]
        return max(scored)[2] if scored else self.own_rule

    def record_fields(self, i: int) -> dict:
        """The record's class-incremental fields after task i."""
        rule = self.chosen(i)
        return {"task_inference": rule,
                "cil_acc_matrix": self.rules[rule]["cil_acc_matrix"],
                "task_inference_matrix": self.rules[rule]["task_inference_matrix"],
                "task_inference_rules": self.rules,
                "simplecil_acc_matrix": self.simplecil_acc_matrix,
                "joint_acc_matrix": self.joint_acc_matrix}

    def state(self) -> dict:
        """What resuming needs: the statistics (they read heads as they were) and the matrices."""
        return {"stats": {t: s.state() for t, s in self.stats.items()},
                "rules": self.rules, "simplecil": self.simplecil_acc_matrix,
                "joint": self.joint_acc_matrix}

    def load_state(self, state: dict) -> None:
        self.stats = {int(t): TaskStatistics.from_state(s) for t, s in state["stats"].items()}
        self.rules = state["rules"]
        self.simplecil_acc_matrix, self.joint_acc_matrix = state["simplecil"], state["joint"]

