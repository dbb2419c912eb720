"""Converged linear probes, and the standardized heads every task trains (started from a probe).

Frozen ViT features on shifted tasks are badly conditioned (some dimensions vary far less than
others), so a head trained for a few SGD epochs is far from converged and rankings then measure
head-training accidents. A probe here is multinomial logistic regression on standardized
features z = (f - mu) / sigma (training mean and population std, sigma >= 1e-6): over the K
classes present in the n training samples, with logits W z + b and inverse regularization C, it
minimizes

    (1/n) * sum_i CE(softmax(W z_i + b), y_i) + ||W||^2 / (2 C n)

(intercept b unpenalized): scikit-learn's ``LogisticRegression(C)`` objective scaled by 1/n, as
its lbfgs solver scales it. It is solved in float64 on the features' device by
``torch.optim.LBFGS`` (strong Wolfe line search), stopping when the largest absolute gradient
entry is <= 1e-6 (scikit-learn's ``gtol`` test), when an iteration changes the loss or the
parameters by less than 64 float64 epsilons, or after 2000 iterations. Unlike scikit-learn's
binary case (one logit w z + b, penalty ||w||^2 / 2C), two classes get two softmax logits too;
at the optimum W = (w/2, -w/2), so a two-class probe at C is scikit-learn's binary one at 2C.
tests/test_heads.py checks the agreement with a tightly converged scikit-learn fit (predicted
probabilities and argmax).

Logits are centered over the present classes (the softmax is unchanged; it makes the solution
unique), so the largest present logit is >= 0 at every input. Classes absent from training get
weight and bias 0: their logit 0 can at most tie with the winner, never beat it.

Standardization folded into a linear layer,

    W z + b = (W / sigma) f + (b - (W / sigma) mu),

gives an ordinary linear head on raw features, but one with huge weights: frozen ViT features
vary little within a task (per-feature sigma of 0.01-0.1), so the folded rows have norms in the
hundreds, and a feature moving by delta moves the logits by W delta / sigma. A strategy that
changes the features (adapters, fine-tuning) and starts from such a head blows its loss up by
orders of magnitude within a few steps. Hence :class:`StandardizedHead`, the head every task
trains: logits = W (f - mu) / sigma + b with (mu, sigma) *following the features*, as batch norm
does — in training the batch's own mean and population std (gradients flow through them), which
bounds every standardized entry by sqrt(B - 1) for a batch of B, so the logits stay bounded by
the head's weights however far the features move; running estimates (exponential moving average,
``momentum`` 0.1 as in ``nn.BatchNorm1d``) for evaluation. A probe starts it exactly: (W, b) =
the probe's coefficients on standardized features, (mu, sigma) = the probe's training statistics,
so at step 0 it predicts what the probe predicts. When its task ends, a head that trained is
given the exact statistics of its final features (``strategies.common.ContinualTemplate.
final_pass``: the running estimates lag features that moved until the last step), then folded
into an ``nn.Linear`` (:meth:`StandardizedHead.fold`): what is kept per task is the paper's linear
head, and in evaluation the head computes exactly that folded layer.

:class:`PlainHead` is the other kind: the prompt methods' classifier as their papers train it (an
``nn.Linear``, weight trunc-normal with std 0.02, bias 0; no standardization, no probe start).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from atomicio import atomic_write, file_lock

C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
MAX_ITER = 2000
TOLERANCE_GRAD = 1e-6  # on the largest absolute entry of the gradient of the mean-scaled loss
TOLERANCE_CHANGE = 64 * torch.finfo(torch.float64).eps  # on the loss and on the step
STD_FLOOR = 1e-6  # smallest standard deviation a feature is divided by


@dataclass
class LinearProbe:
    """A fitted probe: logits ``coef @ ((f - mean) / std) + intercept`` (float32 CPU tensors)."""

    coef: torch.Tensor  # (n_classes, d), on standardized features
    intercept: torch.Tensor  # (n_classes,)
    mean: torch.Tensor  # (d,) training mean of the features
    std: torch.Tensor  # (d,) training population std, >= 1e-6
    C: float
    val_acc: float | None

    @property
    def weight(self) -> torch.Tensor:
        """The folded weight (module docstring)."""
        return fold_standardization(self.coef, self.intercept, self.mean, self.std)[0]

    @property
    def bias(self) -> torch.Tensor:
        return fold_standardization(self.coef, self.intercept, self.mean, self.std)[1]

    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        """Logits of ``feats`` by the folded layer, computed on their device (in float32 for
        float32 features: exactly what a :class:`StandardizedHead` started from this probe
        computes in evaluation)."""
        weight, bias = fold_standardization(self.coef, self.intercept, self.mean, self.std)
        return F.linear(feats, weight.to(feats), bias.to(feats))

    def accuracy(self, feats: torch.Tensor, labels: torch.Tensor) -> float:
        return float((self.logits(feats).argmax(1) == labels.to(feats.device)).float().mean())

    def copy_into(self, head: StandardizedHead) -> None:
        """Overwrite ``head``'s weights and statistics in place (the optimizer keeps its
        references)."""
        if head.weight.shape != self.coef.shape:
            raise ValueError(f"head {tuple(head.weight.shape)} != probe {tuple(self.coef.shape)}")
        with torch.no_grad():
            head.weight.copy_(self.coef.to(head.weight))
            head.bias.copy_(self.intercept.to(head.bias))
        head.set_statistics(self.mean, self.std)


def fold_standardization(coef, intercept, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """(W', b') with W' f + b' == coef @ ((f - mean) / std) + intercept, in the inputs' dtype
    and device."""
    w = coef / std[None, :]
    return w, intercept - w @ mean


class StandardizedHead(nn.Linear):
    """``weight @ ((f - mean) / std) + bias`` with (mean, std) following the features (module
    docstring): the batch's statistics in training, running estimates in evaluation.

    The running estimates start from :meth:`set_statistics` (the task's features, set by the
    probe plugin) or, for a head nobody initialized, from its first training batch: the k-th
    update uses momentum max(``momentum``, 1 / k). A batch of one sample has no spread: it is
    standardized by the running estimates.
    """

    def __init__(self, in_features: int, out_features: int, momentum: float = 0.1):
        super().__init__(in_features, out_features)
        self.momentum = momentum
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("std", torch.ones(in_features))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Start the running estimates at a whole dataset's (mean, std), as if converged."""
        with torch.no_grad():
            self.mean.copy_(mean)
            self.std.copy_(std.clamp_min(STD_FLOOR))
            self.updates.fill_(math.ceil(1 / self.momentum))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        if not self.training or len(feats) < 2:
            return F.linear(feats, *fold_standardization(self.weight, self.bias, self.mean,
                                                         self.std))
        feats = feats.float()  # statistics in float32, also under bf16 autocast
        mean = feats.mean(0)
        var = feats.var(0, correction=0)
        with torch.no_grad():
            self.updates += 1
            m = (1.0 / self.updates).clamp_min(self.momentum)  # on the device: no host read
            self.mean.lerp_(mean.detach().to(self.mean), m)
            self.std.copy_(self.std.square().lerp(var.detach().to(self.std), m).sqrt()
                           .clamp_min(STD_FLOOR))
        return F.linear((feats - mean) / (var + STD_FLOOR**2).sqrt(), self.weight, self.bias)

    def fold(self) -> nn.Linear:
        """The ordinary linear layer this head computes in evaluation."""
        linear = nn.Linear(self.in_features, self.out_features).to(self.weight)
        weight, bias = fold_standardization(self.weight.detach(), self.bias.detach(), self.mean,
                                            self.std)
        with torch.no_grad():
            linear.weight.copy_(weight)
            linear.bias.copy_(bias)
        return linear


