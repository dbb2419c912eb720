"""Converged linear probes, folded into ``nn.Linear`` heads.

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

Standardization is folded into the head:

    W z + b = (W / sigma) f + (b - (W / sigma) mu)

so the head is an ordinary linear layer on raw features.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from models.atomic import atomic_write

C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)
MAX_ITER = 2000
TOLERANCE_GRAD = 1e-6  # on the largest absolute entry of the gradient of the mean-scaled loss
TOLERANCE_CHANGE = 64 * torch.finfo(torch.float64).eps  # on the loss and on the step


@dataclass
class LinearProbe:
    """A fitted probe as raw-feature logits ``weight @ f + bias`` (standardization folded in)."""

    weight: torch.Tensor  # (n_classes, d), float32 on CPU
    bias: torch.Tensor  # (n_classes,)
    C: float
    val_acc: float | None

    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        """Logits of ``feats``, computed on their device."""
        return feats @ self.weight.to(feats).T + self.bias.to(feats)

    def accuracy(self, feats: torch.Tensor, labels: torch.Tensor) -> float:
        return float((self.logits(feats).argmax(1) == labels.to(feats.device)).float().mean())

    def copy_into(self, head: nn.Linear) -> None:
        """Overwrite ``head``'s parameters in place (the optimizer keeps its references)."""
        if head.weight.shape != self.weight.shape:
            raise ValueError(f"head {tuple(head.weight.shape)} != probe {tuple(self.weight.shape)}")
        with torch.no_grad():
            head.weight.copy_(self.weight.to(head.weight))
            head.bias.copy_(self.bias.to(head.bias))


def fold_standardization(coef, intercept, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """(W', b') with W' f + b' == coef @ ((f - mean) / std) + intercept, as float32 CPU tensors
    (inputs: numpy arrays or tensors)."""
    w = coef / std[None, :]
    b = intercept - w @ mean
    return torch.as_tensor(w).float().cpu(), torch.as_tensor(b).float().cpu()


def fit_linear_probe(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    n_classes: int,
    val_feats: torch.Tensor | None = None,
    val_labels: torch.Tensor | None = None,
    c_grid: Sequence[float] = C_GRID,
    cache_dir: Path | None = None,
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
    """
    args = (train_feats, train_labels, n_classes, val_feats, val_labels, tuple(c_grid))
    if cache_dir is None:
        return _fit_probe(*args)
    key = probe_key(*args)
    path = Path(cache_dir) / f"{key}.pt"
    with file_lock(path.with_suffix(".lock")):
        if path.is_file():
            return LinearProbe(**torch.load(path, map_location="cpu", weights_only=True))
        probe = _fit_probe(*args)
        # atomic: readers without the lock never see half a file
        atomic_write(path, lambda f: torch.save(asdict(probe), f))
    return probe


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created, with its folder, if needed) for the block.
    The lock belongs to this open file description: threads taking it each open their own."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _fit_probe(train_feats, train_labels, n_classes, val_feats, val_labels, c_grid) -> LinearProbe:
    device = train_feats.device
    f = train_feats.double()
    mean = f.mean(0)
    std = f.std(0, correction=0).clamp_min(1e-6)
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
    weight, bias = fold_standardization(coef, intercept, mean, std)
    return LinearProbe(weight, bias, best_c, best_val)


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
    h = hashlib.sha256(f"linear-probe v2 torch-lbfgs {torch.__version__}".encode())
    for x in inputs:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().contiguous()
            h.update(f"{x.dtype}{tuple(x.shape)}".encode())
            h.update(x.numpy().tobytes())
        else:
            h.update(repr(x).encode())
    return h.hexdigest()
