"""The per-task-state interface (models.tasks) for every registered strategy: one optimizer build
per task, every tensor a strategy adds is either a task's export or declared shared storage,
the storage bill is what the exports hold, and an export alone predicts its task."""

import pytest
import torch
from conftest import fitting_hparams

from models.factory import create_backbone
from models.tasks import BITS, TaskTensor, load_task_file, save_task_file
from strategies import STRATEGIES, get_strategy
from strategies.registry import TrainSettings
from strategies.storage import shared_items

TASKS = 2


@pytest.fixture(scope="module")
def bench():
    from benchmarks.data.streams import build_stream

    return build_stream("mnist5k-split5", seed=0).to_benchmark()


def build(name):
    torch.manual_seed(0)
    backbone = create_backbone("vit_nano")
    settings = TrainSettings(steps_per_task=2, batch_size=32, head_init="random")
    return backbone, get_strategy(name).build(backbone, fitting_hparams(name, "vit_nano"),
                                              settings)


@pytest.fixture(scope="module", params=list(STRATEGIES))
def trained(request, bench):
    """(name, pristine backbone state, strategy trained on 2 tasks, backbone)."""
    name = request.param
    torch.manual_seed(0)
    pristine = create_backbone("vit_nano").state_dict()
    backbone, strategy = build(name)
    for t in range(TASKS):
        strategy.train(bench.train_stream[t])
    return name, pristine, strategy, backbone


def export_bits(export: dict[str, TaskTensor]) -> int:
    return sum(t.decoded().numel() * (1 if t.encoding == BITS else 8 * t.value.element_size())
               for t in export.values())


@pytest.mark.slow
def test_the_optimizer_is_built_once_per_task(trained):
    _, _, strategy, _ = trained
    assert strategy.optimizer_builds == TASKS


def test_every_added_tensor_is_a_tasks_export_or_declared_shared(trained):
    """A strategy that adds a tensor outside the per-task-state interface (so that it would be
    missing from tasks/task_<t>.pt) fails here."""
    name, pristine, strategy, backbone = trained
    model = strategy.model
    exported = {k for t in range(TASKS) for k in model.export_task(t)}
    added = {k: v for k, v in model.state_dict().items()
             if k.removeprefix("backbone.") not in pristine and k not in exported}
    hp = fitting_hparams(name, "vit_nano")
    shared = sum(i.entries for i in shared_items(get_strategy(name), backbone, hp))
    assert sum(v.numel() for v in added.values()) == shared, sorted(added)


def test_storage_bill_is_what_the_task_exports_hold(trained, bench):
    name, _, strategy, backbone = trained
    info, hp = get_strategy(name), fitting_hparams(name, "vit_nano")
    for t in range(TASKS):
        n_classes = strategy.model.heads[str(t)].out_features
        billed = sum(i.entries * i.bits for i in info.storage(backbone, n_classes, hp))
        assert export_bits(strategy.model.export_task(t)) == billed, (name, t)


def test_a_task_file_alone_restores_its_predictions(trained, bench, tmp_path):
    """Export every task to a file, import it into a freshly built model: same outputs. (Only
    for strategies whose task needs nothing but its export: no shared trained state.)"""
    name, _, strategy, _ = trained
    info = get_strategy(name)
    if info.forgets or info.shared_storage is not None:
        pytest.skip(f"{name}: a task also needs the shared trained state")
    _, fresh = build(name)
    x = torch.stack([bench.test_stream[0].dataset[i][0] for i in range(8)])
    for t in range(TASKS):
        save_task_file(strategy.model.export_task(t), tmp_path / f"task_{t}.pt")
        fresh.model.import_task(t, {k: v.value for k, v in
                                    load_task_file(tmp_path / f"task_{t}.pt").items()})
    strategy.model.eval()
    fresh.model.eval()
    with torch.inference_mode():
        for t in range(TASKS):
            assert torch.equal(fresh.model(x, t), strategy.model(x, t)), (name, t)


def test_every_strategy_file_registers_itself_by_being_in_the_package():
    import re
    from pathlib import Path

    import strategies

    folder = Path(strategies.__file__).parent
    declared = {m for f in folder.glob("*.py")
                for m in re.findall(r'@register_strategy\(\s*"([a-z0-9_-]+)"', f.read_text())}
    assert declared == set(STRATEGIES)


def test_a_backbone_with_its_own_classifier_is_refused_with_the_fix():
    import pytest
    import timm

    import models.registered  # noqa: F401  (the suite's own timm models)
    from models.multitask import MultiTaskViT

    with pytest.raises(ValueError, match=r"num_classes=0"):
        MultiTaskViT(timm.create_model("vit_nano", num_classes=10))
    assert MultiTaskViT(timm.create_model("vit_nano", num_classes=0)).num_features > 0
