"""No import cycles in `app` and `addons`, counting the imports inside functions too.

An import deferred into a function is still a cycle: it only moves the failure from
start-up to the first call, and it hides which module is the lower one. The graph is
read from the source (ast), so every module counts, imported by a test or not; imports
under `if TYPE_CHECKING:` are left out (they never run).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules(root: Path, packages: tuple[str, ...]) -> dict[str, tuple[Path, bool]]:
    out = {}
    for package in packages:
        for path in (root / package).rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def import_graph(root: Path, packages: tuple[str, ...]) -> dict[str, set[str]]:
    """module -> the modules of `packages` that importing it (or calling into it) runs."""
    modules = _modules(root, packages)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]

        def runs(target: str) -> list[str]:
            # Importing a.b.c runs a, a.b and a.b.c; the importer's own packages already ran.
            parts = target.split(".")
            chain = (".".join(parts[:k]) for k in range(1, len(parts) + 1))
            return [m for m in chain if m in modules and not name.startswith(m + ".")]

        def visit(node: ast.AST) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    continue
                if isinstance(child, ast.Import):
                    for alias in child.names:
                        graph[name].update(runs(alias.name))
                elif isinstance(child, ast.ImportFrom):
                    base = child.module or ""
                    if child.level:
                        anchor = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                        base = f"{anchor}.{base}" if base else anchor
                    graph[name].update(runs(base))
                    for alias in child.names:
                        submodule = f"{base}.{alias.name}"
                        if submodule in modules:
                            graph[name].add(submodule)
                        elif base in modules:
                            graph[name].add(base)  # a name from a package's __init__: it must have run
                visit(child)

        visit(ast.parse(path.read_text(), str(path)))
        graph[name].discard(name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path back to its start) per strongly connected group of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def strong(v: str) -> None:  # Tarjan; the graph is a few hundred modules deep at most
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(_path(graph, group, v))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return found


def _path(graph: dict[str, set[str]], group: set[str], start: str) -> list[str]:
    """A shortest way from `start` back to itself inside `group` (breadth first)."""
    came = {start: ""}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(graph[v] & group):
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(came[path[-1]])
                return [*reversed(path), start]
            if w not in came:
                came[w] = v
                todo.append(w)
    return [start]


def test_app_and_addons_have_no_import_cycles() -> None:
    graph = import_graph(ROOT, ("app", "addons"))
    assert len(graph) > 150 and "app.gate" in graph and "addons.gatekeeper" in graph
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_check_finds_a_cycle_through_a_deferred_import(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .low import VALUE\n")
    (pkg / "sub" / "low.py").write_text("VALUE = 1\n\ndef later():\n    from pkg import high\n    return high\n")
    (pkg / "high.py").write_text("from pkg.sub import VALUE\n")
    (pkg / "typed.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import high\n")
    (pkg / "user.py").write_text("from . import typed\nfrom .sub import low\n")
    graph = import_graph(tmp_path, ("pkg",))
    assert graph["pkg.typed"] == set()
    assert graph["pkg.user"] == {"pkg.typed", "pkg.sub", "pkg.sub.low"}
    assert cycles(graph) == [["pkg.high", "pkg.sub", "pkg.sub.low", "pkg.high"]]
