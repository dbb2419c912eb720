"""Defining mechanics of the paper's baselines: Piggyback, HAT, LwF, Adapter."""

import math

import pytest
import torch
import torch.nn.functional as F

from models.adapters import add_adapters
from models.factory import create_backbone
from models.masked_linear import make_masked
from models.masks import SigmoidGateRule, TaskMask, ThresholdRule
from models.multitask import MultiTaskViT
from strategies import get_strategy
from strategies.hat import (
    anneal_s,
    attention_regularizer,
    embedding_compensation,
)
from strategies.piggyback import PiggybackPlugin
from strategies.registry import TrainSettings, resolve_hparams


class _Exp:
    def __init__(self, task, n_classes=3):
        self.task_labels = [task]
        self.classes_in_this_experience = list(range(n_classes))


# -- Piggyback ------------------------------------------------------------------------------
def test_piggyback_threshold_and_straight_through_gradient():
    rule = ThresholdRule(init=1e-2, threshold=5e-3)
    score = torch.tensor([1e-2, 5e-3, 4.9e-3, -1.0, 6e-3], requires_grad=True)
    mask = rule.sample(score)
    assert mask.tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]  # strictly above the threshold
    upstream = torch.tensor([0.5, -2.0, 3.0, 1.0, -1.0])
    (mask * upstream).sum().backward()
    assert torch.equal(score.grad, upstream)  # the threshold is skipped in the backward pass
    assert torch.equal(rule.binarize(score.detach()), mask.bool())


def test_piggyback_scores_get_weight_times_output_gradient():
    lin = torch.nn.Linear(4, 3)
    lin.requires_grad_(False)
    mask = TaskMask((3, 4), ThresholdRule())
    make_masked(lin).weight_mask = mask
    mask.add_task(0)
    mask.set_task(0)
    x = torch.randn(5, 4)
    lin(x).sum().backward()
    # d/dM sum(x (W*M)^T) = W * sum_b x_b, straight through to the scores
    assert torch.allclose(mask.trainable["0"].grad, lin.weight * x.sum(0)[None, :])


def test_piggyback_masks_every_block_linear_and_freezes_the_backbone():
    model = MultiTaskViT(create_backbone("vit_nano"))
    plugin = PiggybackPlugin()
    plugin.install(model)
    assert len(plugin.masks) == 2 * 4  # qkv, proj, fc1, fc2 in two blocks
    assert not any(p.requires_grad for p in model.backbone.parameters())


# -- HAT ------------------------------------------------------------------------------------
def test_hat_s_anneals_from_inverse_s_max_to_s_max_within_an_epoch():
    assert anneal_s(0, 11, 400) == pytest.approx(1 / 400)
    assert anneal_s(10, 11, 400) == pytest.approx(400)
    assert anneal_s(5, 11, 400) == pytest.approx(1 / 400 + (400 - 1 / 400) / 2)


def test_hat_compensation_factor():
    e = torch.tensor([0.5, -2.0, 6.0])
    s, s_max = 4.0, 400.0
    expected = [s_max / s * (math.cosh(s * v) + 1) / (math.cosh(v) + 1) for v in e.tolist()]
    assert torch.allclose(embedding_compensation(e, s, s_max), torch.tensor(expected))
    # s e beyond +-50 is clamped inside the cosh instead of overflowing
    assert torch.isfinite(embedding_compensation(torch.tensor([6.0]), 400.0, 400.0)).all()


def test_hat_regularizer_on_hand_made_gates():
    gates = [torch.tensor([1.0, 0.5, 0.0]), torch.tensor([1.0, 1.0])]
    earlier = [torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0])]
    # free units: (0, 1, 1) and (1, 0) -> used among them: 0.5 + 0.0 + 1.0 = 1.5 of 3
    assert attention_regularizer(gates, earlier, 0.75).item() == pytest.approx(0.75 * 1.5 / 3)


def test_hat_gates_multiply_unit_outputs_and_are_binary_at_evaluation():
    lin = torch.nn.Linear(4, 3)
    rule = SigmoidGateRule(s_max=400.0)
    gate = TaskMask((3,), rule)
    make_masked(lin).output_gate = gate
    gate.add_task(0)
    gate.trainable["0"].data = torch.tensor([2.0, -1.0, 0.1])
    gate.set_task(0)
    x = torch.randn(2, 4)
    plain = F.linear(x, lin.weight, lin.bias)
    rule.s = 1.0
    assert torch.allclose(lin(x), plain * torch.sigmoid(torch.tensor([2.0, -1.0, 0.1])))
    lin.eval()
    gate.eval()
    assert torch.equal(lin(x), plain * torch.tensor([1.0, 0.0, 1.0]))


