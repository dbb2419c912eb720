"""Sweeps that survive interruption: resume after SIGKILL and Ctrl-C, determinism, contained
failures, corrupted records and run-folder locks (the executors: ``test_executors.py``)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_cli import run_main

from benchmarks import resume, runner
from benchmarks.config import RunConfig
from benchmarks.executors import execute
from benchmarks.resume import RESUME_FILE, run_lock
from benchmarks.runner import run_one
from benchmarks.suitefile import load_suite
from benchmarks.suites import expand
from results import records
from results.records import RecordError, load_record

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, str(ROOT / "run_benchmark.py")]


STEPS = "3"  # optimizer steps per task: these tests check mechanics, not what training reaches


def smoke_config(strategy: str, seed: int = 0, **overrides) -> RunConfig:
    suite = {**load_suite("smoke"), "strategies": [strategy], "seeds": [seed],
             "steps_per_task": int(STEPS), **overrides}
    (config,) = expand(suite)
    return config


def cli(*args, cache, out):
    return [*CLI, *args, "--steps-per-task", STEPS, "--out", str(out), "--cache", str(cache),
            "--quiet"]


def matrix_and_rows(folder: Path):
    rec = load_record(folder)
    return rec["acc_matrix"], (folder / "rows.csv").read_text()


@pytest.mark.slow
def test_sigkill_mid_sequence_then_resume_gives_the_uninterrupted_result(tmp_path, cache_dir,
                                                                         capsys):
    config = smoke_config("lwf")
    reference = run_one(config, tmp_path / "ref", cache_dir, progress=False)

    out = tmp_path / "killed"
    proc = subprocess.Popen(cli("--suite", "smoke", "--strategies", "lwf", cache=cache_dir,
                                out=out), stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    for line in proc.stderr:  # blocks until the run reports its second task
        if "task 2/5 done" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    (folder,) = [p.parent for p in out.glob("*/record.json")]
    partial = load_record(folder)
    assert partial["status"] == "running"
    assert partial["acc_matrix"][1][1] is not None and partial["acc_matrix"][4][0] is None
    assert (folder / RESUME_FILE).exists()

    assert folder.name == config.run_id  # the CLI's run is the same config
    resumed = run_one(config, out, cache_dir, progress=False)
    assert "resuming at task 3/5" in capsys.readouterr().err
    assert resumed["acc_matrix"] == reference["acc_matrix"]
    assert matrix_and_rows(folder) == matrix_and_rows(tmp_path / "ref" / folder.name)
    assert not (folder / RESUME_FILE).exists()


class Interrupt:
    """Raise KeyboardInterrupt (what Ctrl-C raises) once task ``after`` has been written."""

    def __init__(self, after: int):
        self.after, self.seen = after, 0

    def __call__(self, path, text):
        from atomicio import atomic_write_text

        atomic_write_text(path, text)
        if Path(path).name == "train_log.csv":
            self.seen += 1
            if self.seen == self.after + 1:
                raise KeyboardInterrupt


@pytest.mark.parametrize("strategy", ["meat", "hat"])
@pytest.mark.slow
def test_ctrl_c_then_resume_is_exact_for_stateful_strategies(strategy, tmp_path, cache_dir,
                                                             monkeypatch):
    config = smoke_config(strategy)
    reference = run_one(config, tmp_path / "ref", cache_dir, progress=False)
    monkeypatch.setattr("benchmarks.runner.atomic_write_text", Interrupt(after=1))
    with pytest.raises(KeyboardInterrupt):
        run_one(config, tmp_path / "int", cache_dir, progress=False)
    monkeypatch.undo()
    folder = tmp_path / "int" / config.run_id
    assert load_record(folder)["acc_matrix"][2][0] is None  # stopped after task 1
    resumed = run_one(config, tmp_path / "int", cache_dir, progress=False)
    assert resumed["acc_matrix"] == reference["acc_matrix"]
    for key in ("probe_acc", "probe_train_acc", "random_probe_acc", "train_acc", "train_steps",
                "mask_movement"):
        assert resumed[key] == reference[key], key
    assert matrix_and_rows(folder) == matrix_and_rows(tmp_path / "ref" / config.run_id)


@pytest.mark.slow
def test_ctrl_c_then_resume_keeps_the_class_incremental_evaluation(tmp_path, cache_dir,
                                                                   monkeypatch):
    """Fine-tuning moves the backbone, so its task statistics read heads and features as they
    were when each task ended, and the frozen view is billed once: all of it survives resume."""
    config = smoke_config("finetune", task_agnostic=True)
    reference = run_one(config, tmp_path / "ref", cache_dir, progress=False)
    monkeypatch.setattr("benchmarks.runner.atomic_write_text", Interrupt(after=1))
    with pytest.raises(KeyboardInterrupt):
        run_one(config, tmp_path / "int", cache_dir, progress=False)
    monkeypatch.undo()
    resumed = run_one(config, tmp_path / "int", cache_dir, progress=False)
    for key in (*records.CLASS_INCREMENTAL_FIELDS, "metrics", "storage"):
        assert resumed[key] == reference[key], key
    assert [item["name"] for item in resumed["storage"]["shared_items"]] == [
        "frozen starting backbone (task prediction)"]


def test_resume_keeps_the_cuda_rng_state_of_the_runs_device_only(monkeypatch):
    """One CUDA RNG state is saved, the run's device's, and restored onto the resumed run's
    device: a resume that sees fewer GPUs than the run did works (CUDA faked on the CPU)."""
    device, calls = torch.device("cuda"), []

    def get_rng_state(device="cuda"):
        calls.append(("get", device))
        return torch.tensor([7], dtype=torch.uint8)

    def set_rng_state(state, device="cuda"):
        calls.append(("set", device, state.tolist()))

    def one_per_gpu(*args):
        raise AssertionError("a state per visible GPU")

    monkeypatch.setattr(torch.cuda, "get_rng_state", get_rng_state)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", one_per_gpu)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", one_per_gpu)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # the resuming machine
    saved = resume.rng_state(device)
    resume.set_rng_state(saved, device)
    assert calls == [("get", device), ("set", device, [7])]
    calls.clear()
    older = [torch.tensor([5], dtype=torch.uint8), torch.tensor([6], dtype=torch.uint8)]
    resume.set_rng_state({**saved, "cuda": older}, device)  # written with 2 GPUs visible
    assert calls == [("set", device, [5])]
    assert "cuda" not in resume.rng_state(torch.device("cpu"))


class Stop(Exception):
    """Ends a run where a test has seen what it needs."""


def test_deterministic_is_set_before_the_runs_work_and_recorded(tmp_path, cache_dir,
                                                                 monkeypatch):
    """``deterministic``: deterministic algorithms and cuBLAS's fixed workspace are on from
    before the run's first work (here: its backbone), and the run's config records it; without
    it they are off and the config is as before."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")  # restored (unset) after the test
    seen = []

    def stop(*args, **kwargs):
        seen.append((torch.are_deterministic_algorithms_enabled(),
                     os.environ.get("CUBLAS_WORKSPACE_CONFIG")))
        raise Stop

    monkeypatch.setattr(runner, "prepare_backbone", stop)
    configs = [smoke_config("hat"), smoke_config("hat", deterministic=True)]
    try:
        for config in configs:
            with pytest.raises(Stop):
                run_one(config, tmp_path, cache_dir, progress=False)
    finally:
        torch.use_deterministic_algorithms(False)
    assert seen == [(False, None), (True, ":4096:8")]
    plain, det = (json.loads((tmp_path / c.run_id / "record.json").read_text())["config"]
                  for c in configs)
    assert det["deterministic"] is True and "deterministic" not in plain
    assert det == {**plain, "deterministic": True}


