"""No strategy's training step waits for the host.

On CUDA one training step of every strategy runs under ``torch.cuda.set_sync_debug_mode("error")``
(any synchronizing call raises). Everywhere, an instrumented step counts the calls that would
make a GPU wait: reading a tensor on the host (``.item()``, ``.tolist()``, ``.cpu()``,
``.numpy()``, ``bool()``/``int()``/``float()`` of a tensor) and operations whose result size
depends on the data (``nonzero``, ``unique``, ``masked_select``, indexing by a Python list or a
boolean mask), except torch's optimizers reading their step counts, which torch keeps on the
host for this reason. The step is everything from the batch's conversion into model inputs to
the end of the optimizer's update, on the second task, where each method's continual-learning
machinery is active (LwF's distillation, HAT's gradient masks, ...)."""

from __future__ import annotations

import sys

import pytest
import torch
from avalanche.core import SupervisedPlugin
from torch.overrides import TorchFunctionMode

from benchmarks.data.inputs import InputPipeline
from benchmarks.data.streams import build_stream
from models.factory import create_backbone
from strategies import STRATEGIES, get_strategy
from strategies.registry import TrainSettings, resolve_hparams

HOST_READS = {"item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__"}
DATA_SIZED = {"nonzero", "unique", "unique_consecutive", "masked_select", "argwhere"}


def _host_index(index) -> bool:
    """Whether an index makes the device wait: a Python list, or a boolean mask."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, list) or (isinstance(p, torch.Tensor) and p.dtype == torch.bool)
               for p in parts)


def _called_from(package: str, depth: int = 6) -> bool:
    frame = sys._getframe(2)
    for _ in range(depth):
        if frame is None:
            return False
        if frame.f_globals.get("__name__", "").startswith(package):
            return True
        frame = frame.f_back
    return False


class HostSyncs(TorchFunctionMode):
    """Records (call name) of every call that would synchronize a GPU."""

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if name == "item" and _called_from("torch.optim"):
            return func(*args, **(kwargs or {}))  # Adam's step counts live on the host
        if (name in HOST_READS or name in DATA_SIZED
                or (name in ("__getitem__", "__setitem__") and _host_index(args[1]))):
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


class SecondTaskSteps(SupervisedPlugin):
    """Runs the second task's training steps inside ``window`` (a context manager): from the
    conversion of the batch into model inputs (:meth:`inputs` wraps the run's pipeline) to the
    end of the update."""

    def __init__(self, window, pipeline):
        super().__init__()
        self.window, self.pipeline = window, pipeline
        self.second_task = self.open = False

    def before_training_exp(self, strategy, **kwargs):
        self.second_task = strategy.experience.current_experience == 1

    def inputs(self, x, train: bool):
        if not (train and self.second_task):
            return self.pipeline(x, train)
        self.window.__enter__()  # closed after the step's update
        self.open = True
        return self.pipeline(x, train)

    def after_training_iteration(self, strategy, **kwargs):
        if self.open:
            self.window.__exit__(None, None, None)
            self.open = False


def _train_two_tasks(name: str, device: str, window) -> None:
    torch.manual_seed(0)
    bench = build_stream("mnist5k-split5", seed=0).to_benchmark()
    steps = SecondTaskSteps(window, InputPipeline({"name": "none"}, 28))
    settings = TrainSettings(steps_per_task=2, batch_size=16, device=device, head_init="random",
                             inputs=steps.inputs, plugins=[steps])
    strategy = get_strategy(name).build(create_backbone("vit_micro"), resolve_hparams(name),
                                        settings)
    for exp in bench.train_stream[:2]:
        strategy.train(exp)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.slow
def test_training_step_has_no_host_sync(name):
    mode = HostSyncs()
    _train_two_tasks(name, "cpu", mode)
    assert mode.calls == [], f"{name}: host syncs in a training step: {sorted(set(mode.calls))}"


def test_the_instrument_sees_each_kind_of_sync():
    x = torch.arange(6.0)
    with HostSyncs() as mode:
        x.sum().item()
        x.tolist()
        bool(x[0] > 1)
        x[[0, 2]]
        x[x > 2]
        torch.unique(x)
        x[torch.tensor([0, 2])]  # an index tensor on the device: no sync
        x[1:3]
    assert mode.calls == ["item", "tolist", "__bool__", "__getitem__", "__getitem__", "unique"]


class CudaSyncError:
    """``torch.cuda.set_sync_debug_mode("error")`` while open."""

    def __enter__(self):
        torch.cuda.set_sync_debug_mode("error")

    def __exit__(self, *exc):
        torch.cuda.set_sync_debug_mode("default")
        return False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_cuda_training_step_has_no_sync(name):
    try:
        _train_two_tasks(name, "cuda", CudaSyncError())
    finally:
        torch.cuda.set_sync_debug_mode("default")
