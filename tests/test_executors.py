"""Executors: the worker pool, Ray and Slurm (submitit's local cluster) run the same runs; two
sweeps into one folder share it through the run-folder locks; missing extras and unusable flags
are named."""

import subprocess
import sys

import pytest
from test_sweeps import CLI, cli

from benchmarks.executors import ExecutorError, ExecutorOptions, check_available
from results.records import load_record


@pytest.mark.slow
def test_two_sweeps_into_one_folder_do_not_corrupt_it(tmp_path, cache_dir):
    args = cli("--suite", "smoke", "--strategies", "classifier", "--seeds", "0,1",
               cache=cache_dir, out=tmp_path)
    procs = [subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    errs = [p.communicate(timeout=900)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    folders = [p.parent for p in tmp_path.glob("*/record.json")]
    assert len(folders) == 2
    assert all(load_record(f)["status"] == "finished" for f in folders)
    assert not list(tmp_path.rglob("*.tmp"))


def test_missing_extras_name_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ExecutorError, match=r"pip install -e '\.\[ray\]'"):
        check_available(ExecutorOptions(executor="ray"))
    with pytest.raises(ExecutorError, match="--workers"):
        check_available(ExecutorOptions(executor="slurm", workers=2))


def test_cli_rejects_an_executor_it_cannot_use():
    r = subprocess.run([*CLI, "--suite", "smoke", "--executor", "ray", "--workers", "2"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--workers is for --executor local" in r.stderr


@pytest.mark.parametrize("executor", [
    ["--executor", "local", "--workers", "2"],
    ["--executor", "ray"],
    ["--executor", "slurm", "--slurm-cluster", "local", "--slurm-array"],
], ids=["workers", "ray", "slurm"])
@pytest.mark.slow
def test_executors_run_the_same_runs(executor, tmp_path, cache_dir):
    r = subprocess.run(cli("--suite", "smoke", "--strategies", "classifier", "--seeds", "0,1",
                           *executor, cache=cache_dir, out=tmp_path),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    records = [load_record(p.parent) for p in tmp_path.glob("*/record.json")]
    assert sorted(rec["config"]["seed"] for rec in records) == [0, 1]
    assert all(rec["status"] == "finished" for rec in records)
    assert "2 of 2 runs finished" in r.stdout
