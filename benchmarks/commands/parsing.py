"""The command line's parsing: one-line errors (:class:`UsageError`, exit code 2), typed
values, the run settings' flags generated from their declarations (``benchmarks.config``), and
the checks of output folders before any work."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.config import integer, number


class UsageError(Exception):
    """Bad command-line input (exit code 2)."""


class Parser(argparse.ArgumentParser):
    """argparse that reports errors as one line naming the valid choices, exit code 2, and
    takes flags only as spelled (no abbreviations)."""

    def __init__(self, **kwargs):
        super().__init__(allow_abbrev=False, **kwargs)

    def error(self, message: str):
        if "unrecognized arguments" in message:
            flags = sorted(s for s in self._option_string_actions if s.startswith("--"))
            message += f" (valid flags: {', '.join(flags)})"
        raise UsageError(message)


def csv_list(value: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def seed_list(value: str) -> list[int]:
    try:
        seeds = [int(v) for v in csv_list(value)]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"seeds must be integers like 0,1,2, got {value!r}") from e
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:  # a seed given twice would be one run counted as two
        raise argparse.ArgumentTypeError(f"seed {twice[0]} is given twice in {value!r}")
    return seeds


def warn(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr, flush=True)








def add_setting_flags(p: argparse.ArgumentParser, config_class=None) -> None:
    """A flag ``--<name-with-dashes>`` per run setting (``benchmarks.config``), typed, checked
    and documented by its declaration; not given, it leaves the suite's value (None)."""
    from benchmarks.config import RunConfig, settings

    groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for name, s in settings(config_class or RunConfig).items():
        if s.exclusive is not None and s.exclusive not in groups:
            groups[s.exclusive] = p.add_mutually_exclusive_group()
        where = p if s.exclusive is None else groups[s.exclusive]
        how = {"action": argparse.BooleanOptionalAction} if s.check.parse is None else {
            "type": checked(s.check.parse, s.check.wanted), "choices": s.check.choices}
        where.add_argument("--" + name.replace("_", "-"), default=s.flag_default, help=s.help,
                           **how)


def checked(parse, wanted: str):
    """An argparse ``type`` that says what a value must be."""
    def convert(text: str):
        try:
            return parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
    return convert


def check_lockable(**folders: Path) -> None:
    """Refuse, before any work, a folder (``--out``, ``--cache``) where runs could not create
    files or take their locks (``atomicio``: Lustre without ``-o flock``)."""
    from atomicio import LocksUnsupported, check_locks

    for flag, folder in folders.items():
        try:
            check_locks(folder)
        except LocksUnsupported as e:
            raise UsageError(f"--{flag} {folder}: {e}") from e
        except OSError as e:
            raise UsageError(f"--{flag} {folder}: cannot create files there "
                             f"({e.strerror})") from e


def check_report_folder(out: Path) -> None:
    """Refuse, before any work, a report folder that holds files a report would replace."""
    from results.report import ReportError
    from results.report import check_report_folder as check

    try:
        check(out)
    except ReportError as e:
        raise UsageError(str(e)) from e


def checked_by(check):
    """An argparse ``type`` from a :class:`benchmarks.config.Check`."""
    return checked(check.parse, check.wanted)


positive_int = checked_by(integer(1))
non_negative_float = checked_by(number(0))
