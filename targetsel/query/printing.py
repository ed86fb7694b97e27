"""The canonical query string of a selector: `str(selector)`, which `parse` reads back to an equal one.

Precedence, loosest first: `|`, `-`, `&`, `!`; a group is parenthesised only where the grammar
needs it. Values print bare when they hold only `SAFE_VALUE_CHARS`, else quoted. Nodes are told
apart by their `kind`, so this module needs none of the node classes.
"""

from __future__ import annotations

from targetsel.query.fields import FLAG_KINDS
from targetsel.query.layerspec import ranges_text

# Values printed without quotes; anything else is written "…" with \" and \\ escapes.
SAFE_VALUE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.*?{},[]")

_PREC = {"or": 1, "diff": 2, "and": 3, "not": 4}


def quote_value(value: str) -> str:
    if value and all(c in SAFE_VALUE_CHARS for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_regex(pattern: str) -> str:
    r"""Inside name:/…/ a bare `/` ends the regex, so write it as `\/` (backslash pairs stay as they are)."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(pattern[i : i + 2])
            i += 2
            continue
        out.append("\\/" if c == "/" else c)
        i += 1
    return "/" + "".join(out) + "/"


def _atom(node) -> str:
    kind = getattr(node, "kind", None)
    if kind in FLAG_KINDS:
        return kind
    if kind == "type":
        return f"type:{'=' if node.exact else ''}{quote_value(node.name)}"
    if kind == "name":
        return "name:" + quote_regex(node.pattern)
    if kind == "glob":
        return "glob:" + quote_value(node.pattern)
    if kind == "under":
        return "under:" + (quote_value(node.prefix) if node.prefix is not None else f"({to_query(node.of)})")
    if kind == "layers":
        return "layers:" + ranges_text(node.ranges) + ("" if node.within is None else "@" + quote_value(node.within))
    if kind == "component":
        return f"component:{node.name}"
    if kind == "where":
        return f"<where {node.label}: a Python callable, not serialisable>"
    raise TypeError(f"not a selector node: {node!r}")


def _prec(node) -> int:
    return _PREC.get(getattr(node, "kind", ""), 5)


def _wrap(node, minimum: int) -> str:
    text = to_query(node)
    return f"({text})" if _prec(node) < minimum else text


def to_query(node) -> str:
    """The canonical query string of a node or `Selector` (precedence, loosest first: | - & !)."""
    if not hasattr(node, "kind") and hasattr(node, "root"):
        node = node.root  # a Selector
    kind = getattr(node, "kind", None)
    if kind == "or":
        return " | ".join(_wrap(i, 2) for i in node.items)
    if kind == "diff":
        return f"{_wrap(node.left, 2)} - {_wrap(node.right, 3)}"
    if kind == "and":
        return " & ".join(_wrap(i, 4) for i in node.items)
    if kind == "not":
        return "!" + _wrap(node.item, 4)
    return _atom(node)