def _strategy(name: str, overrides: dict | None = None):
    """A registered strategy on vit_nano (random heads, 1 epoch) and the bundled split stream."""
    from benchmarks.data.streams import build_stream

    torch.manual_seed(0)
    bench = build_stream("mnist5k-split5", seed=0).to_benchmark()
    settings = TrainSettings(epochs=1, batch_size=64, head_init="random")
    strategy = get_strategy(name).build(create_backbone("vit_nano"),
                                        resolve_hparams(name, overrides), settings)
    return strategy, bench


def test_hat_gradient_masking_keeps_weights_used_by_earlier_tasks():
    strategy, bench = _strategy("hat")
    plugin = strategy.plugins[0]
    strategy.train(bench.train_stream[0])
    before = {id(layer.linear): layer.linear.weight.detach().clone() for layer in plugin.layers}
    strategy.train(bench.train_stream[1])
    cumulative = [m.binary(0) for m in plugin.masks]  # a_<1: the units task 0 uses
    changed_free = 0
    for layer, prev in zip(plugin.layers, cumulative, strict=True):
        w0, w1 = before[id(layer.linear)], layer.linear.weight.detach()
        if layer.source is None:
            used = prev.bool()[:, None].expand_as(w0)
        else:
            src, units = layer.source
            used = prev.bool()[:, None] & cumulative[src][units].bool()[None, :]
        assert used.any()
        assert torch.equal(w1[used], w0[used])
        changed_free += int((w1[~used] != w0[~used]).sum())
    assert changed_free > 0  # units free of task 0 did learn task 1


@pytest.mark.parametrize("overrides", [
    {},  # gates on shared adapters (the published port)
    {"units": "backbone", "optimizer": "sgd", "lr": 0.05},  # the suite's own port, paper SGD
])
@pytest.mark.slow
def test_hat_earlier_task_outputs_are_bit_identical_after_a_later_task(overrides):
    strategy, bench = _strategy("hat", overrides)
    model = strategy.model
    x = torch.randn(8, 1, 28, 28)
    strategy.train(bench.train_stream[0])
    model.eval()
    with torch.inference_mode():
        out0 = model(x, 0).clone()
    strategy.train(bench.train_stream[1])
    model.eval()
    with torch.inference_mode():
        assert torch.equal(model(x, 0), out0)


# -- LwF ------------------------------------------------------------------------------------
def test_lwf_adds_the_documented_distillation_term():
    from avalanche.core import SupervisedPlugin

    seen = {}

    class Check(SupervisedPlugin):
        def before_backward(self, strategy, **kwargs):
            # from the third step on the model has moved away from its copy (at the first step
            # the distillation term is 0 up to rounding)
            if (strategy.experience.current_experience != 1 or "loss" in seen
                    or strategy.clock.train_exp_iterations < 2):
                return
            lwf = strategy.plugins[0].lwf
            x = strategy.mb_x
            ce = F.cross_entropy(strategy.mb_output, strategy.mb_y)
            with torch.no_grad():
                old = lwf.prev_model.forward_single_task(x, 0)
            new = strategy.model.forward_single_task(x, 0)
            t = 2.0
            kl = F.kl_div(F.log_softmax(new / t, 1), F.softmax(old / t, 1), reduction="batchmean")
            seen["loss"], seen["expected"], seen["kl"] = strategy.loss.item(), (ce + kl).item(), kl

    strategy, bench = _strategy("lwf")
    strategy.plugins.append(Check())
    strategy.train(bench.train_stream[0])
    strategy.train(bench.train_stream[1])
    assert seen["kl"].item() > 0
    assert seen["loss"] == pytest.approx(seen["expected"], rel=1e-5)


def test_lwf_one_forward_loss_equals_avalanches_two_forward_loss():
    """The distillation from the training step's own forward equals Avalanche's LwF penalty
    (a second student forward over every head, the teacher copy in training mode) in fp32:
    vit_nano has no dropout, so the two differ only by float rounding."""
    import copy

    from avalanche.core import SupervisedPlugin
    from avalanche.training import LearningWithoutForgetting

    seen = []

    class Check(SupervisedPlugin):
        def before_backward(self, strategy, **kwargs):
            if strategy.experience.current_experience != 2 or len(seen) == 3:
                return
            ours = strategy.plugins[0].lwf
            reference = LearningWithoutForgetting(alpha=1.0, temperature=2.0)
            reference.prev_model = copy.deepcopy(ours.prev_model).train()
            reference.prev_classes_by_task = ours.prev_classes_by_task
            ce = F.cross_entropy(strategy.mb_output, strategy.mb_y)
            expected = ce + reference(strategy.mb_x, strategy.mb_output, strategy.model)
            seen.append((strategy.loss.item(), expected.item(), (expected - ce).item()))

    strategy, bench = _strategy("lwf")
    strategy.plugins.append(Check())
    for exp in bench.train_stream[:3]:
        strategy.train(exp)
    assert len(seen) == 3 and all(kl > 0 for *_, kl in seen[1:])  # two earlier heads distilled
    for loss, expected, _ in seen:
        assert loss == pytest.approx(expected, rel=1e-5, abs=1e-6)


