"""The GPU check on the CPU: its resume detection reads the runner's own line, its FLOP counts
and image counts are right by hand, its projection covers the whole paper suite, its bf16
check holds bf16's error bounds in training mode, and the script runs end to end (tiny
backbone)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.measure import bf16check, flops, gpucheck, projection, resumecheck
from benchmarks.measure.dataperf import PAPER_SPLITS
from models.factory import create_backbone


def test_resume_line_is_read_as_the_runner_writes_it(monkeypatch, capsys):
    """The runner's own resume step (``Run.resume``, its saved state stubbed) prints the line
    the kill-and-resume check parses: a change of wording fails here."""
    from benchmarks import runner
    from results import records

    record = records.RunRecord(config={}, run_id="r", forgets=False).to_dict()
    done = {"next": 2, "record": record, "rows": [], "log_rows": [], "items": [],
            "file_bytes": []}
    monkeypatch.setattr(runner, "load_resume", lambda folder: {})
    monkeypatch.setattr(runner, "restore", lambda strategy, plugins, saved: done)
    run = runner.Run.__new__(runner.Run)
    run.folder, run.T, run.strategy, run.plugins = Path("r"), 6, None, []
    run.log, run.probe = SimpleNamespace(), SimpleNamespace()
    assert run.resume() == 2
    assert resumecheck.resumed_at(capsys.readouterr().err) == (3, 6)  # killed after task 2 of 6
    assert resumecheck.resumed_at("r: task 2/6 done\n") is None


def test_forward_flops_of_a_tiny_vit_by_hand():
    # vit_nano: 28x28x1, patch 7 -> 16 patches + the class token, dim 64, MLP 256, depth 2
    n, d, h = 17, 64, 256
    patch = 16 * (7 * 7 * 1) * d
    block = n * (d * 3 * d + d * d + d * h + h * d) + 2 * n * n * d  # linears + qkᵀ + attn·v
    assert flops.forward_macs(create_backbone("vit_nano")) == patch + 2 * block


@pytest.mark.parametrize("name", ["vit_nano", "t2t_micro"])
def test_forward_flops_equal_torch_flop_counter_with_attention_as_matmuls(name):
    """An independent count: torch's FLOP counter sees every matmul once attention runs in its
    math form (T2T-ViT's Performer layers included)."""
    model = create_backbone(name).eval()
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel([SDPBackend.MATH]):
        model(torch.zeros(1, 1, 28, 28))
    assert counter.get_total_flops() == 2 * flops.forward_macs(model)


def test_paper_backbones_flops():
    gflops = {b: 2 * flops.forward_macs(create_backbone(b)) / 1e9
              for b in projection.PAPER_BACKBONES}
    assert gflops["deit_tiny_patch16_224"] == pytest.approx(2.51, abs=0.01)
    assert gflops["deit_small_patch16_224"] == pytest.approx(9.20, abs=0.01)
    assert gflops["t2t_vit_12"] / 2 == pytest.approx(1.8, rel=0.03)  # official: 1.8 G MACs


def test_validation_count_is_the_streams_split():
    from benchmarks.data.datasets import stratified_split

    labels = [i % 200 for i in range(PAPER_SPLITS["cub"][0])]
    held = len(stratified_split(labels, 0.1, seed=0)[1])
    assert held == projection.validation_count(len(labels), 0.1) == 600


def test_run_images_count_every_pass():
    splits = {"a": (10, 4), "b": (20, 6)}  # validation: 1 and 2 -> trained on: 9 and 18
    images = projection.run_images(splits, epochs=3, val_fraction=0.1)
    assert images.train == 3 * (9 + 18)
    assert images.reference == (10 + 4) + (20 + 6)  # probe features on the random backbone
    # probe features + one pass after training (calibration, training accuracy) + tests so far
    assert images.forwards == (14 + 9 + 4) + (26 + 18 + 4 + 6)
    none = projection.run_images(splits, epochs=0, val_fraction=0.1)
    assert (none.train, none.forwards) == (0, images.forwards)
    paper = projection.run_images(PAPER_SPLITS, 30, 0.1)
    assert paper.train < 30 * sum(n for n, _ in PAPER_SPLITS.values())  # validation held out


def test_paper_suite_is_210_runs():
    from benchmarks.suitefile import load_suite
    from strategies import STRATEGIES

    suite = load_suite("paper")
    assert projection.PAPER_BACKBONES[0] == suite["backbone"]
    assert all(b in suite["description"] for b in projection.PAPER_BACKBONES[1:])
    configs = projection.paper_configs()
    assert len(configs) == len(STRATEGIES) * len(suite["seeds"]) * 3 == 210
    assert {c.head_init for c in configs} == {"probe"}


def test_counted_flops_follow_each_strategys_passes():
    """Per image, fine-tuning = forward + backward (the image itself needs no gradient); LwF adds
    the previous model's forward only (its distillation reads the step's own forward's logits);
    classifier takes no training step."""
    forward = 2 * flops.forward_macs(create_backbone("vit_nano"))
    cost = {s: flops.counted_flops("vit_nano", s) for s in ("finetune", "lwf", "classifier")}
    assert 2.9 * forward < cost["finetune"]["train"] <= 3 * forward
    assert cost["lwf"]["train"] == pytest.approx(cost["finetune"]["train"] + forward, rel=1e-3)
    assert not cost["classifier"]["trains"] and cost["classifier"]["train"] == 0
    assert cost["classifier"]["eval"] == pytest.approx(forward, rel=1e-3)  # + a 2-class head


def test_projection_sums_the_suites_runs():
    b = "deit_tiny_patch16_224"
    configs = projection.paper_configs([b], ["classifier", "meat"])
    costs = {(b, "meat"): {"trains": True, "train": 3e9, "eval": 1e9},
             (b, "classifier"): {"trains": False, "train": 0.0, "eval": 1e9}}
    measured = {(b, "meat"): {"train_img_s": 1000.0, "eval_img_s": 4000.0},
                (b, "plain"): {"train_img_s": 1200.0, "eval_img_s": 5000.0}}
    proj = projection.projection(configs, costs, {b: 1e9}, measured, tflops=(100.0,))
    trained = projection.run_images(PAPER_SPLITS, 30, 0.1)
    fixed = projection.run_images(PAPER_SPLITS, 0, 0.1)
    meat = 3e9 * trained.train + 1e9 * trained.forwards
    classifier = 1e9 * fixed.forwards
    reference = 1e9 * trained.reference  # once per seed: the sweep's feature cache shares it
    rows = {r["strategy"]: r for r in proj["rows"]}
    assert proj["runs"] == 10 and rows["meat"]["runs"] == rows["classifier"]["runs"] == 5
    assert rows["classifier"]["train_images"] == 0
    total = 5 * (meat + classifier + reference)
    assert proj["pflop"] == pytest.approx(total / 1e15)
    assert proj["assumed_hours"] == [pytest.approx(total / 1e14 / 3600)]
    assert proj["measured_runs"] == 5
    meat_hours = (trained.train / 1000 + trained.forwards / 4000) / 3600
    assert rows["meat"]["measured_hours_per_run"] == pytest.approx(meat_hours)
    assert proj["measured_hours"] == pytest.approx(
        5 * meat_hours + 5 * trained.reference / 5000 / 3600)


@pytest.mark.parametrize("strategy", ["meat", "finetune"])
def test_bf16_agrees_with_fp32_in_training_within_bf16s_bounds(strategy):
    """Tolerances from bf16 arithmetic (``bf16check.bf16_bounds``: u = 2^-8 per rounded operand,
    13 chained products in vit_nano), not from a measurement."""
    assert bf16check.chained_products(create_backbone("vit_nano")) == 6 * 2 + 1
    row = bf16check.agreement("vit_nano", strategy)
    bounds = row["bounds"]
    assert bounds["cosine"] > 0.97  # the bound says something at this depth
    assert row["loss_rel_diff"] <= bounds["loss_rel"]
    assert row["grad_rel_diff"] <= bounds["grad_rel"]
    assert row["grad_cosine"] >= bounds["cosine"]


def test_gpu_check_runs_on_the_cpu(tmp_path):
    code = gpucheck.main(["--device", "cpu", "--backbones", "vit_nano", "--strategies",
                          "meat,classifier", "--batch", "8", "--agreement-batch", "8",
                          "--repeats", "2", "--no-resume", "--out", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert [a["strategy"] for a in report["agreement"]] == ["meat", "classifier"]
    assert [r["strategy"] for r in report["throughput"]] == ["plain", "meat", "classifier"]
    proj = report["projection"]
    assert proj["runs"] == proj["measured_runs"] == 10  # 2 strategies x the suite's 5 seeds
    text = (tmp_path / "gpu.md").read_text()
    assert "Projection of `--suite paper` (computed, not measured)" in text
    assert "Nothing was measured" not in text


def test_projection_only_measures_nothing(tmp_path):
    gpucheck.main(["--device", "cpu", "--backbones", "vit_nano", "--strategies", "classifier",
                   "--projection-only", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert report["agreement"] == report["throughput"] == [] and report["resume"] is None
    assert report["projection"]["measured_runs"] == 0
    assert "Nothing was measured on a GPU here" in (tmp_path / "gpu.md").read_text()