class PlainHead(nn.Linear):
    """L2P's, DualPrompt's and CODA-Prompt's head: logits = W f + b, W from timm's
    ``trunc_normal_(std=0.02)`` (cut at +-2 absolute, i.e. 100 std: in effect N(0, 0.02^2)), b = 0.
    It has no standardization to start, so ``strategies.heads.ProbeHeadPlugin`` leaves it as
    created whatever ``head_init`` says, and nothing calibrates or folds it."""

    def reset_parameters(self) -> None:
        nn.init.trunc_normal_(self.weight, std=0.02)
        nn.init.zeros_(self.bias)


def fit_linear_probe(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    n_classes: int,
    val_feats: torch.Tensor | None = None,
    val_labels: torch.Tensor | None = None,
    c_grid: Sequence[float] = C_GRID,
    cache_dir: Path | None = None,
    on_fit: Callable[[], None] | None = None,
) -> LinearProbe:
    """Fit a converged multinomial probe; C from ``c_grid`` by validation log-loss if given.

    Log-loss rather than accuracy: on nearly separable features accuracy ties across C while
    weak regularization yields huge, overconfident weights, and a head started from such a probe
    makes every later backbone update destructive.

    The grid is walked from strong to weak regularization, each fit warm-started from the
    previous solution. Ties go to the smaller C. Without validation data, C = 1. The fit runs on
    ``train_feats``' device; the result depends on it only through floating-point rounding.

    With ``cache_dir``, fits are memoized there by :func:`probe_key` of their inputs, under an
    exclusive lock per key (``<key>.lock``, left in place), so concurrent runs asking for the
    same probe fit it once and the others read the file. The fit is deterministic, so a hit
    returns exactly what fitting would on the same device. Hits are the rule: every strategy
    that starts a task from the frozen base features (classifier, MEAT, Piggyback, Adapter;
    every strategy on its first task) fits the same probe for a given backbone, seed and task.
    ``on_fit()`` is called just before a fit that is not a cache hit (e.g. to announce it).
    """
    args = (train_feats, train_labels, n_classes, val_feats, val_labels, tuple(c_grid))
    if cache_dir is None:
        if on_fit is not None:
            on_fit()
        return _fit_probe(*args)
    key = probe_key(*args)
    path = Path(cache_dir) / f"{key}.pt"
    with file_lock(path.with_suffix(".lock")):
        if path.is_file():
            return LinearProbe(**torch.load(path, map_location="cpu", weights_only=True))
        if on_fit is not None:
            on_fit()
        probe = _fit_probe(*args)
        # atomic: readers without the lock never see half a file
        atomic_write(path, lambda f: torch.save(asdict(probe), f))
    return probe


