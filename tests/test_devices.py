"""Correct on CUDA, checked on the CPU: resume state and per-task files are device-independent,
Slurm gets whole GPUs, local workers spread over the GPUs, and the training and evaluation loops
read nothing back from the device per batch. ``meta`` tensors stand in for device tensors: they
can be computed with but not read, so any host read of one raises."""

import copy
import os
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import get_context
from types import SimpleNamespace

import pytest
import torch
from avalanche.training.plugins import LwFPlugin

from benchmarks import executors
from benchmarks.data.datasets import TensorImages
from benchmarks.data.scenario import avalanche_benchmark, task_dataset
from benchmarks.executors import ExecutorError, ExecutorOptions, Outcome, check_available
from benchmarks.plugins import EvalCounter, ProgressBar
from benchmarks.resume import load_resume, move_to, restore, save_resume, strategy_plugins
from models.factory import create_backbone, save_checkpoint
from models.multitask import MultiTaskViT
from strategies import get_strategy
from strategies.common import ContinualTemplate
from strategies.registry import TrainSettings, resolve_hparams


# ----------------------------------------------------------------------------- resume
def _lwf(device: str):
    settings = TrainSettings(head_init="random", device=device)
    return get_strategy("lwf").build(create_backbone("vit_nano"), resolve_hparams("lwf"), settings)


def _lwf_plugin(strategy):
    (plugin,) = [p for p in strategy_plugins(strategy, []) if isinstance(p, LwFPlugin)]
    return plugin


def _saved_lwf(folder):
    """A resume state of LwF after a task: its plugin holds a model outside the strategy's."""
    strategy = _lwf("cpu")
    _lwf_plugin(strategy).lwf.prev_model = copy.deepcopy(strategy.model)
    save_resume(folder, strategy, [], {"next": 1})
    return torch.get_rng_state()


