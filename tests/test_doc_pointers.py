"""Pointers in the code resolve: every ``docs/<page>.md`` a comment or docstring names exists,
every section it names in quotes (``docs/x.md``, "Section"; README "Section") is a heading of
that page, every ``python -m <module>`` is a module of the suite and every
``run_benchmark.py <command>`` is a command of the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import run_benchmark

ROOT = Path(__file__).resolve().parents[1]
CODE = [*ROOT.glob("*.py"), *(p for package in ("benchmarks", "models", "results", "strategies")
                             for p in (ROOT / package).rglob("*.py"))]
PAGE = r"(README(?:\.md)?|docs/[\w-]+\.md)"
SECTION = re.compile(PAGE + r"``?'?s?,?\s+\"([^\"]+)\"")
MODULE = re.compile(r"python -m ((?:benchmarks|models|results|strategies)[\w.]*)")
COMMAND = re.compile(r"run_benchmark\.py ([a-z]+)\b")


def headings(page: str) -> list[str]:
    path = ROOT / ("README.md" if page.startswith("README") else page)
    return [line.lstrip("#").strip() for line in path.read_text().splitlines()
            if line.startswith("#")]


def pointers(pattern: re.Pattern) -> list[tuple[str, tuple]]:
    return [(p.relative_to(ROOT).as_posix(), m.groups()) for p in CODE
            for m in pattern.finditer(" ".join(p.read_text().split()))]


def test_the_reader_finds_pointers():
    assert len(pointers(SECTION)) >= 4 and pointers(MODULE) and pointers(COMMAND)


def test_named_pages_exist():
    missing = sorted({(f, page) for f, (page,) in pointers(re.compile(r"(docs/[\w-]+\.md)"))
                      if not (ROOT / page).is_file()})
    assert not missing, missing


def test_named_sections_are_headings():
    wrong = [(f, page, title) for f, (page, title) in pointers(SECTION)
             if not any(title in h for h in headings(page))]
    assert not wrong, wrong


def test_named_modules_and_commands_exist():
    modules = [(f, m) for f, (m,) in pointers(MODULE)
               if not (ROOT / f"{m.replace('.', '/')}.py").exists()]
    commands = [(f, c) for f, (c,) in pointers(COMMAND) if c not in run_benchmark.COMMANDS]
    assert not modules and not commands, (modules, commands)
