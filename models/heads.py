"""Converged linear probes, folded into ``nn.Linear`` heads.

Frozen ViT features on shifted tasks are badly conditioned (per-dimension std 0.1-0.3 next to
~0.8 elsewhere), so a head trained for a few SGD epochs is far from converged and rankings then
measure head-training accidents. A probe here is multinomial logistic regression (scikit-learn,
L-BFGS, L2) on standardized features z = (f - mu) / sigma, with its inverse regularization C chosen
on validation features when given. Standardization is folded into the head:

    W z + b = (W / sigma) f + (b - (W / sigma) mu)

so the head is an ordinary linear layer on raw features.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0, 100.0)


@dataclass
class LinearProbe:
    """A fitted probe as raw-feature logits ``weight @ f + bias`` (standardization folded in)."""

    weight: torch.Tensor  # (n_classes, d)
    bias: torch.Tensor  # (n_classes,)
    C: float
    val_acc: float | None

    def logits(self, feats: torch.Tensor) -> torch.Tensor:
        return feats @ self.weight.T + self.bias

    def accuracy(self, feats: torch.Tensor, labels: torch.Tensor) -> float:
        return float((self.logits(feats).argmax(1) == labels).float().mean())

    def copy_into(self, head: nn.Linear) -> None:
        """Overwrite ``head``'s parameters in place (the optimizer keeps its references)."""
        if head.weight.shape != self.weight.shape:
            raise ValueError(f"head {tuple(head.weight.shape)} != probe {tuple(self.weight.shape)}")
        with torch.no_grad():
            head.weight.copy_(self.weight.to(head.weight))
            head.bias.copy_(self.bias.to(head.bias))


def fold_standardization(
    coef: np.ndarray, intercept: np.ndarray, mean: np.ndarray, std: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W', b') with W' f + b' == coef @ ((f - mean) / std) + intercept."""
    w = coef / std[None, :]
    b = intercept - w @ mean
    return torch.from_numpy(w).float(), torch.from_numpy(b).float()


def _softmax_params(clf: LogisticRegression, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(coef, intercept) as n_classes softmax logits; classes absent from training keep 0."""
    d = clf.coef_.shape[1]
    coef, intercept = np.zeros((n_classes, d)), np.zeros(n_classes)
    if len(clf.classes_) == 2:  # sklearn's binary form: the logit of class 1 alone
        coef[clf.classes_[1]], intercept[clf.classes_[1]] = clf.coef_[0], clf.intercept_[0]
    else:
        coef[clf.classes_], intercept[clf.classes_] = clf.coef_, clf.intercept_
    return coef, intercept


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
    weak regularization yields huge, overconfident weights (|w| in the hundreds seen here), and
    a head started from such a probe makes every later backbone update destructive.

    The grid is walked from strong to weak regularization, each fit warm-started from the
    previous solution (L-BFGS, up to 2000 iterations, tol 1e-5). Ties go to the smaller C.
    Without validation data, C = 1.

    With ``cache_dir``, fits are memoized there by :func:`probe_key` of their inputs. The fit is
    deterministic, so a hit returns exactly what fitting would. Hits are the rule: every strategy
    that starts a task from the frozen base features (classifier, MEAT, Piggyback, Adapter; every
    strategy on its first task) fits the same probe for a given backbone, seed and task, and the
    fit over the C grid costs more than a task's training on CPU here.
    """
    args = (train_feats, train_labels, n_classes, val_feats, val_labels, tuple(c_grid))
    if cache_dir is None:
        return _fit_probe(*args)
    path = Path(cache_dir) / f"{probe_key(*args)}.pt"
    if path.is_file():
        return LinearProbe(**torch.load(path, weights_only=True))
    probe = _fit_probe(*args)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    torch.save(asdict(probe), tmp)
    os.replace(tmp, path)  # concurrent runs write identical files; readers never see half of one
    return probe


def _fit_probe(train_feats, train_labels, n_classes, val_feats, val_labels, c_grid) -> LinearProbe:
    f = train_feats.double().numpy()
    y = train_labels.numpy()
    mean = f.mean(0)
    std = np.maximum(f.std(0), 1e-6)
    z = (f - mean) / std
    has_val = val_feats is not None and len(val_feats) > 0
    grid = sorted(c_grid) if has_val else [1.0]
    clf = LogisticRegression(max_iter=2000, tol=1e-5, warm_start=True)
    best = None  # (val acc, C, coef, intercept)
    for c in grid:
        clf.set_params(C=c).fit(z, y)
        coef, intercept = _softmax_params(clf, n_classes)
        score = acc = None
        if has_val:
            zv = (val_feats.double().numpy() - mean) / std
            logits = torch.from_numpy(zv @ coef.T + intercept)
            yv = val_labels.long()
            acc = float((logits.argmax(1) == yv).double().mean())
            score = float(torch.nn.functional.cross_entropy(logits, yv))
        if best is None or (score is not None and score < best[0]):
            best = (score, c, coef, intercept, acc)
    _, best_c, coef, intercept, best_val = best
    weight, bias = fold_standardization(coef, intercept, mean, std)
    return LinearProbe(weight, bias, best_c, best_val)


def probe_key(*inputs) -> str:
    """sha256 of a probe fit's inputs (tensors by dtype, shape and bytes; other values by repr)."""
    h = hashlib.sha256(f"linear-probe v1 sklearn {sklearn.__version__}".encode())
    for x in inputs:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().contiguous()
            h.update(f"{x.dtype}{tuple(x.shape)}".encode())
            h.update(x.numpy().tobytes())
        else:
            h.update(repr(x).encode())
    return h.hexdigest()