def _fit_probe(train_feats, train_labels, n_classes, val_feats, val_labels, c_grid) -> LinearProbe:
    device = train_feats.device
    f = train_feats.double()
    mean = f.mean(0)
    std = f.std(0, correction=0).clamp_min(STD_FLOOR)
    z = (f - mean) / std
    present, y = torch.unique(train_labels.to(device), return_inverse=True)
    has_val = val_feats is not None and len(val_feats) > 0
    if has_val:
        zv = (val_feats.to(device).double() - mean) / std
        yv = val_labels.to(device).long()
    w = torch.zeros(len(present), z.shape[1], dtype=z.dtype, device=device, requires_grad=True)
    b = torch.zeros(len(present), dtype=z.dtype, device=device, requires_grad=True)
    best = None  # (val log-loss, C, coef, intercept, val acc)
    for c in sorted(c_grid) if has_val else [1.0]:
        with cpu_threads(1 if device.type == "cpu" and z.numel() < SMALL_FIT else None):
            _minimize(w, b, z, y, c)  # warm-started from the previous C's solution
        coef = z.new_zeros(n_classes, z.shape[1])
        intercept = z.new_zeros(n_classes)
        coef[present] = w.detach() - w.detach().mean(0)
        intercept[present] = b.detach() - b.detach().mean()
        score = acc = None
        if has_val:
            logits = zv @ coef.T + intercept
            acc = float((logits.argmax(1) == yv).double().mean())
            score = float(F.cross_entropy(logits, yv))
        if best is None or (score is not None and score < best[0]):
            best = (score, c, coef, intercept, acc)
    _, best_c, coef, intercept, best_val = best
    return LinearProbe(*(t.float().cpu() for t in (coef, intercept, mean, std)), best_c, best_val)


SMALL_FIT = 1 << 20  # feature entries below which a CPU fit runs on one thread


@contextmanager
def cpu_threads(n: int | None):
    """torch's CPU threads set to ``n`` inside the block (None: unchanged). The many tiny
    operations of an L-BFGS fit on a small problem cost more in thread hand-offs than they gain
    from a second thread (an order of magnitude on the tests' probe sizes)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _minimize(w: torch.Tensor, b: torch.Tensor, z: torch.Tensor, y: torch.Tensor, c: float):
    """Minimize the module docstring's objective over (w, b) in place, from their values."""
    penalty = 1.0 / (2 * c * len(z))
    opt = torch.optim.LBFGS([w, b], max_iter=MAX_ITER, tolerance_grad=TOLERANCE_GRAD,
                            tolerance_change=TOLERANCE_CHANGE, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z @ w.T + b, y) + penalty * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)


def probe_key(*inputs) -> str:
    """sha256 of a probe fit's inputs (tensors by dtype, shape and bytes; other values by repr)."""
    h = hashlib.sha256(f"linear-probe v3 torch-lbfgs {torch.__version__}".encode())
    for x in inputs:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().contiguous()
            h.update(f"{x.dtype}{tuple(x.shape)}".encode())
            h.update(x.numpy().tobytes())
        else:
            h.update(repr(x).encode())
    return h.hexdigest()
