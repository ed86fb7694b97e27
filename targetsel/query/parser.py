"""The query language: `"linear & trainable & !under:vision_tower"` → a `Selector`.

A small hand-written scanner and recursive-descent parser, in the style of einops' parser,
rather than a parsing library such as lark. The grammar is five precedence levels and a handful
of atoms, and the hard part is not the grammar but the values inside atoms: a regex between
slashes with `\\/` escapes, globs full of `*{},[]`, layer lists such as `-4..` that start with
the difference operator's character. A hand-written scanner reads each value with the rule of
its own atom and can point at the exact column of what went wrong — including the column of a
regex error *inside* `name:/…/` — and suggest the closest atom; a generated parser would need
its own lexer modes and error mapping for the same result, plus a runtime dependency.

    query   := or
    or      := diff (("|" | "or") diff)*
    diff    := and ("-" and)*                       left-associative: a - b - c = (a - b) - c
    and     := unary (("&" | "and") unary)*
    unary   := ("!" | "not") unary | "(" or ")" | atom

The parser builds nodes only through the node classes and smart constructors in `nodes.py`, the
same ones the fluent chain uses, so the three spellings of a selection give equal selectors — and
the same checks: a query parses if and only if its selector can be printed, pickled, written as
JSON and parsed back. Nesting is limited twice with the same number, `MAX_DEPTH`: while reading
(each `(` and `!`, which keeps the parser's own recursion bounded) and as each node is built
(which also counts the levels a chain `a - b - c` adds without any parenthesis).

Three modules: `scanner.py` (tokens, values, errors at a column), `atoms.py` (each atom's value),
and this one (the grammar above, `parse`, and spec files: `load_spec`).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Union

from pydantic import ValidationError

from targetsel.errors import QuerySyntaxError, SpecError, TargetselError
from targetsel.query import nodes as N
from targetsel.query.atoms import FLAGS, KEYED, AtomReader
from targetsel.query.patterns import LONE_SURROGATE
from targetsel.query.scanner import OPERATOR_CHARS, WORD_OPERATORS
from targetsel.query.tree import DEPTH_ADVICE, MAX_DEPTH

__all__ = ["FLAGS", "KEYED", "MAX_DEPTH", "OPERATOR_CHARS", "WORD_OPERATORS", "load_spec", "parse", "parse_uncached",
           "spec_to_selector"]


@functools.lru_cache(maxsize=1024)
def _parse_cached(query: str) -> N.Selector:
    return parse_uncached(query)


def parse(query: Union[str, N.Selector]) -> N.Selector:
    """A model-independent `Selector` from a query string (cached); a `Selector` is returned as is.

    >>> parse("linear & trainable & !under:vision_tower")
    parse('linear & trainable & !under:vision_tower')

    Raises `QuerySyntaxError` (with `.query`, `.position` and a caret under the column) for every
    malformed query; no other exception escapes.
    """
    if isinstance(query, N.Selector):
        return query
    if not isinstance(query, str):
        raise QuerySyntaxError(
            f"a query must be a string such as 'linear & trainable', got {type(query).__name__}", repr(query), 0
        )
    return _parse_cached(query)


def parse_uncached(query: str) -> N.Selector:
    """`parse` without the cache (the einops-style twin), for tests and fuzzing."""
    if not isinstance(query, str):
        return parse(query)
    return N.Selector(_Parser(query).parse())


# ---------------------------------------------------------------------------- the grammar


class _Parser(AtomReader):
    """The grammar of the module docstring, one method a level; `self.depth` counts open `(` and `!`."""

    def __init__(self, query: str):
        super().__init__(query)
        self.depth = 0

    def parse(self):
        if not self.q.strip():
            self.fail("empty query", 0, "write an atom such as `linear` or `trainable`; `all` selects every module")
        surrogate = LONE_SURROGATE.search(self.q)
        if surrogate is not None:  # JSON cannot hold it: a saved selector would fail to write
            self.fail(
                f"the character {surrogate.group()!r} is a lone surrogate, not text",
                surrogate.start(),
                "it usually comes from bytes that are not valid UTF-8 (a command line or file in another "
                "encoding); remove it or write the character it stood for",
            )
        node = self.parse_or()
        if not self.at_end():
            op = self.peek_operator()
            if op and op[0] == ")":
                self.fail("unexpected ')' with no '(' before it", op[1])
            self.fail(
                f"expected an operator (&, |, -) before {self.describe_next()}",
                self.pos,
                "atoms are combined with & (and), | (or), - (difference); e.g. `linear & trainable`",
            )
        return node

    def parse_or(self, after=None):
        return self.flat(after, "|", self.parse_diff, N.or_)

    def parse_diff(self, after=None):
        node = self.parse_and(after)
        while (op := self.peek_operator()) and op[0] == "-":
            self.pos = op[2]
            node = self.build(op[1], N.diff, node, self.parse_and(after=op))
        return node

    def parse_and(self, after=None):
        return self.flat(after, "&", self.parse_unary, N.and_)

    def flat(self, after, symbol: str, operand, make):
        """`operand (symbol operand)*` as one node, `make(*operands)`; its errors point at the first `symbol`."""
        items, first = [operand(after)], None
        while (op := self.peek_operator()) and op[0] == symbol:
            self.pos = op[2]
            first = op[1] if first is None else first
            items.append(operand(after=op))
        return items[0] if first is None else self.build(first, make, *items)

    def parse_unary(self, after=None):
        """`after` is the operator token just read, so a missing operand can point at it."""
        self.skip_space()
        if self.pos >= len(self.q):
            if after is not None:
                self.fail(f"{self.q[after[1]:after[2]]!r} needs an atom after it", after[1])
            self.fail("the query ends where an atom was expected", self.pos)
        op = self.peek_operator()
        if op is not None:
            kind, start, end = op
            if kind == "!":
                self.pos = end
                with self.nested(start):
                    return self.build(start, N.not_, self.parse_unary(after=op))
            if kind == "(":
                self.pos = end
                close = self.peek_operator()
                if close and close[0] == ")":
                    self.fail("empty parentheses", start, "put a query inside them, e.g. (linear | leaf)")
                return self.group(start, "add a ')' at the end")
            where = f" after {self.q[after[1]:after[2]]!r}" if after is not None else ""
            self.fail(f"expected an atom{where}, found {self.q[start:end]!r}", start)
        return self.parse_atom()

    def group(self, open_at: int, hint: str):
        """The query inside parentheses whose '(' at `open_at` was just read, and its ')'."""
        with self.nested(open_at):
            node = self.parse_or()
        close = self.peek_operator()
        if not close or close[0] != ")":
            if self.at_end():
                self.fail("this '(' is never closed", open_at, hint)
            self.fail(f"expected ')' or an operator, found {self.describe_next()}", self.pos)
        self.pos = close[2]
        return node

    def nested(self, start: int):
        parser = self

        class _Depth:
            def __enter__(self):
                parser.depth += 1
                if parser.depth > MAX_DEPTH:
                    parser.fail(f"the query nests deeper than {MAX_DEPTH} levels", start, DEPTH_ADVICE)

            def __exit__(self, *exc):
                parser.depth -= 1
                return False

        return _Depth()


# ---------------------------------------------------------------------------- spec files


def load_spec(path: Union[str, Path]) -> N.Selector:
    """A `Selector` from a `.json`, `.yaml` or `.yml` file holding a query string or the node structure.

    Accepted contents: a query string (`"linear & trainable"`), a mapping `{query: "..."}`, or the
    node structure `Selector.model_dump()` writes. The result is canonical: equal to
    `parse(str(result))`.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise SpecError(f"load_spec({str(path)!r}): expected a .json, .yaml or .yml file, got {suffix or 'no extension'!r}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"load_spec: no such file {str(path)!r}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"load_spec: cannot read {str(path)!r}: {exc}") from None
    data = _load_data(text, suffix, path)
    return spec_to_selector(data, source=str(path))


