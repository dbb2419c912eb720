"""Learning-rate rules, schedules and budgets in steps (strategies.schedules, the template)."""

import math

import pytest
import torch
from avalanche.core import SupervisedPlugin

from models.factory import create_backbone
from strategies import get_strategy
from strategies.registry import TrainSettings, budget_hparams, resolve_hparams
from strategies.schedules import (
    SCHEDULES,
    PaperBudget,
    budget_factor,
    linear_scaled,
    lr_factor,
    one_logit_lr,
)


def test_one_logit_step_equals_the_two_logit_difference_step_under_adam():
    """Same gradients dL/dd at every step: AdamW on (t_keep, t_drop) at lr and AdamW on d at
    one_logit_lr(lr) give the same d = t_keep - t_drop after every step."""
    lr, steps = 0.025, 40
    t_keep = torch.full((50,), 4.0, requires_grad=True)
    t_drop = torch.full((50,), -4.0, requires_grad=True)
    d = torch.full((50,), 8.0, requires_grad=True)
    two = torch.optim.AdamW([t_keep, t_drop], lr=lr, weight_decay=0.0)
    one = torch.optim.AdamW([d], lr=one_logit_lr(lr), weight_decay=0.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        grad_d = torch.randn(50, generator=g) + 0.5  # a biased gradient: logits travel
        t_keep.grad, t_drop.grad, d.grad = grad_d.clone(), -grad_d.clone(), grad_d.clone()
        two.step()
        one.step()
        assert torch.allclose(t_keep - t_drop, d, atol=1e-5)
    assert (d.detach() - 8.0).abs().max() > 0.5  # they did move


def test_linear_scaling_rule():
    assert linear_scaled(0.1, 256) == pytest.approx(0.025)  # the paper's masks at batch 256
    assert linear_scaled(5e-4, 64) == pytest.approx(3.125e-5)
    assert linear_scaled(1e-4, 64, "none") == 1e-4
    with pytest.raises(ValueError, match="lr scaling"):
        linear_scaled(1.0, 64, "sqrt")


def test_schedule_factors():
    total = 12
    assert lr_factor("cosine", 0, total) == 1.0
    assert lr_factor("cosine", total // 2, total) == pytest.approx(0.5)
    assert lr_factor("constant", 7, total) == 1.0
    step = [lr_factor("step", s, total) for s in range(total)]
    assert step == [1.0] * 6 + [0.1] * 6
    warm = [lr_factor("warmup_cosine", s, total) for s in range(total)]
    assert warm[0] == pytest.approx(0.5) and warm[1] == 1.0  # 2 warm-up steps of 12
    assert all(a >= b for a, b in zip(warm[1:], warm[2:], strict=False))  # then decays
    assert sum(lr_factor("cosine", s, 1000) for s in range(1000)) == pytest.approx(500, abs=1)
    with pytest.raises(ValueError, match="schedule"):
        lr_factor("linear", 0, total)
    assert set(SCHEDULES) == {"cosine", "warmup_cosine", "step", "constant"}


@pytest.mark.parametrize("steps", [3, 7])
@pytest.mark.slow
def test_a_budget_in_steps_takes_exactly_that_many_steps(steps):
    """mnist5k-split5's first task has 12 batches of 64: 3 steps cut the first epoch, 7 too; the
    scheduler is built over the budget, so the last step uses the last factor."""
    from benchmarks.data.streams import build_stream

    bench = build_stream("mnist5k-split5", seed=0).to_benchmark()
    settings = TrainSettings(epochs=50, steps_per_task=steps, batch_size=64, head_init="random")
    strategy = get_strategy("finetune").build(create_backbone("vit_nano"),
                                              resolve_hparams("finetune"), settings)
    seen, batches = [], []

    class Watch(SupervisedPlugin):
        def before_training_epoch(self, strategy, **kwargs):
            batches.append(len(strategy.dataloader))

        def after_training_iteration(self, strategy, **kwargs):
            seen.append(strategy.optimizer.param_groups[0]["lr"])

    strategy.plugins.append(Watch())
    for exp in bench.train_stream[:2]:
        seen.clear()
        strategy.train(exp)
        assert strategy.steps_taken == steps == len(seen)
        assert strategy.train_epochs == math.ceil(steps / batches[-1]) == 1
    lr = resolve_hparams("finetune")["lr"]
    assert seen == pytest.approx([lr * lr_factor("cosine", s, steps) for s in range(1, steps + 1)])


def test_the_budget_rule_keeps_the_papers_learning_rate_mass():
    """sum of the rate over a task's steps = the paper's: rate x steps (the schedule's mean is the
    same at any length), for linearly batch-scaled rates (MEAT) and plain ones (Piggyback)."""
    budget = PaperBudget(epochs=30, images=21_489, batch=256, rates=("lr",))
    base = 0.1
    paper_mass = linear_scaled(base, budget.batch) * budget.steps
    for steps, batch in [(150, 32), (4, 64), (5000, 256)]:
        f = budget_factor(budget, epochs=1, steps_per_task=steps, batch_size=batch,
                          lr_scaling="linear")
        assert linear_scaled(base * f, batch) * steps == pytest.approx(paper_mass)
    plain = PaperBudget(epochs=30, images=14_861, batch=32, rates=("lr",))
    f = budget_factor(plain, epochs=1, steps_per_task=150, batch_size=32)
    assert 1e-4 * f * 150 == pytest.approx(1e-4 * plain.steps)
    # a budget in epochs keeps the mass over the same data: 1 at the paper's epochs
    assert budget_factor(budget, epochs=30, steps_per_task=None, batch_size=64) == 1.0
    assert budget_factor(budget, epochs=3, steps_per_task=None, batch_size=64) == 10.0


def test_registered_rates_are_scaled_to_the_budget_and_labelled():
    from benchmarks.suitefile import load_suite
    from benchmarks.suites import expand

    meat = [c for c in expand(load_suite("default")) if c.strategy == "meat"][0]
    f = budget_factor(get_strategy("meat").paper_budget, epochs=meat.epochs,
                      steps_per_task=150, batch_size=32, lr_scaling="linear")
    assert meat.hparams_source == "paper+code+budget"
    assert meat.hparams["token_mask_lr"] == pytest.approx(0.1 * f)
    assert meat.hparams["head_lr"] == pytest.approx(5e-4 * f)
    # tuned values are kept as they are (the standard suite's), and so is a user's rate
    standard = expand({**load_suite("standard"), "strategies": ["meat"]})[0]
    assert standard.hparams_source == "tuned" and standard.hparams["token_mask_lr"] == 6.4
    hp, factor = budget_hparams("meat", {**meat.hparams, "token_mask_lr": 0.1},
                                {"token_mask_lr"}, epochs=1, steps_per_task=150, batch_size=32)
    assert hp["token_mask_lr"] == 0.1 and factor == pytest.approx(f)
    # a strategy without a paper budget is never scaled
    assert budget_hparams("finetune", {"lr": 1e-3}, set(), epochs=1, steps_per_task=150,
                          batch_size=32) == ({"lr": 1e-3}, 1.0)
