"""Multi-head ViT for task-incremental learning: a feature backbone plus one linear head per task.

A task's head trains, by default, as a ``models.heads.StandardizedHead`` (its input standardized
by statistics that follow the features, so a probe-started head cannot blow up when the features
move) and is folded into an ordinary ``nn.Linear`` when its task ends.

``MultiTaskViT`` is an Avalanche ``MultiTaskModule``: a mini-batch may mix tasks (it is split by
task label) and a new task's head is created in ``adaptation`` (so Avalanche adds it to the
optimizer). The model drives the lifecycle of its backbone's per-task state
(``models.tasks.TaskModule``: masks, gates, adapters): ``adaptation`` adds a new training task to
every task module (before the template builds the task's optimizer), ``features`` selects the
task before the backbone runs, ``finish_task`` ends a trained task, and ``export_task`` gives
everything predicting a task needs — its head and every task module's state — by parameter name.

The prompt methods' query is the model's too (``models.prompts``): before a backbone's forward,
after ``set_task``, every module of it that takes the query gets ``set_query(q)``, q the
backbone's pre-logits features of the same input with every prompt source off, computed once,
without gradients, in evaluation mode and under the caller's autocast
(``models.prompts.query_features``), and only when one of them needs it. What a head reads is
the model's choice as well (``head_input``): the backbone's pooled features, or the mean of its
shallow prompts' outputs after the final norm (L2P's ``head_type: prompt``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from avalanche.models import MultiTaskModule
from timm.layers import DropPath
from torch import nn

from models.heads import StandardizedHead
from models.precision import fp32_region
from models.prompts import QueryTaker, query_features
from models.tasks import TaskModule, TaskTensor, task_modules
from models.transient import TransientState

REGULARIZERS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, DropPath)  # active in training only
# what a head reads: the backbone's pooled features, or the mean of its shallow prompts' outputs
HEAD_INPUTS = ("features", "prompts")


@dataclass(frozen=True)
class BackboneParts:
    """What the model sets in a backbone before its forward: the task modules (``set_task``)
    and the modules that take the prompt query (``set_query``)."""

    task_modules: tuple[TaskModule, ...]
    query_takers: tuple[QueryTaker, ...]

    @classmethod
    def of(cls, backbone: nn.Module) -> BackboneParts:
        return cls(tuple(m for _, m in task_modules(backbone)),
                   tuple(m for m in backbone.modules() if isinstance(m, QueryTaker)))


class MultiTaskViT(TransientState, MultiTaskModule):
    """``heads[str(t)](backbone(x))`` with the backbone's task-conditioned modules set to ``t``;
    a new task's head is ``head_type(num_features, n_classes)`` (``models.heads.PlainHead`` for
    the prompt methods' paper form) and reads ``head_input`` (``HEAD_INPUTS``; module
    docstring)."""

    transient = ("_parts",)
    _parts: dict[nn.Module, BackboneParts] | None = None  # per backbone, found on first use

    def __init__(self, backbone: nn.Module, head_type: type[nn.Linear] = StandardizedHead,
                 head_input: str = "features"):
        super().__init__()
        head = backbone.get_classifier() if hasattr(backbone, "get_classifier") else None
        if isinstance(head, nn.Module) and not isinstance(head, nn.Identity):
            raise ValueError(
                f"the backbone ends in its own classifier ({type(head).__name__} with "
                f"{getattr(backbone, 'num_classes', '?')} classes); build it with "
                "timm.create_model(name, num_classes=0) so that it returns pooled features")
        self.backbone = backbone
        self.num_features = backbone.num_features
        self.heads = nn.ModuleDict()
        self.head_type = head_type
        if head_input not in HEAD_INPUTS:
            raise ValueError(f"head_input must be one of {HEAD_INPUTS}, got {head_input!r}")
        self.head_input = head_input

    # -- task selection --------------------------------------------------------------------
    def backbone_for(self, task: int) -> nn.Module:
        """The backbone that serves ``task`` (one shared backbone by default)."""
        return self.backbone

    @staticmethod
    def task_modules(backbone: nn.Module) -> list[TaskModule]:
        """The task modules of any ``backbone`` (looked up afresh; the model's own backbones'
        are kept by :meth:`parts`)."""
        return [m for _, m in task_modules(backbone)]

    def parts(self, backbone: nn.Module) -> BackboneParts:
        """What the model sets in ``backbone``, one of its own, found on first use and kept
        (``transient``: a copy or a resumed model finds its own). A strategy that installs new
        task modules or query takers calls :meth:`refresh_task_modules`."""
        if self._parts is None:
            self._parts = {}
        if backbone not in self._parts:
            self._parts[backbone] = BackboneParts.of(backbone)
        return self._parts[backbone]

    def refresh_task_modules(self) -> None:
        """Forget what :meth:`parts` found (a strategy installed new modules)."""
        self._parts = None

    def features(self, x: torch.Tensor, task: int) -> torch.Tensor:
        """What ``task``'s head reads for ``x``: :meth:`head_features` with the task set."""
        backbone = self.backbone_for(task)
        parts = self.parts(backbone)
        for m in parts.task_modules:
            m.set_task(task)
        return self.head_features(backbone, parts, x)

    def head_features(self, backbone: nn.Module, parts: BackboneParts,
                      x: torch.Tensor) -> torch.Tensor:
        """``backbone``'s ``head_input`` for ``x``, its task modules as they are set: the query
        handed to the modules that take one (module docstring), then the backbone's pooled
        features, or the mean of its shallow prompts' outputs after the final norm
        (``models.prompts.attach_shallow_prompts``)."""
        if parts.query_takers:
            needed = any(m.needs_query() for m in parts.query_takers)
            q = query_features(backbone, x) if needed else None
            for m in parts.query_takers:
                m.set_query(q)
        if self.head_input == "prompts":
            backbone.forward_features(x)
            return backbone.shallow_prompts.outputs.mean(dim=1)
        return backbone(x)

    def forward_all_tasks(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        """Every head's logits (Avalanche's LwF distils through this; task-agnostic evaluation,
        ``models.task_inference``, scores with it). Features are computed once for all heads
        when no task module conditions them on the task, or when every one that does infers
        the task by itself (set to task None); otherwise once per task."""
        parts = self.parts(self.backbone)
        conditioning = [m for m in parts.task_modules if m.conditions_features]
        if all(m.infers_task for m in conditioning):
            for m in conditioning:
                m.set_task(None)
            feats = self.head_features(self.backbone, parts, x)
            return {int(t): self.logits(int(t), feats) for t in self.heads}
        return {int(t): self.forward_single_task(x, int(t)) for t in self.heads}

    def forward_single_task(self, x: torch.Tensor, task_label: int) -> torch.Tensor:
        return self.logits(task_label, self.features(x, task_label))

    def logits(self, task: int, feats: torch.Tensor) -> torch.Tensor:
        """``task``'s head on ``feats``, in fp32 even under autocast: a d x K product costs
        nothing, and the weights of a folded standardized head are large where the features
        vary little, so in bf16 their products would cancel to a few bits."""
        with fp32_region(feats.device):
            return self.heads[str(task)](feats.float())

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

    def train(self, mode: bool = True):
        """Training mode, except where weights do not train: a dropout or drop-path layer whose
        layer's own weights (its parameters outside task modules) are all frozen runs as at
        evaluation, so a frozen pre-trained backbone computes the function it was trained to
        compute (T2T-ViT's Performer dropout is the one active such layer in the suite's
        backbones). What trains — task modules, heads, a fine-tuned backbone — keeps its
        regularizers; DropKey, an attention variant a run asks for, stays on in training.
        Which weights train is decided per task (``strategies.common.ContinualTemplate``
        calls this again once it has set them)."""
        super().train(mode)
        if mode:
            in_task_modules = {id(p) for _, m in task_modules(self) for p in m.parameters()}
            for layer in self.modules():
                own = [p for p in layer.parameters() if id(p) not in in_task_modules]
                if not any(p.requires_grad for p in own):
                    for child in layer.children():
                        if isinstance(child, REGULARIZERS):
                            child.eval()
        return self

    # -- the per-task lifecycle -------------------------------------------------------------
    def adaptation(self, experience) -> None:
        """For each new training task: a head sized to the task's classes, and the task's
        trainable state in every task module of its backbone."""
        super().adaptation(experience)
        n_classes = max(experience.classes_in_this_experience) + 1
        for t in experience.task_labels:
            if str(t) in self.heads:
                continue
            if not self.training:
                raise KeyError(f"task {t} is evaluated before it was trained (no head)")
            device = next(self.backbone.parameters()).device
            self.heads[str(t)] = self.head_type(self.num_features, n_classes).to(device)
            self.on_new_task(t)
            for m in self.parts(self.backbone_for(t)).task_modules:
                if not m.has_task(t):
                    m.add_task(t, device)

    def finish_task(self, task: int) -> None:
        """End ``task``'s training: its head is folded into the linear layer it computes in
        evaluation, and every task module ends the task (masks keep their bits, ...)."""
        head = self.heads[str(task)]
        if isinstance(head, StandardizedHead):
            self.heads[str(task)] = head.fold()
        for m in self.parts(self.backbone_for(task)).task_modules:
            m.finish_task(task)

    def on_new_task(self, task: int) -> None:
        """Hook for subclasses: called once when ``task``'s head is created."""

    def export_task(self, task: int) -> dict[str, TaskTensor]:
        """Everything kept to predict ``task`` later, by parameter name: its head and the state of
        every task module of its backbone (``models.tasks``)."""
        state = {f"heads.{task}.{k}": TaskTensor(v, "head")
                 for k, v in self.heads[str(task)].state_dict().items()}
        for name, m in task_modules(self.backbone_for(task)):
            state.update({f"{self.backbone_prefix(task)}{name}.{k}": v
                          for k, v in m.export_task(task).items()})
        return state

    def import_task(self, task: int, state: dict[str, torch.Tensor]) -> None:
        """Put an :meth:`export_task` of ``task`` back (e.g. read by
        ``models.tasks.load_task_file``): its head and every task module's state."""
        head = {k.removeprefix(f"heads.{task}."): v for k, v in state.items()
                if k.startswith(f"heads.{task}.")}
        self.heads[str(task)] = nn.Linear(head["weight"].shape[1], head["weight"].shape[0])
        self.heads[str(task)].load_state_dict(head)
        prefix = self.backbone_prefix(task)
        for name, m in task_modules(self.backbone_for(task)):  # task modules do not nest
            own = f"{prefix}{name}."
            m.import_task(task, {k.removeprefix(own): v for k, v in state.items()
                                 if k.startswith(own)})

    def backbone_prefix(self, task: int) -> str:
        """The state-dict prefix of the backbone serving ``task``."""
        return "backbone."


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

    def backbone_prefix(self, task: int) -> str:
        return f"backbones.{task}."

    def export_task(self, task: int) -> dict[str, TaskTensor]:
        """The head and the task's whole backbone copy."""
        state = super().export_task(task)
        state.update({f"backbones.{task}.{k}": TaskTensor(v, "backbone")
                      for k, v in self.backbones[str(task)].state_dict().items()})
        return state

    def import_task(self, task: int, state: dict[str, torch.Tensor]) -> None:
        if str(task) not in self.backbones:
            self.on_new_task(task)
        own = f"backbones.{task}."
        self.backbones[str(task)].load_state_dict(
            {k.removeprefix(own): v for k, v in state.items() if k.startswith(own)})
        super().import_task(task, state)
