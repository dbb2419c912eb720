import pytest
import torch

from benchmarks.data.streams import build_stream
from benchmarks.data.transforms import patch_shuffle


def _all_images(ds):
    return torch.stack([ds[i][0] for i in range(len(ds))])


@pytest.mark.slow
def test_stream_is_a_pure_function_of_name_and_seed():
    a = build_stream("mnist5k-split5", seed=3)
    b = build_stream("mnist5k-split5", seed=3)
    c = build_stream("mnist5k-split5", seed=4)
    assert [t.classes for t in a.tasks] == [t.classes for t in b.tasks]
    for ta, tb in zip(a.tasks, b.tasks, strict=True):
        assert ta.train.targets == tb.train.targets
        assert torch.equal(_all_images(ta.train), _all_images(tb.train))
        assert torch.equal(_all_images(ta.test), _all_images(tb.test))
    assert [t.classes for t in a.tasks] != [t.classes for t in c.tasks]


def test_split_tasks_have_disjoint_classes_and_ids_from_zero():
    s = build_stream("mnist5k-split5", seed=0)
    assert len(s.tasks) == 5
    seen = set()
    for t in s.tasks:
        assert len(t.classes) == 2
        assert not seen & set(t.classes)
        seen |= set(t.classes)
        for part in (t.train, t.val, t.test):
            assert sorted(set(part.targets)) == [0, 1]
    assert seen == {str(d) for d in range(10)}


def test_validation_is_a_stratified_tenth_of_training_data():
    s = build_stream("mnist5k-split5", seed=0)
    t = s.tasks[0]
    n = len(t.train) + len(t.val)
    assert abs(len(t.val) - 0.1 * n) <= 2
    tr, va = _all_images(t.train), _all_images(t.val)
    # no validation image is also a training image
    d = torch.cdist(va.flatten(1), tr.flatten(1))
    assert d.min() > 0


def test_benchmark_has_task_labels_and_classes():
    s = build_stream("mnist5k-split5", seed=0)
    bm = s.to_benchmark()
    for i, exp in enumerate(bm.train_stream):
        assert exp.task_label == i
        assert sorted(exp.classes_in_this_experience) == [0, 1]
        x, y, t = exp.dataset[0]
        assert t == i and x.shape == (1, 28, 28)
    assert len(bm.valid_stream) == len(bm.test_stream) == 5


def test_domain_stream_declares_a_base_outside_the_tasks_domain():
    s = build_stream("mnist5k-domains", seed=0)
    assert s.base is not None and s.base.name == "upright 0-4"
    assert len(s.tasks) >= 3
    names = [t.name for t in s.tasks]
    assert len(set(names)) == len(names)
    for t in s.tasks:
        assert set(t.train.targets) == set(range(t.n_classes))


def test_patch_shuffle_is_a_permutation_of_patches():
    x = torch.arange(16 * 49, dtype=torch.float).reshape(1, 1, 28, 28)
    y = patch_shuffle(4, seed=0)(x)
    assert not torch.equal(x, y)
    assert torch.equal(x.flatten().sort().values, y.flatten().sort().values)
    # every 7x7 patch of y is some 7x7 patch of x
    px = {tuple(x[0, 0, r:r + 7, c:c + 7].flatten().tolist()) for r in range(0, 28, 7)
          for c in range(0, 28, 7)}
    py = {tuple(y[0, 0, r:r + 7, c:c + 7].flatten().tolist()) for r in range(0, 28, 7)
          for c in range(0, 28, 7)}
    assert px == py


@pytest.mark.slow
def test_nuisance_stream_is_deterministic_ten_class_and_keeps_base_out_of_tests():
    a = build_stream("mnist5k-nuisance5", seed=0)
    b = build_stream("mnist5k-nuisance5", seed=0)
    assert a.base is not None and a.base.name == "upright 0-9" and a.image_shape == (1, 28, 28)
    assert len(a.tasks) == 5 and len({t.name for t in a.tasks}) == 5
    base_train = a.base.train.images.flatten(1)
    for ta, tb in zip(a.tasks, b.tasks, strict=True):
        assert ta.classes == [str(d) for d in range(10)]
        for part in ("train", "val", "test"):
            pa, pb = getattr(ta, part), getattr(tb, part)
            assert torch.equal(pa.images, pb.images) and pa.targets == pb.targets
            assert sorted(set(pa.targets)) == list(range(10))
            assert pa.images.min() >= 0 and pa.images.max() <= 1
        assert (len(ta.train), len(ta.val), len(ta.test)) == (720, 80, 1000)
        # no base training image is a task test image
        assert torch.cdist(ta.test.images.flatten(1), base_train).min() > 0
    # nor is one the clean digit behind the task test images (the upright test split)
    assert torch.cdist(a.base.test.images.flatten(1), base_train).min() > 0
    c = build_stream("mnist5k-nuisance5", seed=1)
    assert not torch.equal(a.tasks[0].test.images, c.tasks[0].test.images)
