import csv
import json
from pathlib import Path

import pytest

from results.records import RecordError, find_records, load_record, run_id, write_run


def _record(status="finished"):
    return {"config": {"strategy": "classifier", "seed": 0}, "status": status,
            "tasks": [{"name": "a", "classes": ["0", "1"], "n_train": 4, "n_test": 2}],
            "acc_matrix": [[0.5]], "metrics": {"final_avg_acc": 0.5}, "storage": {},
            "timing": {"train_s": 1.0}, "error": None}


def test_write_and_reload(tmp_path):
    rows = [{"seed": 0, "strategy": "classifier", "backbone": "b", "stream": "s",
             "train_task": 0, "eval_task": 0, "n": 2, "correct": 1, "loss": 0.3}]
    write_run(tmp_path / "r", _record(), rows)
    assert load_record(tmp_path / "r")["acc_matrix"] == [[0.5]]
    with open(tmp_path / "r" / "rows.csv") as f:
        assert list(csv.DictReader(f))[0]["correct"] == "1"
    assert (tmp_path / "r" / "config.yaml").read_text().startswith("seed: 0")
    assert not list((tmp_path / "r").glob("*.tmp"))


def test_run_id_is_stable_and_order_free():
    assert run_id({"a": 1, "b": [1, 2]}) == run_id({"b": [1, 2], "a": 1})
    assert run_id({"a": 1}) != run_id({"a": 2})


def test_truncated_record_is_detected(tmp_path):
    write_run(tmp_path / "r", _record(), [])
    p = tmp_path / "r" / "record.json"
    p.write_text(p.read_text()[:40])
    with pytest.raises(RecordError):
        load_record(tmp_path / "r")


def test_record_without_schema_keys_is_rejected(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "record.json").write_text(json.dumps({"status": "finished"}))
    with pytest.raises(RecordError, match="missing"):
        load_record(tmp_path / "r")


def test_find_records_leaves_out_unfinished_runs_each_named_in_one_line(tmp_path):
    write_run(tmp_path / "a", _record(), [])
    write_run(tmp_path / "b", _record("running"), [])
    write_run(tmp_path / "c", {**_record("failed"), "error": "Traceback ..."}, [])
    lines = []
    found = find_records([tmp_path], warn=lines.append)
    assert [r["_folder"] for r in found] == [str(tmp_path / "a")]
    assert lines == [
        f"left out {tmp_path / 'b'} (classifier, seed 0): status running (interrupted mid-way, "
        "or still running); the same command resumes it",
        f"left out {tmp_path / 'c'} (classifier, seed 0): status failed (the traceback is its "
        "record's error); the same command retries it"]


def test_nan_is_not_written_silently(tmp_path):
    rec = _record()
    rec["acc_matrix"] = [[float("nan")]]
    with pytest.raises(ValueError):
        write_run(tmp_path / "r", rec, [])


def test_typed_run_config_keeps_every_committed_runs_id():
    """RunConfig.run_id is the hash the run folders were named with before configs were typed."""
    from benchmarks.config import RunConfig
    from results.records import find_records

    records = find_records([Path(__file__).resolve().parent.parent / "results" / "data" / "runs"])
    assert records
    for rec in records:
        config = RunConfig.from_dict(rec["config"])
        assert config.run_id == rec["run_id"] and config.to_dict() == rec["config"]
    with pytest.raises(ValueError, match="unknown run config keys"):
        RunConfig.from_dict({**records[0]["config"], "colour": "blue"})
