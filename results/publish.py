"""The committed reference results: finished run folders -> ``results/data``.

    python -m results.publish runs/standard [--dest results/data]     (what `make results` runs)

Copies the light files of every finished run into ``<dest>/runs/<run_id>/`` (config.yaml,
record.json, rows.csv, train_log.csv; for runs with token masks also ``token_masks.json`` and
the example images, which the token-mask figure reads, and the per-task files, which
``tests/test_committed_results.py`` loads into today's models; other per-task files are left
out: an Individual run keeps a whole backbone per task) and writes the report of exactly those
records into ``<dest>/report/``. ``tests/test_committed_results.py`` rebuilds the tables from
the committed records and compares them with the committed tables, so committed numbers come
from committed code.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from results.records import TOKEN_MASKS, find_records, read_token_masks
from results.report import write_report

RUN_FILES = ("config.yaml", "record.json", "rows.csv", "train_log.csv")


def publish(run_dirs: list[Path], dest: Path) -> list[Path]:
    """Copy the finished runs under ``run_dirs`` into ``dest/runs`` (replacing it) and write
    their report into ``dest/report``; returns the report's files."""
    records = find_records(run_dirs)
    if not records:
        raise ValueError(f"no finished run records under {', '.join(map(str, run_dirs))}")
    runs, report = Path(dest) / "runs", Path(dest) / "report"
    for folder in (runs, report):
        shutil.rmtree(folder, ignore_errors=True)
    for rec in records:
        src, dst = Path(rec["_folder"]), runs / rec["run_id"]
        dst.mkdir(parents=True)
        for name in RUN_FILES:
            if (src / name).exists():
                shutil.copy2(src / name, dst / name)
        if any(read_token_masks(src)) and (src / "examples.pt").exists():
            shutil.copy2(src / TOKEN_MASKS, dst / TOKEN_MASKS)
            shutil.copytree(src / "tasks", dst / "tasks")
            images = torch.load(src / "examples.pt", map_location="cpu",
                                weights_only=True)["images"]
            torch.save({"images": [x.clone() for x in images]}, dst / "examples.pt")
    return write_report(find_records([runs]), report)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dirs", nargs="+", type=Path)
    p.add_argument("--dest", type=Path, default=Path(__file__).resolve().parent / "data")
    args = p.parse_args()
    paths = publish(args.run_dirs, args.dest)
    print(f"{len(paths)} report files in {args.dest / 'report'}")


if __name__ == "__main__":
    main()
