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

The parser builds nodes only through the smart constructors in `nodes.py`, the same ones the
fluent chain uses, so the three spellings of a selection give equal selectors — and the same
checks: a query parses if and only if its selector can be printed, pickled, written as JSON and
parsed back. Nesting is limited twice with the same number, `MAX_DEPTH`: while reading (each `(`
and `!`, which keeps the parser's own recursion bounded) and as each node is built (which also
counts the levels a chain `a - b - c` adds without any parenthesis).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Optional, Union

from pydantic import ValidationError

from targetsel.query import nodes as N
from targetsel.errors import LayerSpecError, PatternError, QuerySyntaxError, SpecError, TargetselError, closest
from targetsel.query.patterns import LONE_SURROGATE

FLAGS = {kind: N.Flag(kind=kind) for kind in N.FLAG_KINDS}
KEYED = ("type", "name", "glob", "under", "layers", "component")
WORD_OPERATORS = {"and": "&", "or": "|", "not": "!"}
OPERATOR_CHARS = "&|!-()"
MAX_DEPTH = N.MAX_DEPTH  # deeper nesting is not a query anyone writes; see nodes.py for why there is a limit

_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_LAYER_CHARS = frozenset("0123456789.,-")


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


# ---------------------------------------------------------------------------- the parser


class _Parser:
    """One pass over the query; `self.pos` is the column of the next unread character."""

    def __init__(self, query: str):
        self.q = query
        self.pos = 0
        self.depth = 0

    # -------------------------------------------------------------- errors

    def fail(self, message: str, pos: int, hint: Optional[str] = None):
        # Point at a character of the query, never past its end: an error "at the end" is shown
        # under the last character, which is what the user has to extend or fix.
        pos = min(max(pos, 0), max(len(self.q) - 1, 0))
        raise QuerySyntaxError(message, self.q, pos, hint)

    # -------------------------------------------------------------- scanning

    def skip_space(self) -> None:
        while self.pos < len(self.q) and self.q[self.pos].isspace():
            self.pos += 1

    def at_end(self) -> bool:
        self.skip_space()
        return self.pos >= len(self.q)

    def peek_operator(self) -> Optional[tuple[str, int, int]]:
        """(operator, start, end) of the next token if it is one of & | ! - ( ) and/or/not, else None."""
        self.skip_space()
        if self.pos >= len(self.q):
            return None
        c = self.q[self.pos]
        if c in OPERATOR_CHARS:
            return c, self.pos, self.pos + 1
        word_end = self._word_end(self.pos)
        word = self.q[self.pos : word_end].lower()
        if word in WORD_OPERATORS and (word_end >= len(self.q) or self.q[word_end] != ":"):
            return WORD_OPERATORS[word], self.pos, word_end
        return None

    def _word_end(self, i: int) -> int:
        while i < len(self.q) and self.q[i] in _WORD_CHARS:
            i += 1
        return i

    def describe_next(self) -> str:
        self.skip_space()
        if self.pos >= len(self.q):
            return "the end of the query"
        op = self.peek_operator()
        if op:
            return f"{self.q[op[1]:op[2]]!r}"
        end = self._word_end(self.pos)
        return f"{self.q[self.pos:max(end, self.pos + 1)]!r}"

    # -------------------------------------------------------------- grammar

    def build(self, column: int, make, *args):
        """`make(*args)` (a smart constructor of nodes.py); a selector past the limits fails at `column`."""
        try:
            return make(*args)
        except TargetselError as exc:
            self.refuse(exc, column)

    def refuse(self, exc: TargetselError, column: int):
        if getattr(exc, "depth", None) is not None:
            self.fail(f"the query nests deeper than {MAX_DEPTH} levels", column, N.DEPTH_ADVICE)
        self.fail(str(exc), column)

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

    def parse_or(self):
        items, first = [self.parse_diff()], None
        while (op := self.peek_operator()) and op[0] == "|":
            self.pos = op[2]
            first = op[1] if first is None else first
            items.append(self.parse_diff(after=op))
        return items[0] if first is None else self.build(first, N.or_, *items)

    def parse_diff(self, after=None):
        node = self.parse_and(after)
        while (op := self.peek_operator()) and op[0] == "-":
            self.pos = op[2]
            node = self.build(op[1], N.diff, node, self.parse_and(after=op))
        return node

    def parse_and(self, after=None):
        items, first = [self.parse_unary(after)], None
        while (op := self.peek_operator()) and op[0] == "&":
            self.pos = op[2]
            first = op[1] if first is None else first
            items.append(self.parse_unary(after=op))
        return items[0] if first is None else self.build(first, N.and_, *items)

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
                    parser.fail(f"the query nests deeper than {MAX_DEPTH} levels", start, N.DEPTH_ADVICE)

            def __exit__(self, *exc):
                parser.depth -= 1
                return False

        return _Depth()

    # -------------------------------------------------------------- atoms

    def parse_atom(self):
        start = self.pos
        end = self._word_end(start)
        if end == start:
            self.fail(
                f"unexpected character {self.q[start]!r}",
                start,
                "atoms are words such as `linear`, or key:value such as `glob:**.q_proj`; quote odd values with \"…\"",
            )
        word = self.q[start:end]
        key = word.lower()
        if end < len(self.q) and self.q[end] == ":":
            if key not in KEYED:
                hint = _did_you_mean(key, [k + ":" for k in KEYED], ":") or f"atoms with a value: {', '.join(k + ':' for k in KEYED)}"
                if key in FLAGS:
                    hint = f"`{key}` takes no value; write just `{key}`"
                self.fail(f"unknown atom {word + ':'!r}", start, hint)
            self.pos = end + 1
            self.skip_space()  # `under: vision_tower` reads like `under:vision_tower`
            return getattr(self, f"atom_{key}")(start)
        if key in FLAGS:
            self.pos = end
            return FLAGS[key]
        if key in KEYED:
            self.fail(f"{key} needs a value after a colon, e.g. {_EXAMPLES[key]}", start)
        hint = _did_you_mean(key, [*FLAGS, *(k + ":" for k in KEYED)])
        if not hint:
            hint = (
                f"to select modules by name write glob:**.{word} or name:/{word}/; "
                f"atoms: {', '.join(FLAGS)}, {', '.join(k + ':' for k in KEYED)}"
            )
        self.fail(f"unknown atom {word!r}", start, hint)

    def value(self, key_start: int, what: str, stop_chars: str = "") -> tuple[str, int]:
        """A bare value (a run of safe characters) or a "quoted" one; returns (text, column)."""
        start = self.pos
        if start < len(self.q) and self.q[start] == '"':
            return self.quoted(start), start
        i = start
        while i < len(self.q) and self.q[i] in N.SAFE_VALUE_CHARS and self.q[i] not in stop_chars:
            i += 1
        if i == start:
            key = self.q[key_start : self._word_end(key_start)].lower()
            found = "the end of the query" if start >= len(self.q) else repr(self.q[start])
            self.fail(f"{key}: needs {what}, found {found}", start, f"e.g. {_EXAMPLES[key]}")
        if i < len(self.q) and not self.q[i].isspace() and self.q[i] not in OPERATOR_CHARS and self.q[i] not in stop_chars:
            self.fail(
                f"unexpected character {self.q[i]!r} in a value",
                i,
                f'quote values holding characters other than letters, digits and _.*?{{}},[] : "{self.q[start:i + 1]}…"',
            )
        self.pos = i
        return self.q[start:i], start

    def quoted(self, start: int) -> str:
        out, i = [], start + 1
        while i < len(self.q):
            c = self.q[i]
            if c == "\\" and i + 1 < len(self.q) and self.q[i + 1] in '"\\':
                out.append(self.q[i + 1])
                i += 2
                continue
            if c == '"':
                self.pos = i + 1
                if not out:
                    self.fail("empty quoted value", start)
                return "".join(out)
            out.append(c)
            i += 1
        self.fail("this quote is never closed", start, 'end the value with "')

    def node(self, cls, column: int, **fields):
        """Build a node, turning its validator's complaint into a syntax error at `column`."""
        try:
            return cls(**fields)
        except TargetselError as exc:
            self.refuse(exc, column)

    def atom_type(self, start: int):
        exact = self.pos < len(self.q) and self.q[self.pos] == "="
        if exact:
            self.pos += 1
        name, column = self.value(start, "a class name")
        return self.node(N.TypeIs, column, name=name, exact=exact)

    def atom_name(self, start: int):
        column = self.pos
        if column >= len(self.q) or self.q[column] != "/":
            self.fail(r"name: takes a regex between slashes", column, r"e.g. name:/mlp\.(up|down)_proj/; write \/ for a slash")
        i = column + 1
        while i < len(self.q) and self.q[i] != "/":
            i += 2 if self.q[i] == "\\" else 1
        if i >= len(self.q):
            self.fail("this regex is never closed", column, r"end it with / (write \/ for a slash inside it)")
        raw = self.q[column + 1 : i]
        if not raw:
            self.fail("empty regex", column, "name:/…/ needs a pattern; `all` selects every module")
        from targetsel.query.patterns import compile_regex

        try:
            compile_regex(raw)  # `\/` is a valid escape, so error positions are columns of `raw`
        except PatternError as exc:
            pos = getattr(exc, "pos", None)
            self.fail(f"bad regex: {getattr(exc, 'reason', exc)}", column + 1 + (pos or 0))
        self.pos = i + 1
        return self.node(N.NameRegex, column, pattern=raw)

    def atom_glob(self, start: int):
        pattern, column = self.value(start, "a dotted glob")
        from targetsel.query.globs import glob_to_regex

        try:
            glob_to_regex(pattern)
        except PatternError as exc:
            self.fail(str(exc), column)
        return self.node(N.Glob, column, pattern=pattern)

    def atom_under(self, start: int):
        if self.pos < len(self.q) and self.q[self.pos] == "(":
            open_at = self.pos
            self.pos += 1
            inner = self.group(open_at, "under:(…) ends with ')'")
            return self.node(N.Under, open_at, of=inner)
        prefix, column = self.value(start, "a module name or (a query)")
        return self.node(N.Under, column, prefix=prefix)

    def atom_layers(self, start: int):
        from targetsel.query.layerspec import parse_range_text

        column = self.pos
        i = column
        while i < len(self.q) and self.q[i] in _LAYER_CHARS:
            # A '-' is a minus sign only where a number starts (the start of the spec, after ',' or
            # '..') and a digit follows; anywhere else it is the difference operator: layers:-4..-2
            # is one spec, layers:-4..-trainable a difference.
            if self.q[i] == "-" and (
                (i > column and self.q[i - 1] not in ",.") or not (i + 1 < len(self.q) and self.q[i + 1].isdigit())
            ):
                break
            i += 1
        text = self.q[column:i]
        if not text:
            self.fail("layers: needs block indices", column, f"e.g. {_EXAMPLES['layers']}")
        try:
            ranges = parse_range_text(text)
        except LayerSpecError as exc:
            self.fail(str(exc), column)
        self.pos = i
        within = None
        if self.pos < len(self.q) and self.q[self.pos] == "@":
            self.pos += 1
            within, _ = self.value(start, "the name of the block container")
        elif self.pos < len(self.q) and not self.q[self.pos].isspace() and self.q[self.pos] not in OPERATOR_CHARS:
            self.fail(f"unexpected character {self.q[self.pos]!r} in a layer spec", self.pos, f"e.g. {_EXAMPLES['layers']}")
        return self.node(N.Layers, column, ranges=ranges, within=within)

    def atom_component(self, start: int):
        name, column = self.value(start, "a component name")
        if name.lower() not in N.COMPONENTS:
            self.fail(
                f"unknown component {name!r}",
                column,
                _did_you_mean(name.lower(), N.COMPONENTS) or f"components: {', '.join(N.COMPONENTS)}",
            )
        return self.node(N.Component, column, name=name.lower())


_EXAMPLES = {
    "type": "type:Linear (isinstance) or type:=Linear (exact class)",
    "name": r"name:/mlp\.(up|down)_proj/",
    "glob": "glob:**.self_attn.{q,v}_proj",
    "under": "under:vision_tower or under:(type:VisionTower)",
    "layers": "layers:0..3, layers:-4.., layers:0..3,8@vision_tower.layers",
    "component": "component:vision",
}


def _did_you_mean(word: str, candidates, suffix: str = "") -> Optional[str]:
    near = closest(word + suffix, list(candidates)) or closest(word, [c.rstrip(":") for c in candidates])
    if not near:
        return None
    return "did you mean " + " or ".join(f"`{c}`" for c in near) + "?"


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
