"""``run_benchmark.py report``: tables and figures from finished run folders, or one paired
comparison (``--compare A,B``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.commands.parsing import Parser, UsageError, check_report_folder, csv_list, warn


def report_parser() -> Parser:
    p = Parser(prog="run_benchmark.py report",
               description="Tables (Markdown, LaTeX, CSV) and figures (PNG, PDF) from finished "
                           "run folders.")
    p.add_argument("run_dirs", nargs="+", help="run folders or folders of run folders")
    p.add_argument("--out", help="output folder (default: <first RUN_DIR>/report)")
    p.add_argument("--compare", type=strategy_pair, metavar="A,B",
                   help="print only the paired difference of strategies A and B (final average "
                        "accuracy, same seeds, 95%% interval) per stream and backbone; B may be "
                        "simplecil or joint, the class-incremental references of runs "
                        "evaluated with --task-agnostic")
    p.add_argument("--strict", action="store_true",
                   help="refuse (exit 2) if a record is unreadable or corrupted, instead of "
                        "skipping it with a warning")
    return p


def strategy_pair(value: str) -> tuple[str, str]:
    names = csv_list(value)
    if len(names) != 2 or names[0] == names[1]:
        raise argparse.ArgumentTypeError(f"give two different strategies as A,B, got {value!r}")
    return names[0], names[1]


def cmd_report(argv: list[str]) -> int:
    args = report_parser().parse_args(argv)
    from results.records import RecordError, find_records

    missing = [d for d in args.run_dirs if not Path(d).is_dir()]
    if missing:
        raise UsageError(f"run folder not found: {missing[0]}")
    try:
        records = find_records(args.run_dirs, strict=args.strict, warn=warn)
    except RecordError as e:
        raise UsageError(f"{e} (without --strict it is skipped)") from e
    if not records:
        raise UsageError(f"no finished run records under {', '.join(args.run_dirs)}")
    if args.compare:
        return print_comparison(records, *args.compare)
    out = Path(args.out) if args.out else Path(args.run_dirs[0]) / "report"
    check_report_folder(out)
    print_report(records, out)
    return 0


def print_report(records: list[dict], out: Path) -> None:
    """Summary table, then the paper-style table (final accuracy per task) for every (stream,
    backbone); writes every table and figure into ``out`` and lists the files."""
    from results.arms import group_records
    from results.formats import as_text
    from results.per_task import per_task_table
    from results.report import ReportError, run_order, write_report
    from results.summary import budget_note, format_summary, summary
    from results.task_agnostic import task_agnostic_table

    records = run_order(records)
    try:
        paths = write_report(records, out)
    except ReportError as e:
        raise UsageError(str(e)) from e
    note = budget_note(records)
    if note:
        print(note)
    print(format_summary(summary(records)))
    for (stream, backbone), recs in group_records(records).items():
        print(f"\n{stream} / {backbone}: final accuracy per task (%); probe_acc = the converged "
              "linear\nprobe on the task's starting features")
        print(as_text(per_task_table(recs).round(1)))
    agnostic = task_agnostic_table(records)
    groups = [] if agnostic.empty else agnostic.groupby(["stream", "backbone"], sort=False)
    for (stream, backbone), rows in groups:
        print(f"\n{stream} / {backbone}: without task ids (class-incremental: a class is a "
              "(task, label)\npair, right when both are; the task is inferred by the rule)")
        print(as_text(rows.drop(columns=["stream", "backbone"]).set_index("strategy")))
    figures = sorted(str(p) for p in paths if p.suffix == ".png")
    print(f"\nTables (md, tex, csv) and figures (png, pdf) in {out}:")
    print("\n".join(f"  {p}" for p in figures))


def print_comparison(records: list[dict], a: str, b: str) -> int:
    from results.arms import by_arm
    from results.comparisons import compare
    from results.formats import as_text

    table = compare(records, a, b)
    if table.empty:
        found = sorted(set(by_arm(records)))
        raise UsageError(f"--compare {a},{b}: no stream and backbone with finished runs of both "
                         f"on common seeds; strategies found: {', '.join(found)} (and, for runs "
                         "evaluated with --task-agnostic, the references simplecil and joint)")
    print(as_text(table, index=False))
    return 0