def _load_data(text: str, suffix: str, path: Path) -> Any:
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError(f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
        except RecursionError:
            raise SpecError(f"{path}: the JSON nests too deeply to read; {_TOO_DEEP}") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise SpecError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    except RecursionError:
        raise SpecError(f"{path}: the YAML nests too deeply to read; {_TOO_DEEP}") from None


_TOO_DEEP = f"a selector nests at most {MAX_DEPTH} levels"


def _location(loc) -> str:
    """'and.items.1.name.pattern'; a deep one keeps its two ends: 'not.item.not … not.item.name.pattern (240 steps)'."""
    parts = [str(p) for p in loc]
    if len(parts) <= 12:
        return ".".join(parts) or "root"
    return f"{'.'.join(parts[:4])} … {'.'.join(parts[-6:])} ({len(parts)} steps)"


def spec_to_selector(data: Any, source: str = "spec") -> N.Selector:
    """A canonical `Selector` from loaded JSON/YAML data (a query string, {query: ...}, or nodes)."""
    if isinstance(data, dict) and set(data) == {"query"}:
        data = data["query"]
    if isinstance(data, str):
        try:
            return parse(data)
        except QuerySyntaxError as exc:
            raise QuerySyntaxError(f"{source}: {exc.reason}", exc.query, exc.position, exc.hint) from None
    if not isinstance(data, dict):
        raise SpecError(
            f"{source}: a selector spec is a query string, {{query: ...}}, or a node mapping such as "
            f"{{kind: and, items: [...]}}; got {type(data).__name__}"
        )
    try:
        selector = N.Selector.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{_location(e.get('loc', ()))}: {str(e.get('msg', '')).removeprefix('Value error, ')}" for e in exc.errors()[:5]
        )
        raise SpecError(f"{source}: {len(exc.errors())} problem(s) in the selector structure: {problems}") from None
    except TargetselError as exc:
        raise SpecError(f"{source}: {exc}") from None
    # Re-parse the printed form so a hand-written structure (nested ands, `all & x`) is canonical.
    return parse(str(selector))
