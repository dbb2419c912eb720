"""Trackers (``benchmarks/trackers.py``): TensorBoard event files and a W&B run (real wandb, in
offline mode: nothing leaves the machine) get the config, the accuracy-matrix row after every
task, storage, timing and the final metrics; read back, the per-task accuracies equal the
record's; an interrupted run resumes into the same tracker runs; the options travel from the
CLI to the runs without entering the run id; ``--wandb`` without the package is refused."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import pytest
from test_cli import run_main
from test_sweeps import Interrupt, smoke_config

from atomicio import atomic_write_text
from benchmarks import runner
from benchmarks.executors import ExecutorError, ExecutorOptions, run_all
from benchmarks.runner import run_one
from benchmarks.trackers import (
    TensorBoardTracker,
    Trackers,
    final_scalars,
    hparam_values,
    task_scalars,
)


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a TensorBoard log folder (all its event files): tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def tensorboard_rows(folder: Path, n_tasks: int) -> list[list[float]]:
    """Row i of the accuracy matrix as logged at task step i (each logged exactly once)."""
    logged = scalars(folder)
    rows = [[None] * (i + 1) for i in range(n_tasks)]
    for j in range(n_tasks):
        points = logged[f"eval/accuracy/task_{j}"]
        assert sorted(step for step, _ in points) == list(range(j, n_tasks))
        for step, value in points:
            rows[step][j] = value
    return rows


def close(a: list[list[float]], b: list[list[float]]) -> bool:  # TensorBoard keeps float32
    return all(len(x) == len(y) and all(abs(u - v) < 1e-6 for u, v in zip(x, y, strict=True))
               for x, y in zip(a, b, strict=True)) and len(a) == len(b)


RECORD = {  # a finished 3-task record, as far as the trackers read it
    "acc_matrix": [[0.9, None, None], [0.8, 0.7, None], [0.75, 0.65, 0.6]],
    "metrics": {"final_avg_acc": 0.6667, "forgetting": 0.1, "bwt": -0.1, "note": "x"},
    "storage": {"total_mib": 3.5, "base_mib": 2.0, "per_task_mib": [0.5, 0.5, 0.5],
                "per_task_items": [[{"name": "head", "bits": 10}]] * 3},
    "timing": {"train_s": 12.5, "wall_s": 20.0, "peak_rss_mib": None},
}
CONFIG = {"strategy": "meat", "seed": 0, "hparams": {"lr": 0.01, "layers": [1, 2]},
          "data_root": None}


def test_task_and_final_scalars_come_from_the_record():
    assert task_scalars(RECORD, 1) == {"storage/total_mib": 3.5, "storage/base_mib": 2.0,
                                       "storage/task_mib": 0.5, "timing/train_s": 12.5,
                                       "timing/wall_s": 20.0}
    assert final_scalars(RECORD) == {"final/final_avg_acc": 0.6667, "final/forgetting": 0.1,
                                     "final/bwt": -0.1}
    assert hparam_values(CONFIG) == {"strategy": "meat", "seed": 0, "hparams.lr": 0.01,
                                     "hparams.layers": "[1, 2]"}


def test_tensorboard_tracker_logs_config_rows_storage_timing_and_final(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    tracker = TensorBoardTracker(tmp_path)
    tracker.log_config(CONFIG)
    tracker.log_epoch(1, {"task": 0, "epoch": 1, "loss": 1.5, "accuracy": 0.5, "seconds": 1.0})
    for i, row in enumerate(RECORD["acc_matrix"]):
        tracker.log_task(i, row[: i + 1], task_scalars(RECORD, i))
    tracker.log_final(RECORD)
    tracker.close()

    folder = tmp_path / "tensorboard"
    logged = scalars(folder)
    assert tensorboard_rows(folder, 3) == [[pytest.approx(v) for v in row[: i + 1]]
                                           for i, row in enumerate(RECORD["acc_matrix"])]
    assert logged["train/loss/task_0"] == [(1, 1.5)]
    assert [s for s, _ in logged["storage/task_mib"]] == [0, 1, 2]
    assert logged["timing/wall_s"][-1] == (2, 20.0)
    assert logged["final/forgetting"] == [(2, pytest.approx(0.1))]
    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    acc.Reload()
    (text,) = acc.Tensors("config/text_summary")
    assert "strategy: meat" in text.tensor_proto.string_val[0].decode()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(
        content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["strategy"].string_value == "meat"
    assert start.hparams["hparams.lr"].number_value == 0.01


# --- W&B, offline: the run's binary log read back -------------------------------------------

def wandb_records(path: Path):
    """The records of a W&B run file (``run-<id>.wandb``: a header, then protobuf records in
    32 KiB blocks, each chunk with a 7-byte header: checksum, length, type full/first/middle/
    last), as ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, chunk = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if left < 7 or kind == 0:  # the block's padding
            pos += left
            continue
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # full, last
            yield wandb_internal_pb2.Record.FromString(chunk)
            chunk = b""


def item_key(item) -> str:
    return item.key or "/".join(item.nested_key)


def wandb_run(path: Path) -> dict:
    """What one offline W&B run file holds: its id, config, history rows, summary, exit code."""
    out = {"config": {}, "history": [], "summary": {}, "exit_code": None}
    for r in wandb_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["id"], out["project"] = r.run.run_id, r.run.project
        elif kind == "config":
            out["config"].update({item_key(i): json.loads(i.value_json) for i in r.config.update})
        elif kind == "history":
            out["history"].append({item_key(i): json.loads(i.value_json)
                                   for i in r.history.item})
        elif kind == "summary":
            out["summary"].update({item_key(i): json.loads(i.value_json)
                                   for i in r.summary.update})
        elif kind == "exit":
            out["exit_code"] = r.exit.exit_code
    return out


