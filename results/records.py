"""Run folders: ``config.yaml``, ``record.json`` and ``rows.csv``, written atomically.

A run's folder is ``<out>/<run_id>/``, run_id = :func:`run_id` of the resolved config (a short
hash). ``config.yaml`` is that config. ``record.json`` holds at least the keys of
:data:`REQUIRED` — ``config``, ``status`` (one of :data:`STATUSES`), ``tasks`` (one entry per task:
name, classes, split sizes), ``acc_matrix`` (``R[i][j]``: accuracy on task j after training task
i, null where not evaluated; see :mod:`results.metrics`), ``metrics``, ``storage``, ``timing`` and
``error`` (null or the traceback) — plus the runner's per-task references (probe accuracies,
training accuracy and steps, mask movement, ...). ``rows.csv`` has the raw evaluation counts in
long format, one row per (train_task, eval_task) with the columns of :data:`ROW_FIELDS`. Every
write goes to a uniquely named temporary file in the same folder and is renamed over the target
(:mod:`atomicio`), so a reader never sees half a file.

Integrity: ``record.json`` carries ``checksum`` = sha256 of its own canonical JSON (sorted keys,
without the checksum) and ``rows_sha256`` = sha256 of ``rows.csv``. :func:`load_record` checks
both and the schema (status, an acc_matrix of T rows of T entries in [0, 1] or null, one task
entry per row), so a truncated, hand-edited or half-copied record is refused, never read as
results.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import yaml

from atomicio import atomic_write_text

ROW_FIELDS = ("seed", "strategy", "backbone", "stream", "train_task", "eval_task", "n", "correct",
              "loss")
STATUSES = ("running", "finished", "failed")
UNFINISHED = {  # why a report leaves a run out, and how to finish it
    "running": "status running (interrupted mid-way, or still running); the same command "
               "resumes it",
    "failed": "status failed (the traceback is its record's error); the same command retries "
              "it"}


# Config keys added after runs were recorded, with the value that reproduces those runs: at that
# value a key is left out of the run id, so existing run folders keep their ids (sweeps resume,
# committed results stay valid) across upgrades of the suite.
# (The preprocess value is benchmarks.data.inputs' ``none`` preset, spelled out: results/ reads
# records only; tests/test_inputs.py checks that the two agree.)
NONE_PREPROCESS = {"name": "none", "resize": "squash", "crop_pct": 1.0, "interpolation": "bilinear",
                   "train_crop": "none", "scale": [0.08, 1.0], "ratio": [0.75, 4 / 3],
                   "hflip": 0.0, "mean": None, "std": None}
ID_NEUTRAL = {"preprocess": NONE_PREPROCESS, "precision": "fp32", "tf32": True,
              "steps_per_task": None}


TOKEN_MASKS = "token_masks.json"


def run_id(config: dict) -> str:
    """Short stable hash of a resolved config (key order does not matter; :data:`ID_NEUTRAL`
    keys at their neutral value are left out)."""
    config = {k: v for k, v in config.items() if k not in ID_NEUTRAL or v != ID_NEUTRAL[k]}
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def write_run(folder: Path, record: dict, rows: list[dict]) -> None:
    """Write config.yaml, rows.csv and record.json (last, so a record implies its rows)."""
    folder = Path(folder)
    atomic_write_text(folder / "config.yaml", yaml.safe_dump(record["config"], sort_keys=True))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=ROW_FIELDS)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(folder / "rows.csv", buf.getvalue())
    stamped = {k: v for k, v in record.items() if k not in ("checksum", "_folder")}
    stamped["rows_sha256"] = sha256(buf.getvalue().encode())
    stamped["checksum"] = record_checksum(stamped)
    atomic_write_text(folder / "record.json", json.dumps(stamped, indent=1, allow_nan=False))


def write_token_masks(folder: Path, masks: list[dict[str, list[bool]]]) -> None:
    """``token_masks.json``, the token-mask figure's data: per finished task, {attention block
    path ("blocks.0"): its keep mask over the key tokens, a string of 0 (dropped) and 1 (kept)}.
    Runs with token masks (MEAT) write it after every task; others never do."""
    text = json.dumps([{layer: "".join("1" if k else "0" for k in keep)
                        for layer, keep in task.items()} for task in masks], indent=1)
    atomic_write_text(Path(folder) / TOKEN_MASKS, text)


def read_token_masks(folder: Path) -> list[dict[str, list[bool]]]:
    """What :func:`write_token_masks` wrote ([] for a run without token masks)."""
    path = Path(folder) / TOKEN_MASKS
    if not path.exists():
        return []
    return [{layer: [c == "1" for c in keep] for layer, keep in task.items()}
            for task in json.loads(path.read_text())]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record_checksum(record: dict) -> str:
    """sha256 of the record's canonical JSON, without its ``checksum`` and ``_folder``."""
    body = {k: v for k, v in record.items() if k not in ("checksum", "_folder")}
    return sha256(json.dumps(body, sort_keys=True, allow_nan=False).encode())


