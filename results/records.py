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
import dataclasses
import hashlib
import io
import json
import os
from dataclasses import dataclass, field
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


TOKEN_MASKS = "token_masks.json"


def run_id(config: dict) -> str:
    """Short stable hash of a config dict (key order does not matter); a run's id is that of
    its config without the settings at their neutral value (``benchmarks.config``)."""
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


@dataclass
class Timing:
    """Seconds of one run: training and evaluation phases, base pre-training, inside training
    and evaluation iterations (``StepTimer``), probe fitting, the passes outside training
    (probe and reference features, the end-of-task pass, task statistics; with the images they
    read), wall time; peak memory; and the
    conditions they were measured under: torch's threads, the machine's CPUs and its 1-minute
    load average at the run's start and end (a resumed run keeps the highest of its parts), so
    a report can tell runs timed under other load (:func:`results.timing.timing_conditions`)."""

    train_s: float = 0.0
    eval_s: float = 0.0
    pretrain_s: float = 0.0
    train_step_s: float = 0.0
    eval_step_s: float = 0.0
    probe_s: float = 0.0
    fixed_images: int = 0  # images read outside training (strategies.features.PassMeter)
    fixed_s: float = 0.0  # their passes' seconds
    wall_s: float = 0.0
    peak_rss_mib: float | None = None  # set once a task is done
    threads: int | None = None
    cpus: int | None = None
    load_start: float | None = None
    load_end: float | None = None  # set once a task is done

    def started(self, threads: int) -> None:
        """Note the conditions at the start of (a part of) the run (``threads``: torch's)."""
        self.threads, self.cpus = threads, os.cpu_count()
        self.load_start = max(self.load_start or 0.0, os.getloadavg()[0])

    def ended(self) -> None:
        self.load_end = max(self.load_end or 0.0, os.getloadavg()[0])


CLASS_INCREMENTAL_FIELDS = ("task_inference", "cil_acc_matrix", "task_inference_matrix",
                            "task_inference_rules", "simplecil_acc_matrix", "joint_acc_matrix")


@dataclass
class RunRecord:
    """``record.json`` (``results.records`` documents the schema): per task i, the accuracy
    matrix row, the probe references, the trained model's training accuracy, its steps and how
    far its masks moved; storage, timing, metrics when finished."""

    config: dict
    run_id: str
    forgets: bool
    status: str = "running"
    tasks: list = field(default_factory=list)
    acc_matrix: list = field(default_factory=list)
    probe_acc: list = field(default_factory=list)
    probe_train_acc: list = field(default_factory=list)
    random_probe_acc: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    train_steps: list = field(default_factory=list)
    mask_movement: list = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    storage: dict = field(default_factory=dict)
    timing: Timing = field(default_factory=Timing)
    base: dict | None = None
    error: str | None = None
    # a run evaluated without task ids too (config task_agnostic): its task-inference rule and
    # R[i][j] in the class-incremental setting, and the share of task j's samples whose task
    # was inferred right after training task i
    # (the rule chosen on validation data, strategies.class_incremental); every rule's matrices
    # and validation accuracy; and the references on the frozen starting backbone
    task_inference: str | None = None
    cil_acc_matrix: list | None = None
    task_inference_matrix: list | None = None
    task_inference_rules: dict | None = None
    simplecil_acc_matrix: list | None = None
    joint_acc_matrix: list | None = None

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        if out["timing"]["peak_rss_mib"] is None:
            del out["timing"]["peak_rss_mib"]
        for key in CLASS_INCREMENTAL_FIELDS:
            if out[key] is None:  # a task-incremental run's record keeps its form
                del out[key]
        return out

    @classmethod
    def from_dict(cls, record: dict) -> RunRecord:
        return cls(**{**record, "timing": Timing(**record["timing"])})
