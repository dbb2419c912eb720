"""The committed reference results (``results/data``, written by ``make results``) are what the
committed code makes of the committed records, and those records are the runs of the committed
``standard`` suite."""

from pathlib import Path

from benchmarks.suites import expand, load_suite
from results.records import find_records, run_id
from results.report import write_tables

DATA = Path(__file__).resolve().parent.parent / "results" / "data"


def test_committed_records_are_the_standard_suite():
    records = find_records([DATA / "runs"])  # schema and checksum checked on load
    assert sorted(r["run_id"] for r in records) == sorted(
        run_id(c) for c in expand(load_suite("standard")))
    assert all(r["run_id"] == run_id(r["config"]) for r in records)


def test_committed_tables_regenerate_from_committed_records(tmp_path):
    written = write_tables(find_records([DATA / "runs"]), tmp_path)
    committed = DATA / "report"
    rebuilt = {p.relative_to(tmp_path) for p in written}
    on_disk = {p.relative_to(committed) for p in committed.rglob("*")
               if p.is_file() and p.suffix in (".md", ".tex", ".csv")}
    assert rebuilt == on_disk
    for rel in sorted(rebuilt):
        assert (tmp_path / rel).read_text() == (committed / rel).read_text(), rel
