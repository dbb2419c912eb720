"""The GPU check script runs end to end on the CPU (tiny backbone) and projects run costs from
throughputs with the paper run's image counts."""

from __future__ import annotations

import json

import pytest

from benchmarks import gpucheck
from benchmarks.dataperf import PAPER_SPLITS, paper_run_decodes


def test_projection_from_throughputs():
    rows = [{"backbone": "b", "strategy": "plain", "batch": 256, "train_step_ms": 1.0,
             "eval_img_s": 1.0},
            {"backbone": "b", "strategy": "meat", "batch": 256, "train_step_ms": 1000.0,
             "eval_img_s": 512.0}]
    train = 30 * sum(n for n, _ in PAPER_SPLITS.values())
    hours = (train / 256 + (paper_run_decodes(30) - train) / 512) / 3600
    proj = gpucheck.projection(rows)
    assert proj["run_hours"] == {"b": {"meat": pytest.approx(hours)}}
    assert proj["grid_hours"] == pytest.approx(hours * 5 * 2)


def test_paper_run_decodes_counts_training_probe_and_evaluation_reads():
    n = list(PAPER_SPLITS.values())
    expect = sum(2 * tr + te + sum(t for _, t in n[: i + 1]) for i, (tr, te) in enumerate(n))
    assert paper_run_decodes(epochs=1) == expect


def test_gpu_check_runs_on_the_cpu(tmp_path):
    code = gpucheck.main(["--device", "cpu", "--backbones", "vit_nano", "--strategies",
                          "meat,classifier", "--batch", "8", "--repeats", "2", "--no-resume",
                          "--out", str(tmp_path)])
    assert code == 0
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert [a["strategy"] for a in report["agreement"]] == ["meat", "classifier"]
    assert all(a["same_prediction"] >= 0.5 for a in report["agreement"])
    assert [r["strategy"] for r in report["throughput"]] == ["plain", "meat", "classifier"]
    assert set(report["projection"]["run_hours"]["vit_nano"]) == {"meat", "classifier"}
    assert "Projection" in (tmp_path / "gpu.md").read_text()
