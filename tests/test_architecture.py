"""The package's shape, read from the source with `ast`: imports flow down the layers of
docs/architecture.md, no import cycle (module-level or inside functions), no module over 400 lines,
no function over 60 lines without a comment saying why it is one piece."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "targetsel"

# Lower layers never import higher ones (docs/architecture.md).
LAYERS = {"errors": 0, "version": 0, "text": 1, "query": 2, "model": 3, "demo": 3, "views": 4, "bridge": 5, "selection": 6,
          "cli": 7}
MAX_LINES = 400

# Exceptions that may only shrink: a new upward import, cycle member or over-long module fails, and
# so does an entry that has been fixed but is still listed (delete it).
KNOWN_UPWARD: set[tuple[str, str]] = set()
KNOWN_CYCLE: set[str] = set()
KNOWN_LONG: set[str] = set()


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def layer(name: str) -> int:
    parts = name.split(".")
    return LAYERS.get(parts[1], 99) if len(parts) > 1 else 99  # the package itself and __main__ sit on top


def imports(known: dict[str, Path]) -> set[tuple[str, str]]:
    """(importer, imported module) for every import of targetsel code, wherever it stands."""
    edges = set()
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level:
                raise AssertionError(f"{name}:{node.lineno} uses a relative import; write it absolute")
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "targetsel":
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                           for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == "targetsel"]
            edges.update((name, t) for t in targets if t != name and t in known)
    return edges


def cycle_members(edges: set[tuple[str, str]]) -> set[str]:
    """Modules on some import cycle (Tarjan's strongly connected components of size > 1)."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    members: set[str] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                members.update(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return members


KNOWN = modules()
EDGES = imports(KNOWN)


def test_every_module_sits_in_a_layer():
    assert not [n for n in KNOWN if n.count(".") >= 1 and not n.endswith("__main__") and layer(n) == 99]


def test_imports_flow_downward():
    upward = {(a, b) for a, b in EDGES if layer(a) < layer(b)}
    assert upward - KNOWN_UPWARD == set(), "new upward imports"
    assert KNOWN_UPWARD - upward == set(), "fixed: delete these from KNOWN_UPWARD"


def test_no_new_import_cycle():
    members = cycle_members(EDGES)
    assert members - KNOWN_CYCLE == set(), "new modules on an import cycle"
    assert KNOWN_CYCLE - members == set(), "no longer on a cycle: delete them from KNOWN_CYCLE"


@pytest.mark.parametrize("name", sorted(KNOWN))
def test_module_length(name):
    lines = len(KNOWN[name].read_text().splitlines())
    if name in KNOWN_LONG:
        assert lines > MAX_LINES, f"{name} is {lines} lines now: delete it from KNOWN_LONG"
    else:
        assert lines <= MAX_LINES, f"{name} has {lines} lines (at most {MAX_LINES}): split it where its jobs part"


MAX_FUNCTION_LINES = 60


def long_functions_without_a_reason() -> list[str]:
    """Functions over MAX_FUNCTION_LINES lines whose body does not say why they are one piece."""
    found = []
    for name, path in KNOWN.items():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = lines[node.lineno - 1:node.end_lineno]
                if len(body) > MAX_FUNCTION_LINES and not any("one piece" in line.lower() for line in body if "#" in line):
                    found.append(f"{name}.{node.name} ({len(body)} lines)")
    return found


def test_long_functions_say_why_they_are_one_piece():
    assert long_functions_without_a_reason() == [], "split them, or add a '# One piece on purpose: …' comment"


def test_cycle_finder_finds_a_cycle():
    assert cycle_members({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == {"a", "b", "c"}
    assert cycle_members({("a", "b"), ("b", "c")}) == set()
