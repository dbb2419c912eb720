"""Reports that never mislead: every run counted once, unreadable records skipped with a line
(or refused with --strict), the report folder replaced whole, a note on plumbing-check budgets."""

import json
import shutil
from pathlib import Path

import pytest
from test_cli import run_main

from results.records import RecordError, find_records
from results.report import write_tables
from results.summary import COMPARISON_STEPS, budget_note

RUNS = Path(__file__).resolve().parent.parent / "results" / "data" / "runs"


@pytest.fixture
def two_runs(tmp_path):
    """Two committed runs copied into a sweep folder (records, rows, configs)."""
    ids = sorted(p.name for p in RUNS.iterdir())[:2]
    for rid in ids:
        shutil.copytree(RUNS / rid, tmp_path / "sweep" / rid)
    return tmp_path / "sweep", ids


def test_a_run_found_in_two_folders_is_counted_once_and_named(two_runs, tmp_path):
    sweep, ids = two_runs
    shutil.copytree(sweep, tmp_path / "backup")
    lines = []
    records = find_records([sweep, tmp_path / "backup", sweep], warn=lines.append)
    assert sorted(r["run_id"] for r in records) == ids
    assert len(lines) == 2  # one per copied run; the folder given twice is no copy
    assert all(str(tmp_path / "backup") in line and "counted once" in line for line in lines)


def test_a_corrupt_record_is_skipped_with_a_line_or_refused_with_strict(two_runs):
    sweep, ids = two_runs
    path = sweep / ids[0] / "record.json"
    rec = json.loads(path.read_text())
    rec["acc_matrix"][-1][0] = 1.0  # valid JSON, wrong content
    path.write_text(json.dumps(rec))
    lines = []
    assert [r["run_id"] for r in find_records([sweep], strict=False, warn=lines.append)] == ids[1:]
    assert len(lines) == 1 and str(sweep / ids[0]) in lines[0] and "redo" in lines[0]
    with pytest.raises(RecordError, match="checksum"):
        find_records([sweep])

    strict = run_main("report", str(sweep), "--strict")
    assert strict.returncode == 2 and "corrupted" in strict.stderr
    assert not (sweep / "report").exists()
    r = run_main("report", str(sweep))
    assert r.returncode == 0, r.stderr
    assert f"warning: skipped {sweep / ids[0]}" in r.stderr
    assert (sweep / "report" / "summary.md").read_text().count(" | ") > 0


def test_the_report_folder_is_replaced_whole_and_kept_on_interrupt(two_runs, monkeypatch):
    sweep, _ = two_runs
    report = sweep / "report"
    report.mkdir()
    (report / "tradeoff_an_old_stream.png").write_bytes(b"stale")
    assert run_main("report", str(sweep)).returncode == 0
    assert not (report / "tradeoff_an_old_stream.png").exists()
    before = {p.name: p.read_bytes() for p in report.glob("*.md")}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("results.figures.all_figures", interrupted)
    r = run_main("report", str(sweep))
    assert r.returncode == 130 and "Traceback" not in r.stderr
    assert {p.name: p.read_bytes() for p in report.glob("*.md")} == before
    assert sorted(p.name for p in sweep.iterdir() if p.name.startswith(".")) == []

    (report / "my_notes.txt").write_text("mine")
    r = run_main("report", str(sweep))
    assert r.returncode == 2 and "not a report" in r.stderr
    assert (report / "my_notes.txt").read_text() == "mine"


def test_budget_note_marks_plumbing_runs_only(two_runs, tmp_path):
    sweep, _ = two_runs
    records = find_records([sweep])
    assert budget_note(records) is None  # the standard suite's 150 steps
    for r in records:
        r["train_steps"] = [COMPARISON_STEPS - 1] * len(r["tasks"])
    note = budget_note(records)
    assert note and "plumbing check" in note
    write_tables(records, tmp_path / "t")
    assert (tmp_path / "t" / "summary.md").read_text().startswith(note)
    assert (tmp_path / "t" / "summary.tex").read_text().startswith(f"% {note}")
