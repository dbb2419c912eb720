"""Per-task binary masks and gates: one trainable tensor per task while it is learned, its bits
kept bit-packed once the task is finished.

A :class:`TaskMask` holds, for a fixed shape, the trainable tensor of the task being learned
(``trainable[str(t)]``) and buffers ``packed_<t>`` for finished tasks. It is a task-conditioned
module (``set_task``), so ``MultiTaskViT`` selects the right mask before the backbone runs. How a
trainable tensor becomes a mask is the mask's *rule* — one per method:

- :class:`GumbelRule` (MEAT): a relaxed-Bernoulli logit with hard samples and straight-through
  gradients;
- :class:`ThresholdRule` (Piggyback): a real-valued score, mask = [score > threshold], gradient
  straight through the threshold;
- :class:`SigmoidGateRule` (HAT): an embedding e, gate = sigmoid(s e) with s annealed by the
  strategy, binary [e > 0] at evaluation;
- :class:`TopKRule` (SupSup): a real-valued score per entry, mask = the fraction ``keep`` of
  entries with the largest |score| (by a threshold, ties dropped), gradient straight through
  the selection (edge-popup).

Every rule gives: ``init(shape)`` (the new task's tensor), ``sample(tensor)`` (the training mask,
float, differentiable) and ``binarize(tensor)`` (the deterministic boolean mask kept after the
task and used at evaluation).

Movement. When a task is finished its mask records how many entries differ from the mask its
initial tensor gave and how many are kept (:func:`mask_movement` sums them per ``kind``): a
method whose masks never left their initial state was not tested by the run, whatever its
accuracy.

Gumbel-softmax in its one-logit form. MEAT's two logits (t_keep, t_drop) with Gumbel noise keep an
entry iff t_keep + g1 > t_drop + g2, i.e. iff d + (g1 - g2) > 0 with d = t_keep - t_drop and
g1 - g2 ~ Logistic(0, 1); the soft sample softmax((t + g) / tau)_keep equals sigmoid((d + l) / tau).
So a single logit d per entry is the same distribution with half the memory. Initialization
(``init``): ``"code"`` (MEAT's official code: t_keep = +gamma, t_drop = -gamma, so d = 2 gamma and
every entry starts kept) or ``"paper"`` (both logits ~ U(-gamma, gamma)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from models.tasks import BITS, TaskModule, TaskTensor, pack_bits, unpack_bits
from models.transient import TransientState

MASK_INITS = ("code", "paper")


class _RoundStraightThrough(torch.autograd.Function):
    """Forward: exactly 0/1 (x > threshold). Backward: the identity (straight-through)."""

    @staticmethod
    def forward(ctx, x, threshold):
        return (x > threshold).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


@dataclass(frozen=True)
class GumbelRule:
    """MEAT: hard Binary-Concrete samples of a logit d; [d > 0] at evaluation."""

    gamma: float = 4.0
    tau: float = 1.0
    init: str = "code"

    def __post_init__(self):
        if self.init not in MASK_INITS:
            raise ValueError(f"mask init must be one of {MASK_INITS}, got {self.init!r}")
        if self.tau <= 0:
            raise ValueError("Gumbel temperature tau must be > 0")

    def initial(self, shape: tuple[int, ...]) -> torch.Tensor:
        g = self.gamma
        if self.init == "code":
            return torch.full(shape, 2.0 * g)
        return torch.empty(shape).uniform_(-g, g) - torch.empty(shape).uniform_(-g, g)

    def sample(self, logit: torch.Tensor) -> torch.Tensor:
        return hard_concrete_sample(logit, self.tau)

    def binarize(self, logit: torch.Tensor) -> torch.Tensor:
        return logit > 0


@dataclass(frozen=True)
class ThresholdRule:
    """Piggyback: scores start at ``init``; mask = [score > threshold] with a straight-through
    gradient to the score."""

    init: float = 1e-2
    threshold: float = 5e-3

    def initial(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.full(shape, float(self.init))

    def sample(self, score: torch.Tensor) -> torch.Tensor:
        return _RoundStraightThrough.apply(score, self.threshold)

    def binarize(self, score: torch.Tensor) -> torch.Tensor:
        return score > self.threshold


@dataclass
class SigmoidGateRule:
    """HAT: gate = sigmoid(s e) with embeddings e ~ N(0, 1); the strategy anneals ``s`` (one rule
    object is shared by all gates of a model, so setting ``s`` once sets it everywhere)."""

    s_max: float = 400.0
    s: float = 400.0

    def initial(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape)

    def sample(self, embedding: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.s * embedding)

    def binarize(self, embedding: torch.Tensor) -> torch.Tensor:
        return embedding > 0


class _TopKStraightThrough(torch.autograd.Function):
    """Forward: [x > t] with t the drop-th smallest entry of ``x``, drop = int((1 - keep) n)
    (SupSup's ``GetSubnet`` zeroes the drop lowest of a full sort; a threshold needs no sort).
    Ties: every entry equal to t is dropped, so with ties fewer than n - drop entries can be kept
    (which tied entries the sort dropped was arbitrary). t comes from ``topk`` and stays on the
    device (no sync); not ``kthvalue``, which CUDA runs in one thread block per slice
    (pytorch#75599). Backward: the identity."""

    @staticmethod
    def forward(ctx, x, keep):
        drop = int((1 - keep) * x.numel())
        if drop == 0:
            return torch.ones_like(x)
        threshold = x.flatten().topk(drop, largest=False, sorted=False).values.max()
        return (x > threshold).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


@dataclass(frozen=True)
class TopKRule:
    """SupSup: scores s ~ Kaiming-uniform (a = sqrt(5), as a Linear's weights; the paper's
    init), mask = top-``keep`` of |s| with the straight-through gradient (through |s|)."""

    keep: float = 0.5

    def __post_init__(self):
        if not 0 < self.keep <= 1:
            raise ValueError(f"kept fraction must be in (0, 1], got {self.keep}")

    def initial(self, shape: tuple[int, ...]) -> torch.Tensor:
        score = torch.empty(shape)
        nn.init.kaiming_uniform_(score, a=math.sqrt(5))
        return score

    def sample(self, score: torch.Tensor) -> torch.Tensor:
        return _TopKStraightThrough.apply(score.abs(), self.keep)

    def binarize(self, score: torch.Tensor) -> torch.Tensor:
        return _TopKStraightThrough.apply(score.abs(), self.keep).bool()


def hard_concrete_sample(logit: torch.Tensor, tau: float) -> torch.Tensor:
    """Hard {0,1} sample of Bernoulli(sigmoid(logit)) with the straight-through gradient of
    sigmoid((logit + Logistic noise) / tau). Values are exactly 0 or 1 (no hard + soft - soft
    rounding), so an all-kept sample reproduces the unmasked model bit for bit."""
    u = torch.rand_like(logit).clamp_(1e-6, 1 - 1e-6)
    soft = torch.sigmoid((logit + torch.log(u) - torch.log1p(-u)) / tau)
    return _RoundStraightThrough.apply(soft, 0.5)


class TaskMask(TransientState, TaskModule):
    """Binary masks of one shape, one per task (a :class:`models.tasks.TaskModule`): a trainable
    tensor while a task is learned, its bits kept bit-packed once the task is finished; ``rule``
    turns one into the other (see the module docstring)."""

    transient = ("_cache", "last_sample")
    last_sample: torch.Tensor | None = None  # the training sample of the last forward
    _cache: tuple[int, torch.Tensor] | None = None  # (task, unpacked finished mask)

    def __init__(self, shape: tuple[int, ...], rule=None, kind: str = "mask"):
        super().__init__()
        self.shape = tuple(shape)
        self.rule = GumbelRule() if rule is None else rule
        self.kind = kind  # what the mask acts on (token, ffn, weight, gate): reports group by it
        self.movement: dict[int, dict[str, int]] = {}  # task -> entries, changed, kept
        self._initial: dict[int, torch.Tensor] = {}  # task -> mask of its initial tensor
        self.trainable = nn.ParameterDict()  # str(task) -> tensor, only for tasks being trained

    def add_task(self, task: int, device: torch.device | str = "cpu") -> None:
        """Create the trainable tensor of a new task, initialized by the rule."""
        initial = self.rule.initial(self.shape).to(device)
        self._initial[task] = self.rule.binarize(initial)
        self.trainable[str(task)] = nn.Parameter(initial)

    def finish_task(self, task: int) -> None:
        """Binarize the task's tensor, keep the bits packed, drop the float tensor."""
        value = self.trainable.pop(str(task))
        binary = self.rule.binarize(value.detach())
        initial = self._initial.pop(task, None)
        if initial is not None:
            self.movement[task] = {"entries": binary.numel(),
                                   "changed": int((binary != initial).sum()),
                                   "kept": int(binary.sum())}
        self.import_task(task, {f"packed_{task}": pack_bits(binary).to(value.device)})

    def export_task(self, task: int) -> dict[str, TaskTensor]:
        name = f"packed_{task}"
        return {name: TaskTensor(getattr(self, name), self.kind, BITS, self.shape)}

    def import_task(self, task: int, state: dict[str, torch.Tensor]) -> None:
        self.register_buffer(f"packed_{task}", state[f"packed_{task}"])
        self._cache = None

    def finished_tasks(self) -> list[int]:
        """Tasks whose bits are kept, in increasing order."""
        return sorted(int(name[len("packed_"):]) for name, _ in self.named_buffers(recurse=False)
                      if name.startswith("packed_"))

    def has_task(self, task: int) -> bool:
        return str(task) in self.trainable or hasattr(self, f"packed_{task}")

    def binary(self, task: int) -> torch.Tensor:
        """The deterministic boolean mask of ``task``."""
        if str(task) in self.trainable:
            return self.rule.binarize(self.trainable[str(task)].detach())
        if self._cache is None or self._cache[0] != task:
            packed = getattr(self, f"packed_{task}", None)
            if packed is None:
                raise KeyError(f"no mask for task {task}")
            self._cache = (task, unpack_bits(packed, self.shape))
        return self._cache[1]

    def forward(self) -> torch.Tensor:
        """Mask of the current task: the rule's float sample while training it, else boolean."""
        if self.task is None:
            raise RuntimeError("TaskMask used before set_task()")
        key = str(self.task)
        if self.training and key in self.trainable:
            self.last_sample = self.rule.sample(self.trainable[key])
            return self.last_sample
        return self.binary(self.task)

    def train(self, mode: bool = True):
        self.last_sample = None  # a sample belongs to the iteration that drew it
        return super().train(mode)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, rule={self.rule}, kind={self.kind}"


def mask_movement(model: nn.Module, task: int) -> dict[str, dict[str, float]]:
    """Per mask kind in ``model``, for a finished ``task``: ``entries``, ``changed`` (fraction of
    entries whose bit differs from the task's initial mask) and ``kept`` (fraction set)."""
    sums: dict[str, list[int]] = {}
    for m in model.modules():
        if isinstance(m, TaskMask) and task in m.movement:
            acc = sums.setdefault(m.kind, [0, 0, 0])
            mv = m.movement[task]
            acc[0] += mv["entries"]
            acc[1] += mv["changed"]
            acc[2] += mv["kept"]
    return {kind: {"entries": n, "changed": changed / n, "kept": kept / n}
            for kind, (n, changed, kept) in sums.items()}
