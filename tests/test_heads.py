import numpy as np
import torch
from torch import nn

import models.heads
from models.heads import fit_linear_probe, fold_standardization


def test_folded_standardization_equals_standardize_then_linear():
    rng = np.random.RandomState(0)
    coef, intercept = rng.randn(3, 5), rng.randn(3)
    mean, std = rng.randn(5), rng.rand(5) + 0.1
    w, b = fold_standardization(coef, intercept, mean, std)
    f = rng.randn(7, 5)
    expected = ((f - mean) / std) @ coef.T + intercept
    got = torch.from_numpy(f).float() @ w.T + b
    assert torch.allclose(got, torch.from_numpy(expected).float(), atol=1e-5)


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


def test_probe_copies_into_a_linear_head():
    y = torch.arange(60) % 3
    f = torch.randn(60, 6) + torch.nn.functional.one_hot(y, 6).float() * 3
    probe = fit_linear_probe(f, y, 3)
    head = nn.Linear(6, 3)
    probe.copy_into(head)
    assert torch.allclose(head(f), probe.logits(f), atol=1e-5)


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
