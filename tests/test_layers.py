"""The package graph, read from the source (AST; function-local imports count): the CLI ->
benchmarks -> strategies -> models, results reads records and artifacts only, ``atomicio`` (atomic
writes, locks) and ``vocab`` (the settings' words) are leaves below every package, and no module
imports itself around a circle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("benchmarks", "strategies", "models", "results")
LEAVES = {"atomicio", "vocab"}
# What each part may import besides itself (the standard library and third parties always).
ALLOWED = {
    "run_benchmark": {"benchmarks", "benchmarks.commands", "benchmarks.measure", "strategies",
                      "models", "results", *LEAVES},
    "benchmarks.commands": {"benchmarks", "strategies", "models", "results", *LEAVES},
    "benchmarks.measure": {"benchmarks", "strategies", "models", "results", *LEAVES},
    "benchmarks": {"strategies", "models", "results", *LEAVES},
    "strategies": {"models", *LEAVES},
    "models": LEAVES,
    "results": {"atomicio"},
    "atomicio": set(),
    "vocab": set(),
}


def part(module: str) -> str:
    """The layer of a module: its package, but for the command line's and the measurements'
    subpackages of benchmarks/, which sit beside the library (above it)."""
    for beside in ("benchmarks.commands", "benchmarks.measure"):
        if module == beside or module.startswith(beside + "."):
            return beside
    return module.split(".")[0]


def modules() -> dict[str, Path]:
    found = {name: ROOT / f"{name}.py" for name in ("run_benchmark", *LEAVES)}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the suite's modules it imports (``from a import b`` counts ``a.b`` when that is
    a module, else ``a``)."""
    mods = modules()
    graph = {}
    for name, path in mods.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods
                            else node.module for a in node.names}
        graph[name] = {t for t in targets if t in mods and t != name}
    return graph


def test_imports_follow_the_layers():
    wrong = sorted(f"{m} -> {t}" for m, targets in import_graph().items() for t in targets
                   if part(t) != part(m) and part(t) not in ALLOWED[part(m)])
    assert not wrong, f"imports against the layers: {wrong}"


def test_no_import_circles():
    graph, state, circles = import_graph(), {}, []

    def visit(m: str, path: list[str]) -> None:
        state[m] = "open"
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                circles.append(path[path.index(t):] + [t])
            elif t not in state:
                visit(t, [*path, t])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not circles, f"import circles: {circles}"


def test_the_graph_sees_what_it_checks():
    """The checks above would pass on an empty graph: the reader finds the known arrows."""
    graph = import_graph()
    assert "models.tasks" in graph["benchmarks.runner"]
    assert "atomicio" in graph["results.records"]
    assert {part(m) for m in graph} == set(ALLOWED)


def test_no_module_of_the_library_is_over_400_lines():
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text().splitlines())) > 400}
    assert not long, long
