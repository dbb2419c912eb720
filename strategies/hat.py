"""HAT — Hard Attention to the Task (Serrà et al., ICML 2018), on a frozen or trained ViT.

Which units are gated (``units``):

- ``"adapters"`` (default; the published port to pre-trained transformers: B-CL/CTR on BERT,
  Ke et al. 2021, and TPL on DeiT, Lin et al. 2024): the backbone is frozen and one residual
  bottleneck adapter after every block's MLP (``models.adapters``, ``hidden`` units, zero-
  initialized up-projection, so the model starts as the pre-trained one) is *shared* by all
  tasks; HAT gates the adapters' bottleneck units (``down``) and output units (``up``, which
  reads the bottleneck units) per task. A unit an earlier task uses keeps its weights (gradient
  masks below); a unit a task gates off adds exactly nothing to the residual stream. Where
  this port differs from TPL's: one adapter per block (after the MLP; TPL also has one after
  the attention sub-layer), no per-task LayerNorms (they stay frozen), and no replay (TPL's task
  prediction also scores replayed features; here only its replay-free terms exist,
  ``models.task_inference``).
- ``"backbone"`` (the suite's own port, no published precedent): the output units of the block
  Linears themselves — on a timm ViT block ``attn.qkv`` (3 x dim: query, key and value
  channels), ``attn.proj``, ``mlp.fc1`` and ``mlp.fc2``; CaiT's class-attention blocks have
  separate ``q``, ``k``, ``v`` Linears, gated alike (LaViT's less-attention layers: ``v`` only).
  CaiT's talking-heads maps, LaViT's score transforms and LayerScale factors are shared and not
  gated. With N(0, 1) embeddings about half of every pre-trained unit is off from the first
  step, so each task starts from a damaged copy of the pre-trained features.

A gate multiplies the unit's output (weight row and bias): a = sigmoid(s e_t) with per-task
embeddings e_t ~ N(0, 1) (``models.masks.SigmoidGateRule`` through the shared masked linear).

- s is annealed per batch b = 0..B-1 of every epoch: s = 1/s_max + (s_max - 1/s_max) b / (B - 1),
  s_max = 400; evaluation uses binary gates [e_t > 0] (the s -> infinity limit), kept bit-packed.
- Loss: L_ce + c * sum a_t (1 - a_<t) / sum (1 - a_<t) over all gated units (c = 0.75), where
  a_<t is the cumulative gate of earlier tasks (element-wise max of their binary gates; 0 for the
  first task).
- Weight-gradient masking: the gradient of weight W_ji (input unit i -> output unit j) is
  multiplied by 1 - min(a_<t,i, a_<t,j), the bias gradient by 1 - a_<t,j. Input units: an
  adapter's ``up`` reads its ``down`` units; ``proj`` the value channels of ``qkv`` (attention
  output channel c is a mix of value channel c), ``fc2`` the units of ``fc1``; ``down``, ``qkv``
  and ``fc1`` read the LayerNorm-ed residual stream, which is not gated, so only their output
  gate counts (as HAT's first layer, which reads pixels).
- Embedding gradients are multiplied by s_max / s * (cosh(s e) + 1) / (cosh(e) + 1) (s e clamped
  to +-50 in the cosh, as the official code does, against overflow), and e is clamped to
  [-6, 6] after every step.
- With ``units="backbone"``, the rest of the backbone (patch projection, class token, position
  embedding, LayerNorms) is shared and ungated: it trains with the first task and is frozen from
  the second on (``shared="first_task"``, HAT's own setting, where all weights learn the first
  task), or is frozen from the start (``shared="frozen"``). With adapters all of the backbone is
  frozen. Either way earlier tasks' outputs never change: their units' weights are frozen by the
  gradient mask, and units they gate off contribute exact zeros.

Optimizer. The paper trains with plain SGD at lr 0.05 (``optimizer="sgd"``, ``lr=0.05``,
``schedule="constant"``; its decay on a validation plateau is not used). Registered instead: AdamW
(no weight decay — decay would move protected weights) with cosine decay, the usual optimizer of
adapter training on transformers, the adapters at the Adapter baseline's rate (1e-2, for the same
reason: they start at zero and must grow within a few hundred steps), with its own rate for the
gate embeddings (``gate_lr``): Adam's
steps are about lr whatever the compensated gradient, so at the weights' rate an embedding started
from N(0, 1) could not cross 0 within a task. Heads start from the converged probe on the task's
starting features (``head_init: auto``, as for every strategy): a random head trained by SGD for
a few hundred steps stays far from converged (training accuracy near test accuracy, well below
the probe's). The record's ``train_acc`` next to ``probe_train_acc`` shows whether the head
converged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from models import anatomy
from models.adapters import adapter_params, add_adapters
from models.masked_linear import make_masked
from models.masks import SigmoidGateRule, TaskMask
from strategies.common import ContinualTemplate
from strategies.masking import TaskMaskPlugin
from strategies.registry import register_strategy
from strategies.skeleton import ExtraGroup
from strategies.storage import FP32, StorageItem, head_items

COSH_CLAMP = 50.0
SHARED_POLICIES = ("first_task", "frozen")
GATED_UNITS = ("adapters", "backbone")


@dataclass
class GatedLayer:
    """A Linear whose output units are gated, and where its input units' gates come from:
    ``(index of the source layer, slice of its units)`` or None for an ungated input."""

    linear: torch.nn.Linear
    source: tuple[int, slice] | None


def adapter_layers(adapters) -> list[GatedLayer]:
    """Each shared bottleneck's ``down`` (reading the ungated residual stream) and ``up``
    (reading ``down``'s units)."""
    layers: list[GatedLayer] = []
    for a in adapters:
        layers += [GatedLayer(a.down, None), GatedLayer(a.up, (len(layers), slice(None)))]
    return layers


def gated_layers(backbone) -> list[GatedLayer]:
    """The attention's input projections (``models.anatomy.attention_projections``), its output
    projection (reading the value channels), ``fc1`` and ``fc2`` (reading fc1's units) of every
    block."""
    layers: list[GatedLayer] = []
    for block in anatomy.blocks(backbone):
        attn, (fc1, fc2) = anatomy.attention_projections(block), anatomy.ffn_pair(block)
        first = len(layers)
        layers += [GatedLayer(linear, None) for linear in attn.inputs]
        values_linear, values = attn.values
        source = first + next(i for i, lin in enumerate(attn.inputs) if lin is values_linear)
        layers.append(GatedLayer(attn.output, (source, values)))
        hidden = len(layers)
        layers.append(GatedLayer(fc1, None))
        layers.append(GatedLayer(fc2, (hidden, slice(None))))
    return layers


def anneal_s(batch: int, n_batches: int, s_max: float) -> float:
    """s = 1/s_max + (s_max - 1/s_max) * b / (B - 1) for batch b = 0..B-1 of an epoch."""
    return 1 / s_max + (s_max - 1 / s_max) * batch / max(n_batches - 1, 1)


def attention_regularizer(gates: list[torch.Tensor], cumulative: list[torch.Tensor],
                          c: float) -> torch.Tensor:
    """c * sum a_t (1 - a_<t) / sum (1 - a_<t), summed over every gated unit of every layer."""
    free = [1 - prev for prev in cumulative]
    used = sum((a * f).sum() for a, f in zip(gates, free, strict=True))
    return c * used / sum(f.sum() for f in free).clamp_min(1.0)


def embedding_compensation(e: torch.Tensor, s: float, s_max: float) -> torch.Tensor:
    """s_max / s * (cosh(s e) + 1) / (cosh(e) + 1), with s e clamped to +-50 inside the cosh."""
    num = torch.cosh(torch.clamp(s * e, -COSH_CLAMP, COSH_CLAMP)) + 1
    return s_max / s * num / (torch.cosh(e) + 1)


_flushing = False  # what flushing_denormals last set: torch has no getter for the flag


@contextmanager
def flushing_denormals() -> Iterator[None]:
    """Subnormal floats flushed to zero inside the block, the previous setting restored after
    (also on an error). Annealed gates sigmoid(s e) reach subnormal floats (e.g. s e = -100), and
    every matmul with such weights is far slower on CPU; flushing changes values only below
    1.2e-38 (no-op where unsupported). ``torch.set_flush_denormal`` is process-wide and cannot be
    read back, so the previous value is the one this function last set (off, torch's default,
    outside any block): nothing else in the suite sets it."""
    global _flushing
    previous = _flushing
    torch.set_flush_denormal(True)
    _flushing = True
    try:
        yield
    finally:
        torch.set_flush_denormal(previous)
        _flushing = previous


class HATTemplate(ContinualTemplate):
    """The template whose training (``train``, every experience and hook in it) runs under
    :func:`flushing_denormals`; evaluation and everything after training run as usual."""

    def train(self, *args, **kwargs):
        with flushing_denormals():
            return super().train(*args, **kwargs)


class HATPlugin(TaskMaskPlugin):
    """HAT as an Avalanche plugin on a ``MultiTaskViT`` (see the module docstring): it trains
    :meth:`trains` at ``lr``, its gates at ``gate_lr`` and the head at ``head_lr``, with
    ``hp["optimizer"]`` in a :class:`HATTemplate`."""

    template_type = HATTemplate

    def __init__(self, *, units: str = "adapters", hidden: int = 64, s_max: float = 400.0,
                 c: float = 0.75, clamp: float = 6.0, shared: str = "first_task"):
        super().__init__()
        if shared not in SHARED_POLICIES:
            raise ValueError(f"shared must be one of {SHARED_POLICIES}, got {shared!r}")
        if units not in GATED_UNITS:
            raise ValueError(f"units must be one of {GATED_UNITS}, got {units!r}")
        self.rule = SigmoidGateRule(s_max=s_max)
        self.units, self.hidden = units, hidden
        self.c, self.clamp = c, clamp
        self.shared = "frozen" if units == "adapters" else shared
        self.layers: list[GatedLayer] = []
        self.cumulative: list[torch.Tensor] = []  # a_<t per layer while a task trains

    @property
    def s_max(self) -> float:
        return self.rule.s_max

    def create_masks(self, backbone) -> list[TaskMask]:
        device = next(backbone.parameters()).device
        if self.units == "adapters":
            adapters = [a.to(device) for a in add_adapters(backbone, self.hidden,
                                                            per_task=False)]
            self.layers = adapter_layers(adapters)
        else:
            self.layers = gated_layers(backbone)
        gates = []
        for layer in self.layers:
            gate = TaskMask((layer.linear.out_features,), self.rule, kind="gate").to(device)
            make_masked(layer.linear).output_gate = gate
            gates.append(gate)
        return gates

    def trains(self, model, task: int) -> list:
        """What a task trains at ``lr``: the gated layers' weights and biases (under the gradient
        masks) and, for the first task with ``shared="first_task"``, the rest of the backbone."""
        gated = {id(p) for layer in self.layers for p in layer.linear.parameters(recurse=False)}
        first = not any(m.finished_tasks() for m in self.masks)
        everything = first and self.shared == "first_task"
        skip = {id(p) for p in self.trainable()}
        return [p for p in model.backbone.parameters()
                if id(p) not in skip and (id(p) in gated or everything)]

    def extra_groups(self, model, task: int) -> list[ExtraGroup]:
        """The task's gate embeddings at ``gate_lr``."""
        return [ExtraGroup("gate_lr", self.trainable())]

    def before_training_exp(self, strategy, **kwargs):
        task = strategy.experience.task_label
        earlier = [[t for t in m.finished_tasks() if t != task] for m in self.masks]
        self.cumulative = [
            torch.stack([m.binary(t) for t in ts]).any(0).float() if ts
            else torch.zeros(m.shape, device=strategy.device)
            for m, ts in zip(self.masks, earlier, strict=True)]

    def before_training_iteration(self, strategy, **kwargs):
        self.rule.s = anneal_s(strategy.clock.train_epoch_iterations, len(strategy.dataloader),
                               self.s_max)

    def before_backward(self, strategy, **kwargs):
        gates = [m.last_sample for m in self.masks]
        if all(g is not None for g in gates) and self.c:
            strategy.loss = strategy.loss + attention_regularizer(gates, self.cumulative, self.c)
        for m in self.masks:
            m.last_sample = None

    @torch.no_grad()
    def after_backward(self, strategy, **kwargs):
        for layer, prev in zip(self.layers, self.cumulative, strict=True):
            w, b = layer.linear.weight, layer.linear.bias
            out_free = 1 - prev
            if layer.source is None:
                w_free = out_free[:, None]
            else:
                src, units = layer.source
                w_free = 1 - torch.minimum(prev[:, None], self.cumulative[src][units][None, :])
            if w.grad is not None:
                w.grad.mul_(w_free)
            if b is not None and b.grad is not None:
                b.grad.mul_(out_free)
        for e in self.trainable():
            if e.grad is not None:
                e.grad.mul_(embedding_compensation(e, self.rule.s, self.s_max))

    @torch.no_grad()
    def after_update(self, strategy, **kwargs):
        for e in self.trainable():
            e.clamp_(-self.clamp, self.clamp)

    def after_training_exp(self, strategy, **kwargs):
        self.rule.s = self.s_max
        self.cumulative = []  # derived from the kept gates for each task: never saved, or moved


def hat_storage(backbone, n_classes: int, hp: dict) -> list[StorageItem]:
    """Per task: 1 bit per gated unit + the fp32 head."""
    if hp["units"] == "adapters":
        units = sum(anatomy.ffn_pair(b)[1].out_features + hp["hidden"]
                    for b in anatomy.blocks(backbone))
    else:
        units = sum(layer.linear.out_features for layer in gated_layers(backbone))
    return [StorageItem("unit gates", units, 1), *head_items(backbone.num_features, n_classes)]


def hat_shared_storage(backbone, hp: dict) -> list[StorageItem]:
    """With ``units="adapters"``: the fp32 adapters, shared by all tasks."""
    if hp["units"] != "adapters":
        return []
    return [StorageItem("shared adapters", adapter_params(backbone, hp["hidden"]), FP32)]


@register_strategy(
    "hat",
    hparams={"units": "adapters", "hidden": 64, "optimizer": "adamw", "lr": 1e-2,
             "gate_lr": 0.05, "head_lr": 1e-3, "momentum": 0.0, "schedule": "cosine",
             "s_max": 400.0,
             "c": 0.75, "clamp": 6.0, "shared": "first_task"},
    defaults="paper+suite",
    search_space={"units": ["adapters", "backbone"], "lr": [3e-4, 1e-3, 3e-3],
                  "gate_lr": [0.01, 0.05, 0.2], "head_lr": [3e-4, 1e-3, 3e-3],
                  "c": [0.25, 0.75, 1.5], "s_max": [100.0, 400.0]},
    storage=hat_storage,
    shared_storage=hat_shared_storage,
    trains="per-task gates (σ(s·e), s annealed to 400) on the units of residual bottleneck "
           "adapters (64 units) after every MLP, shared by all tasks and trained under HAT's "
           "gradient masks, + head; backbone frozen (`units: backbone`: the block Linears' own "
           "units instead)",
    keeps="1 bit per gated unit + head (+ the shared fp32 adapters once)",
    forgets=False,
    mask_kinds=("gate",),
    paper="Serrà et al., ICML 2018; adapter port as B-CL/CTR (Ke et al., 2021) and TPL (Lin et "
          "al., 2024)",
)
def build_hat(backbone, hp, settings):
    plugin = HATPlugin(units=hp["units"], hidden=hp["hidden"], s_max=hp["s_max"], c=hp["c"],
                       clamp=hp["clamp"], shared=hp["shared"])
    return plugin.template(backbone, settings, hp)