def test_resume_state_loads_on_the_cpu_and_moves_to_the_strategys_device(tmp_path):
    rng = _saved_lwf(tmp_path)
    torch.manual_seed(123)
    strategy = _lwf("meta")  # a device whose tensors set_rng_state would refuse
    assert restore(strategy, [], load_resume(tmp_path)) == {"next": 1}
    assert torch.equal(torch.get_rng_state(), rng)
    prev = _lwf_plugin(strategy).lwf.prev_model
    for module in (strategy.model, prev):
        assert {p.device.type for p in module.parameters()} == {"meta"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resume_state_restores_onto_cuda(tmp_path):
    rng = _saved_lwf(tmp_path)
    strategy = _lwf("cuda")
    restore(strategy, [], load_resume(tmp_path))
    assert torch.equal(torch.get_rng_state(), rng)
    prev = _lwf_plugin(strategy).lwf.prev_model
    for module in (strategy.model, prev):
        assert {p.device.type for p in module.parameters()} == {"cuda"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_resume_state_restores_the_cuda_rng_of_the_runs_device(tmp_path):
    torch.cuda.manual_seed(5)
    save_resume(tmp_path, _lwf("cuda"), [], {"next": 1})
    expected = torch.rand(4, device="cuda")  # the draws the run would have made next
    strategy = _lwf("cuda")
    restore(strategy, [], load_resume(tmp_path))
    assert torch.equal(torch.rand(4, device=strategy.device), expected)


def test_move_to_reaches_modules_through_containers_and_objects():
    layer, head = torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)
    state = {"layers": [layer], "holder": SimpleNamespace(pair=(layer, head)), "head": head}
    move_to(state, "meta")
    assert state["layers"][0] is layer and state["holder"].pair == (layer, head)
    assert {p.device.type for m in (layer, head) for p in m.parameters()} == {"meta"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_move_to_moves_tensors_in_place_so_shared_ones_stay_shared():
    shared = torch.zeros(3)
    state = {"gates": [shared], "holder": SimpleNamespace(gate=shared)}
    move_to(state, "cuda")
    assert state["gates"][0] is shared and state["holder"].gate is shared
    assert shared.device.type == "cuda"


# ----------------------------------------------------------------------------- task files
def test_task_files_hold_detached_cpu_tensors(tmp_path, monkeypatch):
    """``.cpu()`` is a no-op on a CPU tensor, so the test records which tensors went through it
    (on a GPU run those are the copies a CPU-only machine can load)."""
    copied = []
    real_cpu = torch.Tensor.cpu

    def cpu(self, *args, **kwargs):
        out = real_cpu(self, *args, **kwargs).clone()
        copied.append(out)
        return out

    monkeypatch.setattr(torch.Tensor, "cpu", cpu)
    weight = torch.nn.Parameter(torch.ones(2, 2))
    saved = {}
    real_save = torch.save

    def save(obj, path):
        saved.update(obj)
        real_save(obj, path)

    monkeypatch.setattr("models.factory.torch.save", save)
    save_checkpoint({"heads.0.weight": weight, "packed": torch.zeros(4, dtype=torch.uint8)},
                    tmp_path / "task_0.pt")
    for value in saved["state_dict"].values():
        assert any(value is c for c in copied) and not value.requires_grad


@pytest.mark.parametrize("layout", ["current", "before the per-task-state interface"])
def test_task_files_read_on_the_cpu(tmp_path, monkeypatch, layout):
    """A task file written on any device reads onto the CPU (the token-mask figure's data comes
    from it, through ``models.tasks.token_masks``)."""
    from models import tasks
    from models.tasks import BITS, TaskTensor, load_task_file, save_task_file, token_masks

    key = "backbone.blocks.0.attn.token_mask.packed_0"
    bits = torch.tensor([0b10110000], dtype=torch.uint8)
    path = tmp_path / "tasks" / "task_0.pt"
    if layout == "current":
        save_task_file({key: TaskTensor(bits, "token", BITS, (4,))}, path)
    else:
        save_checkpoint({key: bits}, path, packed_shapes={key: [4]})
    places = []
    real_load = torch.load

    def load(*args, **kwargs):
        places.append(kwargs.get("map_location"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(tasks.torch, "load", load)
    masks = token_masks(load_task_file(path))
    assert {k: m.tolist() for k, m in masks.items()} == {"blocks.0": [True, False, True, True]}
    assert places == ["cpu"]


# ----------------------------------------------------------------------------- executors
def test_slurm_refuses_a_fraction_of_a_gpu_before_any_work():
    with pytest.raises(ExecutorError, match=r"--gpus-per-run 0\.5: Slurm allocates whole GPUs"):
        check_available(ExecutorOptions(executor="slurm", gpus_per_run=0.5))
    check_available(ExecutorOptions(executor="slurm", gpus_per_run=2.0))
    check_available(ExecutorOptions(executor="ray", gpus_per_run=0.5))


def test_visible_gpus_name_the_devices_cuda_visible_devices_lists(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert executors.visible_gpus() == ["0", "1", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 5,7")
    assert executors.visible_gpus() == ["3", "5", "7"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert executors.visible_gpus() == []


def test_worker_k_sees_gpu_k_mod_n(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    counter = get_context("spawn").Value("i", 0)
    seen = []
    for _ in range(3):
        executors.use_one_gpu(["3", "5"], counter)
        seen.append(os.environ["CUDA_VISIBLE_DEVICES"])
    assert seen == ["3", "5", "3"]


def test_local_workers_start_with_one_gpu_each(monkeypatch):
    pools = []

    class Pool(ThreadPoolExecutor):  # records how the process pool would be made
        def __init__(self, max_workers, mp_context, **kwargs):
            pools.append(kwargs)
            super().__init__(max_workers)

    monkeypatch.setattr(executors, "ProcessPoolExecutor", Pool)
    monkeypatch.setattr(executors, "execute", lambda cfg, *a: Outcome("id", cfg, "finished"))
    options = ExecutorOptions(workers=2)
    for gpus in (["0", "1"], []):
        monkeypatch.setattr(executors, "visible_gpus", lambda gpus=gpus: gpus)
        out = executors._local(["a", "b"], "out", "cache", options, False, False,
                               lambda *a: None)
        assert [o.label for o in out] == ["a", "b"]
    with_gpus, without = pools
    assert with_gpus["initializer"] is executors.use_one_gpu
    assert with_gpus["initargs"][0] == ["0", "1"]
    assert without == {}


# ----------------------------------------------------------------------------- no syncs
class RecordingViT(MultiTaskViT):
    """Records what the template passes as task labels: an int, or a tensor."""

    def __init__(self):
        super().__init__(create_backbone("vit_nano"))
        self.labels: list = []

    def forward(self, x, task_labels):
        self.labels.append(task_labels if isinstance(task_labels, int) else "tensor")
        return super().forward(x, task_labels)


def _experience_data(tasks: list[int]):
    n = len(tasks)
    return task_dataset(TensorImages(torch.rand(n, 1, 28, 28), [i % 2 for i in range(n)]), tasks)


def test_template_passes_a_single_tasks_label_as_an_int():
    parts = [_experience_data([0] * 8), _experience_data([1] * 8),
             _experience_data([0, 1] * 4)]  # the last experience mixes two tasks
    bench = avalanche_benchmark(train=parts, test=parts)
    model = RecordingViT()
    strategy = ContinualTemplate(
        model=model, param_groups=lambda m, t: [{"params": list(m.parameters()), "lr": 1e-3}],
        settings=TrainSettings(epochs=1, batch_size=4, eval_batch_size=4, head_init="random"))
    for t in (0, 1):
        strategy.train(bench.train_stream[t])
        assert model.labels == [t, t]
        model.labels.clear()
    strategy.eval(bench.test_stream[:2])
    assert model.labels == [0, 0, 1, 1]
    model.labels.clear()
    strategy.eval(bench.test_stream[2:])
    assert model.labels == ["tensor", "tensor"]


def test_eval_counts_and_progress_read_the_device_once_per_experience_and_epoch():
    counter, bar = EvalCounter(), ProgressBar("x", 1)
    bar.bar = SimpleNamespace(update=lambda n: None)
    meta = SimpleNamespace(mb_output=torch.zeros(4, 3, device="meta"),
                           mb_y=torch.zeros(4, dtype=torch.long, device="meta"),
                           loss=torch.zeros((), device="meta"))
    counter.before_eval_exp(meta)
    bar.before_training_epoch(meta)
    for _ in range(2):  # a host read of a meta tensor raises
        counter.after_eval_iteration(meta)
        bar.after_training_iteration(meta)
    out = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    cpu = SimpleNamespace(mb_output=out, mb_y=torch.tensor([0, 0, 0]),
                          experience=SimpleNamespace(current_experience=4))
    counter.before_eval(cpu)
    counter.before_eval_exp(cpu)
    counter.after_eval_iteration(cpu)
    counter.after_eval_iteration(cpu)
    counter.after_eval_exp(cpu)
    loss = 2 * float(torch.nn.functional.cross_entropy(out, cpu.mb_y, reduction="sum"))
    assert counter.counts.keys() == {4}
    correct, n, summed = counter.counts[4]
    assert (correct, n) == (4, 6) and summed == pytest.approx(loss)
