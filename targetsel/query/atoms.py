"""The atoms of the query language: `linear`, `type:Linear`, `name:/…/`, `glob:…`, `under:…`, `layers:…`, `component:…`.

Each `atom_KEY` reads its value with the rule of its own atom (a regex between slashes, a layer
list whose `-` may be a minus sign) and builds its node; the node's class checks the value
(`fields.py`) and the scanner puts what it refuses at the value's column. A new keyed atom is a
node class, a key in `KEYED`, an `atom_KEY` method and an example in `scanner.EXAMPLES`.
"""

from __future__ import annotations

from targetsel.errors import PatternError
from targetsel.query import nodes as N
from targetsel.query.fields import written_position
from targetsel.query.layerspec import parse_range_text
from targetsel.query.scanner import EXAMPLES, OPERATOR_CHARS, Scanner
from targetsel.text.suggest import suggest

FLAGS = {kind: N.Flag(kind=kind) for kind in N.FLAG_KINDS}
KEYED = ("type", "name", "glob", "under", "layers", "component")

_LAYER_CHARS = frozenset("0123456789.,-")


class AtomReader(Scanner):
    """Reads one atom at `self.pos`; `group` (a parenthesised query, for `under:(…)`) is the grammar's."""

    def group(self, open_at: int, hint: str):
        raise NotImplementedError  # parser._Parser reads the query inside the parentheses

    def parse_atom(self):
        start = self.pos
        end = self.word_end(start)
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
                hint = _near_atom(key + ":") or f"atoms with a value: {', '.join(k + ':' for k in KEYED)}"
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
            self.fail(f"{key} needs a value after a colon, e.g. {EXAMPLES[key]}", start)
        hint = _near_atom(key)
        if not hint:
            hint = (
                f"to select modules by name write glob:**.{word} or name:/{word}/; "
                f"atoms: {', '.join(FLAGS)}, {', '.join(k + ':' for k in KEYED)}"
            )
        self.fail(f"unknown atom {word!r}", start, hint)

    def atom_type(self, start: int):
        exact = self.pos < len(self.q) and self.q[self.pos] == "="
        if exact:
            self.pos += 1
        name, column = self.value(start, "a class name")
        return self.build(column, N.TypeIs, name=name, exact=exact)

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
        self.pos = i + 1
        try:
            return N.NameRegex(pattern=raw)
        except PatternError as exc:
            if not hasattr(exc, "reason"):
                self.refuse(exc, column)
            # The regex engine's complaint, under its column inside the regex as written (`\/` and all).
            self.fail(f"bad regex: {exc.reason}", column + 1 + written_position(raw, exc.pos or 0))  # type: ignore[attr-defined]

    def atom_glob(self, start: int):
        pattern, column = self.value(start, "a dotted glob")
        return self.build(column, N.Glob, pattern=pattern)

    def atom_under(self, start: int):
        if self.pos < len(self.q) and self.q[self.pos] == "(":
            open_at = self.pos
            self.pos += 1
            inner = self.group(open_at, "under:(…) ends with ')'")
            return self.build(open_at, N.Under, of=inner)
        prefix, column = self.value(start, "a module name or (a query)")
        return self.build(column, N.Under, prefix=prefix)

    def atom_layers(self, start: int):
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
            self.fail("layers: needs block indices", column, f"e.g. {EXAMPLES['layers']}")
        ranges = self.build(column, parse_range_text, text)
        self.pos = i
        within = None
        if self.pos < len(self.q) and self.q[self.pos] == "@":
            self.pos += 1
            within, _ = self.value(start, "the name of the block container")
        elif self.pos < len(self.q) and not self.q[self.pos].isspace() and self.q[self.pos] not in OPERATOR_CHARS:
            self.fail(f"unexpected character {self.q[self.pos]!r} in a layer spec", self.pos, f"e.g. {EXAMPLES['layers']}")
        return self.build(column, N.Layers, ranges=ranges, within=within)

    def atom_component(self, start: int):
        name, column = self.value(start, "a component name")
        return self.build(column, N.Component, name=name.lower())  # words of the language: any case


def _near_atom(word: str) -> str:
    """'did you mean `trainable`?' for a misspelt atom; `word` ends with ':' where a value followed."""
    keyed = [k + ":" for k in KEYED]
    candidates = keyed if word.endswith(":") else [*FLAGS, *keyed]
    return suggest(word, candidates) or suggest(word.rstrip(":"), [c.rstrip(":") for c in candidates])
