"""The query scanner: reading tokens and values at a column, and failing at one.

`Scanner` holds the query and the column of the next unread character. The grammar (`parser.py`)
and the atoms (`atoms.py`) read through it, and every error leaves through `fail`, which raises a
`QuerySyntaxError` with a caret under the column — including the errors the node classes raise
while checking what an atom holds (`build`).
"""

from __future__ import annotations

from typing import Optional

from targetsel.errors import QuerySyntaxError, TargetselError
from targetsel.query.printing import SAFE_VALUE_CHARS
from targetsel.query.tree import DEPTH_ADVICE, MAX_DEPTH

WORD_OPERATORS = {"and": "&", "or": "|", "not": "!"}
OPERATOR_CHARS = "&|!-()"

_WORD_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")

#: How each keyed atom is written, for the hints of errors that stop at one.
EXAMPLES = {
    "type": "type:Linear (isinstance) or type:=Linear (exact class)",
    "name": r"name:/mlp\.(up|down)_proj/",
    "glob": "glob:**.self_attn.{q,v}_proj",
    "under": "under:vision_tower or under:(type:VisionTower)",
    "layers": "layers:0..3, layers:-4.., layers:0..3,8@vision_tower.layers",
    "component": "component:vision",
}


class Scanner:
    """One pass over the query; `self.pos` is the column of the next unread character."""

    def __init__(self, query: str):
        self.q = query
        self.pos = 0

    # -------------------------------------------------------------- errors

    def fail(self, message: str, pos: int, hint: Optional[str] = None):
        # Point at a character of the query, never past its end: an error "at the end" is shown
        # under the last character, which is what the user has to extend or fix.
        pos = min(max(pos, 0), max(len(self.q) - 1, 0))
        raise QuerySyntaxError(message, self.q, pos, hint)

    def build(self, column: int, make, *args, **fields):
        """`make(*args, **fields)` — a node class or a smart constructor of nodes.py; what the node
        refuses (a value's check, the selector's limits) fails at `column`."""
        try:
            return make(*args, **fields)
        except TargetselError as exc:
            self.refuse(exc, column)

    def refuse(self, exc: TargetselError, column: int):
        if getattr(exc, "depth", None) is not None:
            self.fail(f"the query nests deeper than {MAX_DEPTH} levels", column, DEPTH_ADVICE)
        if getattr(exc, "hint", None):  # errors.hinted: the reason at the column, the hint below
            self.fail(exc.reason, column, exc.hint)  # type: ignore[attr-defined]
        self.fail(str(exc), column)

    # -------------------------------------------------------------- tokens

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
        word_end = self.word_end(self.pos)
        word = self.q[self.pos : word_end].lower()
        if word in WORD_OPERATORS and (word_end >= len(self.q) or self.q[word_end] != ":"):
            return WORD_OPERATORS[word], self.pos, word_end
        return None

    def word_end(self, i: int) -> int:
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
        end = self.word_end(self.pos)
        return f"{self.q[self.pos:max(end, self.pos + 1)]!r}"

    # -------------------------------------------------------------- values

    def value(self, key_start: int, what: str, stop_chars: str = "") -> tuple[str, int]:
        """A bare value (a run of safe characters) or a "quoted" one; returns (text, column)."""
        start = self.pos
        if start < len(self.q) and self.q[start] == '"':
            return self.quoted(start), start
        i = start
        while i < len(self.q) and self.q[i] in SAFE_VALUE_CHARS and self.q[i] not in stop_chars:
            i += 1
        if i == start:
            key = self.q[key_start : self.word_end(key_start)].lower()
            found = "the end of the query" if start >= len(self.q) else repr(self.q[start])
            self.fail(f"{key}: needs {what}, found {found}", start, f"e.g. {EXAMPLES[key]}")
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
