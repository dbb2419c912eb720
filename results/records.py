"""Run folders: ``config.yaml``, ``record.json`` and ``rows.csv``, written atomically.

The contract (../shared/design.md): ``<out>/<run_id>/`` with run_id a short hash of the resolved
config. ``record.json`` holds the config, status, task list, accuracy matrix, metrics, storage,
timing and error; ``rows.csv`` the raw counts in long format. Every write goes to a temporary
file in the same folder and is renamed over the target, so a reader never sees half a file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import yaml

ROW_FIELDS = ("seed", "strategy", "backbone", "stream", "train_task", "eval_task", "n", "correct",
              "loss")
STATUSES = ("running", "finished", "failed")


def run_id(config: dict) -> str:
    """Short stable hash of a resolved config (key order does not matter)."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_run(folder: Path, record: dict, rows: list[dict]) -> None:
    """Write config.yaml, rows.csv and record.json (last, so a record implies its rows)."""
    folder = Path(folder)
    atomic_write_text(folder / "config.yaml", yaml.safe_dump(record["config"], sort_keys=True))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=ROW_FIELDS)
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(folder / "rows.csv", buf.getvalue())
    atomic_write_text(folder / "record.json", json.dumps(record, indent=1, allow_nan=False))


class RecordError(ValueError):
    """A record file is missing, unreadable or does not follow the schema."""


REQUIRED = ("config", "status", "tasks", "acc_matrix", "metrics", "storage", "timing", "error")


def load_record(folder: Path) -> dict:
    path = Path(folder) / "record.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RecordError(f"cannot read {path}: {e}") from e
    missing = [k for k in REQUIRED if k not in record]
    if missing or record["status"] not in STATUSES:
        raise RecordError(f"{path} is not a run record (missing {missing})")
    return record


def find_records(paths) -> list[dict]:
    """Finished records under the given run folders or folders of run folders."""
    out = []
    for p in map(Path, paths):
        folders = [p] if (p / "record.json").exists() else sorted(p.glob("*/record.json"))
        for f in folders:
            folder = f if f.is_dir() else f.parent
            rec = load_record(folder)
            if rec["status"] == "finished":
                rec["_folder"] = str(folder)
                out.append(rec)
    return out