@pytest.fixture
def wandb_offline(monkeypatch, tmp_path):
    pytest.importorskip("wandb")
    home = tmp_path / "wandb-home"
    for name, value in {"WANDB_MODE": "offline", "WANDB_SILENT": "true",
                        "WANDB_CONFIG_DIR": home / "config", "WANDB_CACHE_DIR": home / "cache",
                        "WANDB_DATA_DIR": home / "data"}.items():
        monkeypatch.setenv(name, str(value))


@pytest.mark.slow
def test_a_tracked_run_interrupted_and_resumed_logs_every_task_once(tmp_path, cache_dir,
                                                                     monkeypatch, wandb_offline):
    """Ctrl-C after task 2, then the same run again: TensorBoard's event files and the W&B run
    (id = the run id; two offline parts, the first ended as failed) hold each task's row of the
    accuracy matrix once, equal to the record's, then the final metrics, storage and timing."""
    config = smoke_config("finetune")  # trains: per-epoch values too
    trackers = Trackers(tensorboard=True, wandb_project="vitcl-test")
    monkeypatch.setattr(runner, "atomic_write_text", Interrupt(after=1))
    with pytest.raises(KeyboardInterrupt):
        run_one(config, tmp_path, cache_dir, progress=False, trackers=trackers)
    monkeypatch.setattr(runner, "atomic_write_text", atomic_write_text)
    record = run_one(config, tmp_path, cache_dir, progress=False, trackers=trackers)
    assert record["status"] == "finished"
    folder = tmp_path / config.run_id
    T, matrix = len(record["acc_matrix"]), record["acc_matrix"]
    rows = [row[: i + 1] for i, row in enumerate(matrix)]

    assert len(list((folder / "tensorboard").glob("events.out.tfevents.*"))) == 2
    assert close(tensorboard_rows(folder / "tensorboard", T), rows)
    logged = scalars(folder / "tensorboard")
    assert logged["final/final_avg_acc"][0][1] == pytest.approx(record["metrics"]
                                                                ["final_avg_acc"])
    assert logged["storage/total_mib"][-1][1] == pytest.approx(record["storage"]["total_mib"])
    assert [s for s, _ in logged["timing/train_s"]] == list(range(T))
    epochs = sorted(s for tag, points in logged.items() if tag.startswith("train/loss/")
                    for s, _ in points)
    assert epochs and epochs == list(range(1, len(epochs) + 1))  # continued after resuming

    parts = [wandb_run(p) for p in sorted(folder.glob("wandb/offline-run-*/run-*.wandb"))]
    assert [p["id"] for p in parts] == [config.run_id] * 2
    assert [p["exit_code"] for p in parts] == [1, 0]
    assert all(p["project"] == "vitcl-test" for p in parts)
    assert parts[1]["config"]["strategy"] == "finetune"
    assert parts[1]["config"]["run_id"] == config.run_id
    task_rows = [h for p in parts for h in p["history"] if "task" in h]
    assert [h["task"] for h in task_rows] == list(range(T))
    assert [[h[f"eval/accuracy/task_{j}"] for j in range(h["task"] + 1)]
            for h in task_rows] == rows
    assert task_rows[-1]["storage/total_mib"] == record["storage"]["total_mib"]
    assert task_rows[-1]["timing/wall_s"] == record["timing"]["wall_s"]
    assert any("train/loss/task_0" in h for h in parts[0]["history"])
    summary = parts[1]["summary"]
    for name, value in record["metrics"].items():
        if isinstance(value, float):
            assert summary[f"final/{name}"] == value


# --- options: from the CLI to the runs ------------------------------------------------------

def test_tracker_options_travel_to_the_runs_outside_the_run_id(monkeypatch, tmp_path):
    import benchmarks.executors

    seen = []

    def run_all(configs, *args, **kwargs):  # stop the sweep as the runs would start
        seen.append(([c.run_id for c in configs], kwargs["trackers"]))
        raise KeyboardInterrupt

    monkeypatch.setattr(benchmarks.executors, "run_all", run_all)
    common = ["--suite", "smoke", "--strategies", "classifier", "--out", str(tmp_path / "out"),
              "--cache", str(tmp_path / "cache")]
    assert run_main(*common).returncode == 130
    assert run_main(*common, "--tensorboard", "--wandb", "proj").returncode == 130
    (plain_ids, plain), (tracked_ids, tracked) = seen
    assert plain == Trackers() and tracked == Trackers(tensorboard=True, wandb_project="proj")
    assert plain_ids == tracked_ids
    assert pickle.loads(pickle.dumps(tracked)) == tracked  # Ray and Slurm pickle it


def test_wandb_without_the_package_is_refused_before_any_work(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    r = run_main("--suite", "smoke", "--wandb", "proj", "--out", str(tmp_path / "out"))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "pip install -e '.[wandb]'" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()
    with pytest.raises(ExecutorError, match=r"pip install -e '\.\[wandb\]'"):
        run_all([], tmp_path, tmp_path, ExecutorOptions(), trackers=Trackers(wandb_project="p"))
