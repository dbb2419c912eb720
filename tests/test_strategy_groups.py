"""The strategy skeleton (``strategies.skeleton.Skeleton``: the one place that builds optimizer
groups) and the registry's recorded names (``strategies.registry.RECORDED_NAMES``)."""

import pytest
import torch
from torch import nn

from benchmarks.suitefile import load_suite
from benchmarks.suites import expand
from strategies import STRATEGIES, get_strategy
from strategies.registry import RECORDED_NAMES, TrainSettings, budget_hparams, resolve_hparams
from strategies.schedules import one_logit_lr
from strategies.skeleton import ExtraGroup, Skeleton

# run ids of the standard suite's first piggyback / supsup run with the old name set by a user,
# as the code before the rename recorded them
OLD_NAME_RUNS = {"piggyback": ("mask_lr", "23ef675136e1"), "supsup": ("score_lr", "8c187bc3d00a")}


class Toy(Skeleton):
    """A skeleton on hand-made parameters: trains ``w``, an extra group ``e``, heads ``h``."""

    def __init__(self):
        self.w, self.e, self.h = (nn.Parameter(torch.zeros(1)) for _ in range(3))

    def trains(self, model, task):
        return [self.w]

    def extra_groups(self, model, task):
        return [ExtraGroup("gate_lr", [self.e]), ExtraGroup("mask_rate", [self.e], one_logit_lr)]

    def heads(self, model, task):
        return [self.h]


def test_the_skeleton_builds_trained_extra_and_head_groups_in_order():
    toy, settings = Toy(), TrainSettings(batch_size=256)
    hp = {"lr": 0.1, "gate_lr": 0.2, "mask_rate": 0.3, "head_lr": 0.4}
    groups = toy.param_groups(None, 0, hp, settings)
    assert [(g["params"], g["lr"]) for g in groups] == [
        ([toy.w], 0.1), ([toy.e], 0.2), ([toy.e], 2 * 0.3), ([toy.h], 0.4)]
    assert all("weight_decay" not in g for g in groups)
    # no lr: no first group; lr_scaling scales every rate; head_weight_decay on the heads only
    no_lr = {"gate_lr": 0.2, "mask_rate": 0.3, "head_lr": 0.4, "lr_scaling": "linear",
             "head_weight_decay": 0.05}
    groups = toy.param_groups(None, 0, no_lr, settings)
    assert [g["lr"] for g in groups] == [0.2 / 4, 2 * (0.3 / 4), 0.4 / 4]
    assert groups[-1]["weight_decay"] == 0.05 and "weight_decay" not in groups[0]


def test_registrations_use_lr_and_the_registry_records_the_first_recorded_names():
    for name, names in RECORDED_NAMES.items():
        info = get_strategy(name)
        for code, recorded in names.items():
            assert code not in info.hparams and recorded in info.hparams
            assert code not in info.search_space and recorded in info.search_space
            assert info.recorded_name(code) == info.recorded_name(recorded) == recorded
            assert info.in_code(info.hparams)[code] == info.hparams[recorded]
    assert set(get_strategy("piggyback").paper_budget.rates) == {"mask_lr", "head_lr"}
    rates = {name: [k for k in info.hparams if k.endswith("lr") and k != "head_lr"]
             for name, info in STRATEGIES.items()}
    assert rates["hat"] == ["lr", "gate_lr"] and rates["meat"] == ["token_mask_lr", "ffn_mask_lr"]
    assert rates["classifier"] == []
    assert all(r == ["lr"] for name, r in rates.items()
               if name not in ("hat", "meat", "classifier", *RECORDED_NAMES))


@pytest.mark.parametrize("name", sorted(OLD_NAME_RUNS))
def test_either_name_resolves_to_the_run_recorded_before(name):
    old, run_id = OLD_NAME_RUNS[name]
    suite = {**load_suite("standard"), "strategies": [name], "stream": "mnist5k-nuisance5",
             "backbone": "vit_micro", "seeds": [0]}
    configs = [expand({**suite, "hparams": {name: {key: 0.01}}})[0] for key in (old, "lr")]
    assert configs[0] == configs[1] and configs[0].run_id == run_id
    assert configs[0].hparams[old] == 0.01 and "lr" not in configs[0].hparams
    # of two spellings the later wins (a user's lr over a tuned file's old name); a user value
    # in either spelling is kept at any budget
    assert resolve_hparams(name, {old: 0.1, "lr": 0.2})[old] == 0.2
    hp = resolve_hparams(name, {"lr": 0.2})
    assert budget_hparams(name, hp, {"lr"}, epochs=1, steps_per_task=150,
                          batch_size=32)[0][old] == 0.2


def test_an_old_name_trains_at_its_rate():
    """Piggyback built from ``mask_lr: 0.01``: its scores train at 0.01, its head at head_lr."""
    from benchmarks.data.streams import build_stream
    from models.factory import create_backbone

    bench = build_stream("mnist5k-split5", seed=0).to_benchmark()
    settings = TrainSettings(steps_per_task=1, batch_size=16, head_init="random")
    hp = resolve_hparams("piggyback", {"mask_lr": 0.01})
    strategy = get_strategy("piggyback").build(create_backbone("vit_nano"), hp, settings)
    strategy.train(bench.train_stream[0])
    scores, head = strategy.optimizer.param_groups
    assert (scores["initial_lr"], head["initial_lr"]) == (0.01, hp["head_lr"])
    masks = strategy.plugins[0].masks
    assert len(scores["params"]) == len(masks) and len(head["params"]) == 2
