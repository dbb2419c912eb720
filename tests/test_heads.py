"""Linear probes: folding, caching, the cache lock, and agreement with scikit-learn.

Agreement (:func:`test_probe_agrees_with_sklearn`): on standardized digits features (2 and 5
classes, C = 0.01, 1, 100) the probe's predicted probabilities are within 1e-3 of a tightly
converged (tol 1e-10) scikit-learn ``LogisticRegression`` (measured: at most 1.7e-4, the probe
stopping at gradient 1e-6) and the argmax agrees on >= 99.5% of samples (measured: all); with the
probe converged to gradient 1e-8 they are within 1e-5 (measured: 2.5e-6), the same optimum.
A two-class probe at C is compared with scikit-learn's binary model at 2C (models/heads.py).
"""

import fcntl
import os
import threading

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from torch import nn

import models.heads
from models.heads import C_GRID, StandardizedHead, fit_linear_probe, fold_standardization


def _standardize(f: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean, std = f.mean(0), np.maximum(f.std(0), 1e-6)
    return [(x - mean) / std for x in (f, *others)]


def _sklearn(z: np.ndarray, y: np.ndarray, c: float) -> LogisticRegression:
    return LogisticRegression(C=c, tol=1e-10, max_iter=10_000).fit(z, y)


@pytest.mark.parametrize("classes", [(3, 8), (0, 1, 2, 3, 4)])
@pytest.mark.parametrize("c", [0.01, 1.0, 100.0])
def test_probe_agrees_with_sklearn(classes, c, monkeypatch):
    x, y = load_digits(return_X_y=True)
    keep = np.isin(y, classes)
    x, y = x[keep], np.searchsorted(classes, y[keep])
    sk_c = 2 * c if len(classes) == 2 else c
    expected = _sklearn(*_standardize(x), y, sk_c).predict_proba(_standardize(x)[0])
    f, labels = torch.tensor(x, dtype=torch.float32), torch.from_numpy(y)

    def probabilities():
        probe = fit_linear_probe(f, labels, len(classes), f, labels, c_grid=(c,))
        return torch.softmax(probe.logits(f.double()), 1).numpy()

    got = probabilities()
    assert np.abs(got - expected).max() < 1e-3
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.995
    monkeypatch.setattr(models.heads, "TOLERANCE_GRAD", 1e-8)
    assert np.abs(probabilities() - expected).max() < 1e-5


def test_probe_selects_the_c_sklearn_selects():
    """Few noisy training samples: validation log-loss is lowest inside the grid, at 0.1."""
    rng = np.random.RandomState(0)
    centers = rng.randn(3, 20)
    y, yv = np.arange(60) % 3, np.arange(600) % 3
    f = (centers[y] + 3 * rng.randn(60, 20)).astype(np.float32)
    fv = (centers[yv] + 3 * rng.randn(600, 20)).astype(np.float32)
    z, zv = _standardize(f.astype(np.float64), fv.astype(np.float64))
    losses = [log_loss(yv, _sklearn(z, y, c).predict_proba(zv)) for c in C_GRID]
    sk_c = C_GRID[int(np.argmin(losses))]
    assert sk_c not in (min(C_GRID), 1.0, max(C_GRID))  # no end of the grid, not the default
    probe = fit_linear_probe(*map(torch.from_numpy, (f, y)), 3, *map(torch.from_numpy, (fv, yv)))
    assert sk_c == probe.C


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_probe_fitted_on_cuda_matches_the_cpu_fit():
    y = torch.arange(300) % 5
    f = torch.randn(300, 16, generator=torch.Generator().manual_seed(0)) + \
        torch.nn.functional.one_hot(y, 16).float() * 2
    cpu = fit_linear_probe(f[:200], y[:200], 5, f[200:], y[200:])
    fc, yc = f.cuda(), y.cuda()
    gpu = fit_linear_probe(fc[:200], yc[:200], 5, fc[200:], yc[200:])
    assert gpu.weight.device.type == "cpu" and gpu.C == cpu.C
    assert torch.allclose(gpu.weight, cpu.weight, atol=1e-4)
    assert torch.allclose(gpu.bias, cpu.bias, atol=1e-4)
    assert gpu.accuracy(fc, yc) == cpu.accuracy(f, y)


def test_classes_absent_from_training_get_zero_logits_that_never_win():
    g = torch.Generator().manual_seed(0)
    y = torch.tensor([0, 2, 4]).repeat(30)
    f = torch.randn(90, 6, generator=g) + torch.nn.functional.one_hot(y, 6).float()
    probe = fit_linear_probe(f, y, 5)
    absent = [1, 3]
    assert not probe.weight[absent].any() and not probe.bias[absent].any()
    logits = probe.logits(torch.randn(1000, 6, generator=g) * 3)
    assert not torch.isin(logits.argmax(1), torch.tensor(absent)).any()


def test_folded_standardization_equals_standardize_then_linear():
    rng = np.random.RandomState(0)
    coef, intercept = rng.randn(3, 5), rng.randn(3)
    mean, std = rng.randn(5), rng.rand(5) + 0.1
    w, b = fold_standardization(*map(torch.from_numpy, (coef, intercept, mean, std)))
    f = rng.randn(7, 5)
    expected = ((f - mean) / std) @ coef.T + intercept
    got = torch.from_numpy(f) @ w.T + b
    assert torch.allclose(got, torch.from_numpy(expected), atol=1e-12)


def test_probe_on_linearly_separable_features_is_perfect():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 8, generator=g) * 5
    y = torch.arange(200) % 4
    f = centers[y] * 0.01 + torch.randn(200, 8, generator=g) * 0.001 + 3.0  # tiny, off-centre
    probe = fit_linear_probe(f[:150], y[:150], 4, f[150:175], y[150:175])
    assert probe.accuracy(f[175:], y[175:]) == 1.0
    assert probe.val_acc == 1.0


