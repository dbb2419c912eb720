"""Every strategy resumes on another device: after its first task on the CPU, its resume state
(loaded on the CPU, as the runner loads it) is restored into a strategy on a second device, which
trains a step of the next task there. ``meta`` stands in for CUDA on the CPU: its tensors can be
computed with but not read, and an op that mixes them with CPU tensors fails as it would on a
GPU — a tensor left on the CPU in a plain attribute (a cache, a batch's choice) shows."""

import pytest
import torch
from avalanche.core import SupervisedPlugin
from conftest import fitting_hparams

from benchmarks.measure.stepperf import synthetic_stream
from benchmarks.resume import load_resume, restore, save_resume
from models.factory import create_backbone
from strategies import STRATEGIES, get_strategy
from strategies.registry import TrainSettings

DEVICES = ["meta", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))]


class OneStep(SupervisedPlugin):
    """Stops training after the first optimizer step (before the task would be finished)."""

    class Done(Exception):
        pass

    def after_update(self, strategy, **kwargs):
        raise OneStep.Done


def build(name: str, device: str, plugins=()):
    settings = TrainSettings(epochs=1, batch_size=4, head_init="random", device=device,
                             plugins=list(plugins))
    return get_strategy(name).build(create_backbone("vit_nano"),
                                    fitting_hparams(name, "vit_nano"), settings)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_a_strategy_resumed_after_its_first_task_trains_on_another_device(name, device,
                                                                          tmp_path):
    bench = synthetic_stream((1, 28, 28), (8, 8), 4, n_classes=2).to_benchmark()
    first = build(name, "cpu")
    first.train(bench.train_stream[0])
    first.eval([bench.test_stream[0]])  # evaluation fills the caches of finished tasks
    save_resume(tmp_path, first, [], {"next": 1})

    step = OneStep()
    resumed = build(name, device, plugins=[step])
    restore(resumed, [step], load_resume(tmp_path))
    with pytest.raises(OneStep.Done):
        resumed.train(bench.train_stream[1])
    assert {p.device.type for p in resumed.model.parameters()} == {device}
