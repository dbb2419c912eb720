"""SIGKILL and resume (:func:`kill_and_resume`): the paper-mini pipeline (generated data) for
MEAT, killed after its second task and run again; the resumed run must say where it resumed (the
runner's line, :func:`resumed_at`) and finish with the first tasks' rows as they were; both runs
use ``--deterministic``, so its accuracy matrix must equal an uninterrupted run's bit for bit.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

from benchmarks.config import ROOT

# the runner's progress lines (benchmarks.runner.Run.resume and Run.save)
RESUME_LINE = re.compile(r"resuming at task (\d+)/(\d+)")
DONE_LINE = re.compile(r"task (\d+)/(\d+) done")


def resumed_at(text: str) -> tuple[int, int] | None:
    """(N, T) of the runner's ``resuming at task N/T`` line in ``text`` (N: the first task it
    trains again, 1-based), or None when the run did not resume."""
    m = RESUME_LINE.search(text)
    return (int(m[1]), int(m[2])) if m else None


def kill_and_resume(device: str, work: Path) -> dict:
    """MEAT on the paper-mini pipeline: killed after task 2, resumed; vs uninterrupted."""
    from benchmarks.data.synthetic import write_paper_layouts, write_random_checkpoint
    from results.records import find_records

    data = write_paper_layouts(work / "data", classes=2, train=4, test=2)
    ckpt = write_random_checkpoint(work / "deit_tiny.pth")
    base = [sys.executable, str(ROOT / "run_benchmark.py"), "--suite", "paper-mini",
            "--strategies", "meat", "--data-root", str(data), "--pretrained", str(ckpt),
            "--device", device, "--cache", str(work / "cache"), "--quiet", "--deterministic"]
    killed = work / "killed"
    proc = subprocess.Popen([*base, "--out", str(killed)], stderr=subprocess.PIPE, text=True)
    rows_before, tasks = None, None
    for line in proc.stderr:
        done = DONE_LINE.search(line)
        if done and int(done[1]) == 2:
            proc.send_signal(signal.SIGKILL)
            tasks = int(done[2])
            break
    proc.wait()
    record = next(killed.glob("*/record.json"), None)
    if record is not None:
        rows_before = json.loads(record.read_text())["acc_matrix"][:2]
    resumed = subprocess.run([*base, "--out", str(killed)], capture_output=True, text=True)
    straight = subprocess.run([*base, "--out", str(work / "straight")], capture_output=True,
                              text=True)
    at = resumed_at(resumed.stderr)
    out = {"killed_after_task": 2, "resumed_exit": resumed.returncode,
           "resumed_at": None if at is None else f"{at[0]}/{at[1]}",
           "resumed_at_task_3": at == (3, tasks),
           "uninterrupted_exit": straight.returncode}
    if resumed.returncode == 0 and straight.returncode == 0:
        a = find_records([killed])[0]["acc_matrix"]
        b = find_records([work / "straight"])[0]["acc_matrix"]
        out.update(first_rows_kept=a[:2] == rows_before, same_matrix=a == b,
                   max_matrix_diff=max(abs(x - y) for ra, rb in zip(a, b, strict=True)
                                       for x, y in zip(ra, rb, strict=True)
                                       if x is not None and y is not None))
    return out