def test_binary_probe_gives_two_logits():
    y = torch.arange(40) % 2
    f = torch.stack([y.float() * 2 - 1, torch.zeros(40)], 1) + 0.01 * torch.randn(40, 2)
    probe = fit_linear_probe(f, y, 2)
    assert probe.weight.shape == (2, 2)
    assert probe.accuracy(f, y) == 1.0


def test_probe_started_head_predicts_exactly_like_the_probe_and_folds_to_it():
    y = torch.arange(60) % 3
    f = torch.randn(60, 6) + torch.nn.functional.one_hot(y, 6).float() * 3
    probe = fit_linear_probe(f, y, 3)
    head = StandardizedHead(6, 3)
    probe.copy_into(head)
    head.eval()
    assert torch.equal(head(f), probe.logits(f))
    folded = head.fold()
    assert type(folded) is nn.Linear
    assert torch.equal(folded(f), probe.logits(f))
    assert torch.equal(folded.weight, probe.weight) and torch.equal(folded.bias, probe.bias)


def test_standardized_head_follows_the_features_in_training():
    """Training standardizes by the batch (a shifted and scaled batch gives the same logits, and
    every entry is within sqrt(B - 1)); the running estimates move toward the batch's."""
    g = torch.Generator().manual_seed(0)
    head = StandardizedHead(4, 2)
    head.set_statistics(torch.zeros(4), torch.ones(4))
    f = torch.randn(16, 4, generator=g)
    head.train()
    out = head(f)
    assert torch.allclose(head(f * 1000 + 50), out, atol=1e-4)
    z = (f - f.mean(0)) / f.std(0, correction=0)
    assert z.abs().max() <= (len(f) - 1) ** 0.5
    assert torch.allclose(out, z @ head.weight.T + head.bias, atol=1e-5)
    shifted = StandardizedHead(4, 2)
    shifted.set_statistics(torch.zeros(4), torch.ones(4))
    shifted.train()
    shifted(f + 10.0)
    assert torch.allclose(shifted.mean, 0.1 * (f + 10).mean(0), atol=1e-5)  # momentum 0.1


def test_head_nobody_initialized_takes_its_first_batch_statistics():
    f = torch.randn(32, 5) * 3 + 7
    head = StandardizedHead(5, 2).train()
    head(f)
    assert torch.allclose(head.mean, f.mean(0)) and torch.allclose(head.std, f.std(0, correction=0))


def test_cached_probe_is_exactly_the_fitted_one_and_misses_on_other_inputs(tmp_path,
                                                                            monkeypatch):
    y = torch.arange(60) % 3
    f = torch.randn(60, 6, generator=torch.Generator().manual_seed(0)) + \
        torch.nn.functional.one_hot(y, 6).float() * 3
    fitted = fit_linear_probe(f[:40], y[:40], 3, f[40:], y[40:], cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.pt"))) == 1

    def no_fit(*args, **kwargs):
        raise AssertionError("fitted again")

    monkeypatch.setattr(models.heads, "_fit_probe", no_fit)
    cached = fit_linear_probe(f[:40].clone(), y[:40], 3, f[40:], y[40:], cache_dir=tmp_path)
    assert torch.equal(cached.weight, fitted.weight) and torch.equal(cached.bias, fitted.bias)
    assert (cached.C, cached.val_acc) == (fitted.C, fitted.val_acc)

    monkeypatch.undo()
    nudged = f[:40].clone()
    nudged[0, 0] += 1e-6
    fit_linear_probe(nudged, y[:40], 3, f[40:], y[40:], cache_dir=tmp_path)
    fit_linear_probe(f[:40], y[:40], 3, f[40:], y[40:], c_grid=(1.0,), cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.pt"))) == 3


def _counting_fit(monkeypatch, tmp_path) -> list[bool]:
    """Replace ``_fit_probe`` by one that records, per fit, whether the key's lock was held."""
    fits, real_fit = [], models.heads._fit_probe

    def fit(*args):
        fd = os.open(next(tmp_path.glob("*.lock")), os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fits.append(False)
        except BlockingIOError:
            fits.append(True)
        finally:
            os.close(fd)
        return real_fit(*args)

    monkeypatch.setattr(models.heads, "_fit_probe", fit)
    return fits


def test_concurrent_requests_for_one_probe_fit_it_once_under_its_lock(tmp_path, monkeypatch):
    fits = _counting_fit(monkeypatch, tmp_path)
    y = torch.arange(60) % 3
    f = torch.randn(60, 6, generator=torch.Generator().manual_seed(0)) + \
        torch.nn.functional.one_hot(y, 6).float() * 3
    start, probes = threading.Barrier(4), []

    def request():
        start.wait()
        probes.append(fit_linear_probe(f[:40], y[:40], 3, f[40:], y[40:], cache_dir=tmp_path))

    threads = [threading.Thread(target=request) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fits == [True]  # one fit, holding the lock
    assert len(probes) == 4
    assert all(torch.equal(p.weight, probes[0].weight) for p in probes)
