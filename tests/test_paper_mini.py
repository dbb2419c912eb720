"""The paper-mini suite end to end: the six generated dataset layouts at 224x224, a locally saved
DeiT-Ti checkpoint, the image cache, DeiT preprocessing, every strategy, through the command line.

MEAT runs as the suite says, in bf16 autocast; the other strategies run it with ``--precision
fp32``: without native bf16 instructions a bf16 matmul on these CPUs is ~100x slower than fp32
(256x256: 28 ms vs 0.28 ms), which would make this test take minutes per strategy. Every
strategy's bf16 training step is checked on a tiny backbone in ``tests/test_precision.py``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import run_benchmark
from benchmarks.data.streams import PAPER_TASKS
from benchmarks.data.synthetic import write_paper_layouts, write_random_checkpoint
from results.records import find_records
from strategies import STRATEGIES

pytestmark = pytest.mark.slow  # every test shares one end-to-end sweep


@pytest.fixture(scope="module")
def paper_mini(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper-mini")
    data = write_paper_layouts(root / "data", classes=2, train=2, test=1)
    ckpt = write_random_checkpoint(root / "deit_tiny.pth")
    argv = ["--suite", "paper-mini", "--data-root", str(data), "--pretrained", str(ckpt),
            "--cache", str(root / "cache"), "--quiet"]
    bf16 = run_benchmark.main([*argv, "--strategies", "meat", "--out", str(root / "bf16")])
    fp32 = run_benchmark.main([*argv, "--precision", "fp32", "--out", str(root / "runs")])
    return root, (bf16, fp32)


def test_every_strategy_finishes_on_the_paper_pipeline(paper_mini):
    root, codes = paper_mini
    assert codes == (0, 0)
    records = find_records([root / "runs"])
    assert sorted(r["config"]["strategy"] for r in records) == sorted(STRATEGIES)
    (meat,) = find_records([root / "bf16"])
    assert meat["config"]["precision"] == "bf16"
    for r in [*records, meat]:
        cfg = r["config"]
        assert cfg["preprocess"]["name"] == "deit"
        assert cfg["preprocess"]["mean"] == [0.485, 0.456, 0.406]  # from timm's pretrained_cfg
        assert [t["name"] for t in r["tasks"]] == list(PAPER_TASKS)
        R = r["acc_matrix"]
        if not r["forgets"]:  # earlier tasks' accuracy untouched by later tasks, in bf16 too
            assert all(R[i][j] == R[j][j] for j in range(len(R)) for i in range(j, len(R)))
        examples = torch.load(Path(r["_folder"]) / "examples.pt")["images"]
        assert all(x.shape == (3, 224, 224) and x.dtype == torch.float32 for x in examples)


def test_images_are_decoded_once_into_the_cache(paper_mini):
    root, _ = paper_mini
    folders = sorted(p for p in (root / "cache" / "images").iterdir() if p.is_dir())
    assert len(folders) == 2 * len(PAPER_TASKS)  # train and test of each dataset, shared
    for folder in folders:
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["shape"][1:] == [3, 256, 256]  # stored at 224 / 0.875, centre square


def test_passes_outside_training_read_half_and_share_the_reference(paper_mini):
    """Each run records the images its passes outside training read. Before they were merged
    and cached, a run read per task the probe's features of train, validation and test twice
    (its backbone and the random reference), then the training data twice (head calibration,
    training accuracy). Now the end-of-task pass is one, and the random reference's features
    come from the sweep's cache for every run but the one that computed them first."""
    root, _ = paper_mini
    records = find_records([root / "runs"])
    before = [sum(2 * (t["n_train"] + t["n_val"] + t["n_test"]) + 2 * t["n_train"]
                  for t in r["tasks"]) for r in records]
    read = [r["timing"]["fixed_images"] for r in records]
    assert all(n > 0 for n in read)
    assert sum(n > b / 2 for n, b in zip(read, before, strict=True)) <= 1
    features = list((root / "cache" / "features").glob("*.pt"))
    assert features  # shared with the next sweep too