# -- Adapter --------------------------------------------------------------------------------
def test_fresh_adapters_leave_the_frozen_backbone_output_unchanged():
    torch.manual_seed(0)
    backbone = create_backbone("vit_nano")
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        plain = backbone(x).clone()
    adapters = add_adapters(backbone, 8)
    model = MultiTaskViT(backbone)
    model.train().adaptation(_Exp(0))  # the new task's adapters come with its head
    with torch.no_grad():
        assert torch.equal(model.features(x, 0), plain)
        for a in adapters:  # a trained adapter does change it
            torch.nn.init.normal_(a.per_task["task_0"].up.weight)
        assert not torch.allclose(model.features(x, 0), plain)


def test_mask_movement_counts_entries_changed_from_the_initial_mask_per_kind():
    from models.masks import mask_movement

    model = torch.nn.Module()
    model.a = TaskMask((10,), ThresholdRule(init=1e-2, threshold=5e-3), kind="weight")
    model.b = TaskMask((6,), ThresholdRule(init=1e-2, threshold=5e-3), kind="weight")
    model.g = TaskMask((4,), SigmoidGateRule(), kind="gate")
    for m in (model.a, model.b, model.g):
        m.add_task(0)
    initial_gates = model.g.binary(0).clone()
    with torch.no_grad():
        model.a.trainable["0"][:3] = 0.0  # 3 of 10 scores below the threshold
        model.g.trainable["0"].copy_(torch.where(initial_gates, -1.0, 1.0))  # all 4 flip
    for m in (model.a, model.b, model.g):
        m.finish_task(0)
    mv = mask_movement(model, 0)
    assert mv["weight"] == {"entries": 16, "changed": 3 / 16, "kept": 13 / 16}
    assert mv["gate"]["changed"] == 1.0 and mv["gate"]["entries"] == 4
    assert mask_movement(model, 1) == {}


# -- SupSup ---------------------------------------------------------------------------------
def test_supsup_keeps_the_top_fraction_of_absolute_scores_straight_through():
    from models.masks import TopKRule

    rule = TopKRule(keep=0.5)
    score = torch.tensor([[0.3, -0.9], [0.1, 0.5]], requires_grad=True)
    mask = rule.sample(score)
    assert mask.tolist() == [[0.0, 1.0], [0.0, 1.0]]  # |-0.9| and 0.5 are the top half
    upstream = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    (mask * upstream).sum().backward()
    assert torch.equal(score.grad, upstream * score.detach().sign())  # through |s|, not the sort
    assert torch.equal(rule.binarize(score.detach()), mask.bool())
    assert TopKRule(keep=0.75).binarize(torch.arange(8.0)).sum() == 6  # int((1 - k) n) dropped
    with pytest.raises(ValueError, match="kept fraction"):
        TopKRule(keep=0.0)


@pytest.mark.parametrize("shape", [(96, 24), (24, 96), (7, 13)])
@pytest.mark.parametrize("keep", [0.5, 0.3, 1.0])
def test_supsup_threshold_mask_equals_the_sorted_mask(shape, keep):
    from models.masks import TopKRule

    def sorted_mask(x, keep):  # SupSup's GetSubnet: zero the int((1 - keep) n) lowest of a sort
        out = torch.ones_like(x)
        out.view(-1)[x.flatten().argsort()[:int((1 - keep) * x.numel())]] = 0
        return out

    torch.manual_seed(0)
    score = TopKRule(keep).initial(shape)
    assert torch.equal(TopKRule(keep).sample(score), sorted_mask(score.abs(), keep))


def test_supsup_drops_every_score_tied_with_the_threshold():
    from models.masks import TopKRule

    score = torch.tensor([0.1, -0.2, 0.2, 0.2, 0.5, -0.9])  # drop 3: the 3rd smallest |s| is 0.2
    assert TopKRule(keep=0.5).binarize(score).tolist() == [False, False, False, False, True, True]


def _flushing_denormals() -> bool:
    return bool((torch.tensor([1e-40]) * 1.0).item() == 0.0)


def test_hat_flushes_denormals_only_while_it_trains():
    from avalanche.core import SupervisedPlugin

    class Probe(SupervisedPlugin):
        def __init__(self):
            super().__init__()
            self.seen: list[bool] = []

        def before_training_iteration(self, strategy, **kwargs):
            self.seen.append(_flushing_denormals())

    strategy, bench = _strategy("hat")
    probe = Probe()
    strategy.plugins.append(probe)
    assert not _flushing_denormals()
    strategy.train(bench.train_stream[0])
    assert not _flushing_denormals()  # the process-wide flag is restored after training
    if torch.set_flush_denormal(True):  # supported here: training ran with it on
        torch.set_flush_denormal(False)
        assert probe.seen and all(probe.seen)