@pytest.mark.slow
def test_same_config_same_matrix_and_seeds_are_independent(tmp_path, cache_dir):
    config = smoke_config("finetune", backbone="vit_nano")
    a = run_one(config, tmp_path / "a", cache_dir, progress=False)
    b = run_one(config, tmp_path / "b", cache_dir, progress=False)
    assert a["acc_matrix"] == b["acc_matrix"]
    other = smoke_config("finetune", seed=1, backbone="vit_nano")
    assert other.run_id != a["run_id"]
    c = run_one(other, tmp_path / "a", cache_dir, progress=False)
    assert c["acc_matrix"] != a["acc_matrix"]
    assert c["base"]["seed"] == 1  # its own base pre-training, not seed 0's


@pytest.mark.slow
def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path, cache_dir):
    suite = tmp_path / "exploding.yaml"
    suite.write_text("stream: mnist5k-split5\nbackbone: vit_micro\n"
                     "strategies: [finetune, classifier]\nepochs: 1\nbase_epochs: 5\n"
                     "hparams:\n  finetune: {lr: 1.0e+30}\n")
    out = tmp_path / "out"
    r = run_main(*cli("--suite", str(suite), cache=cache_dir, out=out)[len(CLI):])
    assert r.returncode == 1
    assert "1 run(s) failed" in r.stderr and "training loss is" in r.stderr
    records = {}
    for f in out.glob("*/record.json"):
        rec = load_record(f.parent)
        records[rec["config"]["strategy"]] = rec
    assert records["finetune"]["status"] == "failed"
    assert "NonFiniteLoss" in records["finetune"]["error"]
    assert records["classifier"]["status"] == "finished"
    assert (out / "report" / "summary.md").read_text().count("| classifier |") == 1


@pytest.mark.slow
def test_a_corrupted_record_is_refused_and_redone(tmp_path, cache_dir):
    config = smoke_config("classifier")
    first = run_one(config, tmp_path, cache_dir, progress=False)
    path = tmp_path / config.run_id / "record.json"
    rec = json.loads(path.read_text())
    rec["acc_matrix"][-1][0] = 1.0  # valid JSON, wrong content
    path.write_text(json.dumps(rec))
    with pytest.raises(RecordError, match="checksum"):
        load_record(path.parent)
    r = run_main("report", str(tmp_path), "--strict")
    assert r.returncode == 2 and "corrupted" in r.stderr
    path.write_text(path.read_text()[:100])  # truncated
    redone = run_one(config, tmp_path, cache_dir, progress=False)
    assert redone["acc_matrix"] == first["acc_matrix"]
    assert load_record(path.parent)["status"] == "finished"


def test_a_locked_run_is_skipped_and_left_untouched(tmp_path, cache_dir):
    config = smoke_config("classifier")
    folder = tmp_path / config.run_id
    with run_lock(folder):
        outcome = execute(config, str(tmp_path), str(cache_dir))
    assert outcome.status == "locked" and "another process" in outcome.error
    assert not (folder / "record.json").exists()
    assert execute(config, str(tmp_path), str(cache_dir)).status == "finished"
