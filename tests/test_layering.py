"""Imports run one way: entry points (``app.cli``, ``app.devtools``) -> ``agents`` -> ``actions`` ->
core (the rest of ``app``). Inside core, the rooms (``app/<room>/``, plus the kernel: the modules at
the top of ``app/``) import each other without cycles, and the kernel imports only the kernel.

Every import counts: module level, inside functions, and under ``TYPE_CHECKING``."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from tests.harness import ROOT

PACKAGES = ("app", "agents", "actions")
ENTRY, AGENTS, ACTIONS, CORE = 3, 2, 1, 0


def modules(root: Path) -> dict[str, Path]:
    found = {}
    for top in PACKAGES:
        for path in (root / top).rglob("*.py"):
            name = ".".join(path.relative_to(root).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def layer(module: str) -> int:
    if module == "app.cli" or module.startswith(("app.cli.", "app.devtools")):
        return ENTRY
    return {"agents": AGENTS, "actions": ACTIONS}.get(module.split(".")[0], CORE)


def room(module: str) -> str:
    """A core module's room: ``app.<room>`` for a subpackage, ``kernel`` for a top-level module."""
    parts = module.split(".")
    return f"app.{parts[1]}" if len(parts) > 2 or (len(parts) == 2 and parts[1] in _SUBPACKAGES) else "kernel"


_SUBPACKAGES: set[str] = set()


def imports(root: Path) -> dict[str, set[tuple[str, int]]]:
    """module -> {(imported project module, line)}, each resolved to a module that exists."""
    mods = modules(root)
    _SUBPACKAGES.clear()
    _SUBPACKAGES.update(p.name for p in (root / "app").iterdir() if (p / "__init__.py").is_file())

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[tuple[str, int]]] = {m: set() for m in mods}
    for module, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                if name.split(".")[0] in PACKAGES:
                    target = resolve(name)
                    if target and target != module:
                        graph[module].add((target, node.lineno))
    return graph


def upward(graph: dict[str, set[tuple[str, int]]]) -> list[str]:
    out = []
    for module, targets in graph.items():
        for target, line in targets:
            if layer(target) > layer(module):
                out.append(f"{module}:{line} imports {target}, a layer above it")
            elif layer(module) == layer(target) == CORE and room(module) == "kernel" and room(target) != "kernel":
                out.append(f"{module}:{line} (kernel) imports {target} (room {room(target)})")
    return sorted(out)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def module_cycles(graph: dict[str, set[tuple[str, int]]]) -> list[list[str]]:
    return cycles({m: {t for t, _ in ts} for m, ts in graph.items()})


def room_cycles(graph: dict[str, set[tuple[str, int]]]) -> list[list[str]]:
    edges: dict[str, set[str]] = {}
    for module, targets in graph.items():
        if layer(module) != CORE:
            continue
        for target, _ in targets:
            if layer(target) == CORE and room(target) != room(module):
                edges.setdefault(room(module), set()).add(room(target))
    return cycles(edges)


def test_imports_run_downward() -> None:
    assert upward(imports(ROOT)) == []


def test_no_module_imports_itself_through_others() -> None:
    assert module_cycles(imports(ROOT)) == []


def test_rooms_of_core_form_no_cycle() -> None:
    assert room_cycles(imports(ROOT)) == []


def test_every_room_opens_with_a_docstring() -> None:
    for init in sorted((ROOT / "app").glob("*/__init__.py")):
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), f"{init.relative_to(ROOT)} has no opening docstring"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for top in PACKAGES:
        shutil.copytree(ROOT / top, tmp_path / top, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def add_import(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n\ndef _added() -> None:\n    {line}\n")


@pytest.mark.parametrize(("where", "line", "expected"), [
    ("app/routing/router.py", "from agents.worker import Worker", "app.routing.router:"),
    ("app/kafka/topics.py", "import actions.slack", "app.kafka.topics:"),
    ("actions/slack.py", "from agents import worker", "actions.slack:"),
    ("agents/worker.py", "from app.cli import main", "agents.worker:"),
    ("app/errors.py", "from app.routing import router", "app.errors:"),
])
def test_an_upward_import_is_reported(tree: Path, where: str, line: str, expected: str) -> None:
    assert upward(imports(tree)) == []
    add_import(tree / where, line)
    problems = upward(imports(tree))
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_a_cycle_between_rooms_is_reported(tree: Path) -> None:
    add_import(tree / "app/config/settings.py", "from app.forensics import timeline")
    assert [c for c in room_cycles(imports(tree)) if "app.config" in c and "app.forensics" in c]
    assert module_cycles(imports(tree))
