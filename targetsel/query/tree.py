"""Selectors as trees: children, walking, and the limits on depth and size every selector keeps.

A selector nests at most `MAX_DEPTH` levels — each `!`, `-`, `&`/`|` group and `under:(…)` below
another is one — and holds at most `MAX_NODES` nodes. Both are checked whenever a node is built
(by the fluent chain, the parser or `Selector.model_validate`), so every selector that exists
prints, parses back, pickles, evaluates and round-trips through JSON. Past the limit something
gives up, far from where the selector was written: for nested `&`/`|`, pydantic's JSON writer at
127 levels, pickle near 165 and the printer near 250 (RecursionError, less when the caller's
stack is deep); pydantic's JSON reader already at 100, which `Selector.model_validate_json` works
around. Chains `a - b - c` nest one level per `-` (the tree is left-deep, as the grammar says), so
the advice for a long one is `a - (b | c | …)`, which is flat.

Nodes are told apart by their `kind` (the tag a spec file holds), so this module needs none of
the node classes and they can check their limits with it.
"""

from __future__ import annotations

from typing import Any

from targetsel.errors import SpecError

#: The deepest a selector may nest (compound nodes on one path: `!`, `-`, `&`, `|`, `under:(…)`).
MAX_DEPTH = 100

#: The most nodes a selector may hold, counted as printed (a query of 100,000 atoms is ~1 MB of text).
MAX_NODES = 100_000

#: A structure (`model_dump()`) of a selector within MAX_DEPTH nests at most this many mappings and
#: lists: two per `&`/`|` level (the node and its `items`), and `layers` ranges add two at the bottom.
MAX_DATA_DEPTH = 2 * MAX_DEPTH + 4

DEPTH_ADVICE = (
    "Each '!', '-', '&'/'|' group and 'under:(…)' inside another is a level; write a long difference "
    "a - b - c - … as a - (b | c | …), which stays one level deep."
)


def children(node) -> tuple:
    kind = getattr(node, "kind", None)
    if kind in ("and", "or"):
        return node.items
    if kind == "not":
        return (node.item,)
    if kind == "diff":
        return (node.left, node.right)
    if kind == "under" and node.of is not None:
        return (node.of,)
    return ()


def walk(node):
    yield node
    for child in children(node):
        yield from walk(child)


def has_callable(node) -> bool:
    return any(getattr(n, "kind", None) == "where" for n in walk(node))


def callable_labels(node) -> list[str]:
    return [n.label for n in walk(node) if getattr(n, "kind", None) == "where"]


def _known_shape(node) -> "tuple[int, int] | None":
    return getattr(node, "__dict__", {}).get("shape")  # a node's cached `shape`, if it was measured


def measure(node) -> tuple[int, int]:
    """(nesting depth, size): compound levels on the longest path down, and nodes as printed.

    The size counts a sub-selector used twice twice: `s = s | s.frozen()` in a loop doubles it at
    each step while sharing one object, which is what printing and evaluating pay for. Iterative,
    so that it measures what is too deep to print; a child built through its class was measured
    then, and a shared object is measured once.
    """
    kids = children(node)
    if not kids:
        return (0, 1)
    # The usual case, a node built from parts built before it: each part knows its shape.
    depth, size = 0, 1
    for kid in kids:
        shape = (0, 1) if not children(kid) else _known_shape(kid)
        if shape is None:
            break
        depth, size = max(depth, shape[0]), size + shape[1]
    else:
        return depth + 1, size
    done: dict[int, tuple[int, int]] = {}
    stack = [(node, False)]
    while stack:
        current, expanded = stack.pop()
        kids = children(current)
        known = _known_shape(current) if current is not node else None
        if known is not None:
            done[id(current)] = known  # measured when it was built
        elif not kids:
            done[id(current)] = (0, 1)
        elif expanded:
            measured = [done[id(k)] for k in kids]
            done[id(current)] = (1 + max(d for d, _ in measured), 1 + sum(n for _, n in measured))
        elif id(current) not in done:
            stack.append((current, True))
            stack.extend((k, False) for k in kids if id(k) not in done)
    return done[id(node)]


def data_depth(data: Any, stop: int) -> int:
    """How deeply dicts and lists nest in `data` (iteratively; measuring stops past `stop`)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            values = item.values()
        elif isinstance(item, (list, tuple)):
            values = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > stop:
            break
        stack.extend((v, level + 1) for v in values)
    return deepest


def check_depth(node) -> None:
    """Raise SpecError when `node` nests deeper than MAX_DEPTH or holds more than MAX_NODES nodes."""
    depth, size = getattr(node, "shape", None) or measure(node)
    if depth > MAX_DEPTH:
        err = SpecError(f"this selector nests more than {MAX_DEPTH} levels deep, the limit. {DEPTH_ADVICE}")
        err.depth = depth  # type: ignore[attr-defined]  # the parser reports it at a column
        raise err
    if size > MAX_NODES:
        raise SpecError(
            f"this selector holds {size:,} nodes when printed, more than the limit of {MAX_NODES:,}. A selection "
            "used twice in one step (s = s | s.frozen(), s = s - s.leaf() in a loop) doubles it each time: "
            "build each part once, e.g. s.frozen() | s.leaf() instead of repeating s."
        )