class RecordError(ValueError):
    """A record file is missing, unreadable or does not follow the schema."""


REQUIRED = ("config", "status", "tasks", "acc_matrix", "metrics", "storage", "timing", "error")


def load_record(folder: Path) -> dict:
    """The record of a run folder, after the schema and checksum checks (RecordError)."""
    path = Path(folder) / "record.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RecordError(f"cannot read {path}: {e}") from e
    if not isinstance(record, dict):
        raise RecordError(f"{path} is not a run record")
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise RecordError(f"{path} is not a run record (missing {missing})")
    problem = schema_problem(record)
    if problem:
        raise RecordError(f"{path} does not follow the record schema: {problem}")
    if record.get("checksum") != record_checksum(record):
        raise RecordError(f"{path} is corrupted: its checksum does not match its content")
    rows = Path(folder) / "rows.csv"
    if not rows.is_file() or sha256(rows.read_bytes()) != record.get("rows_sha256"):
        raise RecordError(f"{rows} is missing or does not match its record's rows_sha256")
    return record


def schema_problem(record: dict) -> str | None:
    """What is wrong with a record's structure, or None."""
    if record["status"] not in STATUSES:
        return f"status {record['status']!r} is not one of {STATUSES}"
    tasks = record["tasks"]
    if not isinstance(tasks, list):
        return "tasks must be a list"
    finished = record["status"] == "finished"
    for name in ("acc_matrix", *TASK_AGNOSTIC_MATRICES):
        if name in record or name == "acc_matrix":
            problem = matrix_problem(name, record[name], len(tasks), finished)
            if problem:
                return problem
    if finished and (not isinstance(record["metrics"], dict)
                     or "final_avg_acc" not in record["metrics"]):
        return "a finished record needs its metrics"
    return None


# matrices of a run evaluated task-agnostically (``task_agnostic``), beside ``acc_matrix``
TASK_AGNOSTIC_MATRICES = ("cil_acc_matrix", "task_inference_matrix")


def matrix_problem(name: str, R, n_tasks: int, finished: bool) -> str | None:
    """What is wrong with an accuracy matrix of a record (T rows of T entries in [0, 1] or
    null; every entry on and below the diagonal in a finished record), or None."""
    if not isinstance(R, list):
        return f"{name} must be a list"
    if R and len(R) != n_tasks:
        return f"{name} has {len(R)} rows for {n_tasks} tasks"
    for row in R:
        if not isinstance(row, list) or len(row) != n_tasks:
            return f"every {name} row needs one entry per task"
        if any(v is not None and not (isinstance(v, (int, float)) and 0 <= v <= 1)
               for v in row):
            return f"{name} entries must be accuracies in [0, 1] or null"
    if finished and (not R or any(R[i][j] is None for i in range(len(R)) for j in range(i + 1))):
        return f"a finished record needs every task evaluated after every training task ({name})"
    return None


def find_records(paths, strict: bool = True, warn=None) -> list[dict]:
    """Finished records under the given run folders or folders of run folders, each run once.

    A run is identified by its ``run_id``: copies of one run in several folders (a backup beside
    the original, the same folder given twice) are counted once, the first found, and ``warn``
    names the copies. A run that is not finished (interrupted mid-way or still ``running``, or
    ``failed``) is left out with a ``warn`` line naming it and its status. A record that fails
    :func:`load_record` is skipped with a ``warn`` line naming it and how to redo it if not
    ``strict``; with ``strict`` (the default for code; the ``report`` command skips) it raises
    :class:`RecordError`. ``warn`` takes one line (default: ignore)."""
    warn = warn or (lambda line: None)
    out, seen = [], {}
    for p in map(Path, paths):
        folders = [p] if (p / "record.json").exists() else sorted(p.glob("*/record.json"))
        for f in folders:
            folder = f if f.is_dir() else f.parent
            try:
                rec = load_record(folder)
            except RecordError as e:
                if strict:
                    raise
                warn(f"skipped {folder}: {e}. To redo it, run its suite again into the same "
                     "folder (the runner redoes a run whose record is unreadable)")
                continue
            if rec["status"] != "finished":
                cfg = rec["config"]
                warn(f"left out {folder} ({cfg.get('strategy')}, seed {cfg.get('seed')}): "
                     f"{UNFINISHED[rec['status']]}")
                continue
            rid = rec.get("run_id") or folder.name
            if rid in seen:
                if seen[rid].resolve() != folder.resolve():
                    warn(f"run {rid} is in {seen[rid]} and in {folder}: counted once (the "
                         f"first)")
                continue
            seen[rid] = folder
            rec["_folder"] = str(folder)
            out.append(rec)
    return out
