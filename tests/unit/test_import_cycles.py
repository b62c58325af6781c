"""No import cycles in processors/ and stream/: the import graph, read from the source (AST).

Every import counts, also one inside a function (a deferred import hides a cycle from the
interpreter, not from a reader): `import a.b`, `from a.b import c` (an edge to a.b.c when that is
a module, else to a.b). A cycle is a strongly connected component of two or more modules, or a
module importing itself; the failure names one closed path through each.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("processors", "stream")

# Known cycles, each with the issue that removes it. An allowance nothing needs any more fails too.
ALLOWED: list[frozenset[str]] = []
"""Cycles tolerated for now, each with the reason: none."""


def modules(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    """Dotted name → file, for every module and package under `packages`."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module → the modules of `packages` it imports (anywhere in its body)."""
    mods = modules(root, packages)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package, `level` folders up
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in mods else base)
            for target in targets:
                while target and target not in mods:  # `import a.b.c` of a name inside a module
                    target = target.rpartition(".")[0]
                if target:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One closed path (first module repeated at the end) per strongly connected component with a
    cycle, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan, iteratively
        work = [(v, iter(sorted(graph[v])))]
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        while work:
            node, edges = work[-1]
            for w in edges:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.add(w)
                        if w == node:
                            break
                    if len(component) > 1 or node in graph[node]:
                        components.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(_closed_path(graph, c) for c in components)


def _closed_path(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module, by breadth-first search."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & component):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


def test_no_import_cycles() -> None:
    found = cycles(import_graph(REPO))
    new = [c for c in found if frozenset(c) not in ALLOWED]
    assert not new, ("import cycles in processors/ and stream/ (a module must not import, even "
                     "inside a function, a module that imports it back):\n  "
                     + "\n  ".join(" -> ".join(c) for c in new))
    stale = [sorted(a) for a in ALLOWED if a not in {frozenset(c) for c in found}]
    assert not stale, f"allowed cycles that no longer exist: remove them from ALLOWED: {stale}"


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    """The check can fail: a cycle through a deferred import, a `from package import module`
    and a relative import, in a throwaway tree."""
    pkg = tmp_path / "stream"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from stream.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from . import c\n")
    (pkg / "sub" / "c.py").write_text("import stream.a\n")
    (pkg / "d.py").write_text("from stream.a import f\n")  # into the cycle, not on it
    (pkg / "e.py").write_text("from stream import e\n")  # itself
    graph = import_graph(tmp_path, ("stream",))
    assert graph["stream.a"] == {"stream.sub.b"}
    assert graph["stream.sub.b"] == {"stream.sub.c"}
    assert graph["stream.d"] == {"stream.a"}
    assert cycles(graph) == [["stream.a", "stream.sub.b", "stream.sub.c", "stream.a"],
                             ["stream.e", "stream.e"]]


def test_processors_import_no_io() -> None:
    """processors/ is the domain: it imports nothing of stream/, Kafka, Faust or RocksDB."""
    io = ("stream", "faust", "confluent_kafka", "aiokafka", "rocksdict", "mode")
    found = []
    for name, path in modules(REPO, ("processors",)).items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found += [f"{name} imports {n}" for n in names if n.split(".")[0] in io]
    assert not found, "processors/ must stay free of I/O: " + "; ".join(found)
