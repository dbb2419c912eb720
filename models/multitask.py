"""Multi-head ViT for task-incremental learning: a feature backbone plus one linear head per task.

``MultiTaskViT`` is an Avalanche ``MultiTaskModule``: a mini-batch may mix tasks (it is split by
task label) and a new task's head is created in ``adaptation`` (so Avalanche adds it to the
optimizer). Before the backbone runs for task ``t``, every submodule that conditions on the task
(per-task masks, gates, adapters: anything with a ``set_task(t)`` method) is switched to ``t`` —
that is the single place where a strategy's per-task state is selected.
"""

from __future__ import annotations

import copy

import torch
from avalanche.models import MultiTaskModule
from torch import nn


class MultiTaskViT(MultiTaskModule):
    """``heads[str(t)](backbone(x))`` with the backbone's task-conditioned modules set to ``t``."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.num_features = backbone.num_features
        self.heads = nn.ModuleDict()

    # -- task selection --------------------------------------------------------------------
    def backbone_for(self, task: int) -> nn.Module:
        """The backbone that serves ``task`` (one shared backbone by default)."""
        return self.backbone

    @staticmethod
    def task_modules(backbone: nn.Module) -> list[nn.Module]:
        """The task-conditioned modules of ``backbone``, found once and cached on it (a deep copy
        carries a cache that points into the copy). A strategy that installs new ones calls
        :meth:`refresh_task_modules`."""
        mods = backbone.__dict__.get("_task_modules")
        if mods is None:
            mods = [m for m in backbone.modules() if m is not backbone and hasattr(m, "set_task")]
            backbone.__dict__["_task_modules"] = mods
        return mods

    def refresh_task_modules(self) -> None:
        for m in self.modules():
            m.__dict__.pop("_task_modules", None)

    def features(self, x: torch.Tensor, task: int) -> torch.Tensor:
        """Pooled backbone features of ``x`` as seen by ``task``."""
        backbone = self.backbone_for(task)
        for m in self.task_modules(backbone):
            m.set_task(task)
        return backbone(x)

    def forward_all_tasks(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Every head's logits (Avalanche's LwF distils through this). A backbone without
        task-conditioned modules computes its features once for all heads."""
        if not self.task_modules(self.backbone):
            feats = self.backbone(x)
            return {int(t): head(feats) for t, head in self.heads.items()}
        return {int(t): self.forward_single_task(x, int(t)) for t in self.heads}

    def forward_single_task(self, x: torch.Tensor, task_label: int) -> torch.Tensor:
        return self.heads[str(task_label)](self.features(x, task_label))

    def forward(self, x: torch.Tensor, task_labels) -> torch.Tensor:
        """Like Avalanche's, but unused logit columns of a mixed batch are -inf, not 0.

        With tasks of different class counts, zero padding could win the argmax over a task
        whose real logits are all negative.
        """
        if task_labels is None or isinstance(task_labels, int):
            return super().forward(x, task_labels)
        tasks = torch.unique(task_labels)
        if len(tasks) == 1:
            return self.forward_single_task(x, int(tasks.item()))
        width = max(self.heads[str(int(t))].out_features for t in tasks)
        out = torch.full((x.shape[0], width), float("-inf"), device=x.device)
        for t in tasks:
            sel = task_labels == t
            logits = self.forward_single_task(x[sel], int(t.item()))
            out[sel, : logits.shape[1]] = logits.to(out.dtype)
        return out

    # -- heads -----------------------------------------------------------------------------
    def adaptation(self, experience) -> None:
        """Create a head for each new training task, sized to the task's classes."""
        super().adaptation(experience)
        n_classes = max(experience.classes_in_this_experience) + 1
        for t in experience.task_labels:
            if str(t) not in self.heads:
                if not self.training:
                    raise KeyError(f"task {t} is evaluated before it was trained (no head)")
                device = next(self.backbone.parameters()).device
                self.heads[str(t)] = nn.Linear(self.num_features, n_classes).to(device)
                self.on_new_task(t)

    def train_only_head(self, task: int) -> None:
        """Let only ``task``'s head receive gradients (earlier heads stay as they were)."""
        for key, head in self.heads.items():
            head.requires_grad_(key == str(task))

    def on_new_task(self, task: int) -> None:
        """Hook for subclasses: called once when ``task``'s head is created."""

    def task_state(self, task: int) -> dict[str, torch.Tensor]:
        """Everything kept to predict ``task`` later: its head and every per-task tensor of the
        backbone — named ``packed_<task>`` (bit-packed masks and gates) or under a per-task
        module named ``task_<task>`` (adapters)."""
        state = {f"heads.{task}.{k}": v for k, v in self.heads[str(task)].state_dict().items()}
        own = {f"packed_{task}", f"task_{task}"}
        for name, value in self.backbone_for(task).state_dict().items():
            if own & set(name.split(".")):
                state[f"backbone.{name}"] = value
        return state


class PerTaskBackboneViT(MultiTaskViT):
    """One backbone copy per task, each started from the same initial (pre-trained) weights."""

    def __init__(self, backbone: nn.Module):
        super().__init__(backbone)
        self.backbone.requires_grad_(False)  # the pristine copy every task starts from
        self.backbones = nn.ModuleDict()

    def backbone_for(self, task: int) -> nn.Module:
        return self.backbones[str(task)]

    def on_new_task(self, task: int) -> None:
        self.backbones[str(task)] = copy.deepcopy(self.backbone).requires_grad_(True)

    def forward_all_tasks(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """One backbone per task: no features to share between heads."""
        return {int(t): self.forward_single_task(x, int(t)) for t in self.heads}

    def task_state(self, task: int) -> dict[str, torch.Tensor]:
        state = super().task_state(task)
        state.update({f"backbones.{task}.{k}": v
                      for k, v in self.backbones[str(task)].state_dict().items()})
        return state
