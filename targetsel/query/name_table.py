"""Many module names matched at once: string tests at C speed first, then one regex scan over the rest.

`NameTable` holds the names of one model joined by "\\n" (built once per model index). `match`
answers "which of these names does the regex find a match in" from the regex's `Shape`
(regex_shape.py): an exact literal shape is answered by `str.startswith`/`endswith`/`in`/`==`
alone; otherwise the literal filters drop the names that cannot match, and the `regex` engine runs
once over the survivors joined by newlines — with the caller's time budget checked by the engine
within each search and here between matches.
"""

from __future__ import annotations

import math
import re
import time
from itertools import accumulate, compress, count
from operator import add, methodcaller
from typing import Callable, Optional

import regex

from targetsel.query.regex_shape import Shape


class NameTable:
    """The names of one model (positions are indices into `names`), joined once for bulk scans."""

    __slots__ = ("names", "joined", "newline_free", "_line_of_end", "_forms")

    def __init__(self, names: list[str]):
        self.names = names
        self.joined = "\n".join(names)
        # A name holding "\n" would let a match span two names in the joined text: those tables
        # are matched name by name (torch accepts any module name without a dot).
        self.newline_free = self.joined.count("\n") == max(len(names) - 1, 0)
        self._line_of_end: Optional[dict] = None
        self._forms: Optional[tuple] = None

    def line_of_end(self) -> dict:
        """End offset of each name in `joined` → its position."""
        if self._line_of_end is None:
            self._line_of_end = _line_ends(self.names, range(len(self.names)))
        return self._line_of_end


    def forms(self) -> "tuple[list[str], list[int]]":
        """(the distinct names with every ASCII digit written 0, the form of each name): a digit-blind
        regex (`Shape.digit_blind`) matches a name iff it matches its form, and a model of 60k
        modules has a few hundred forms (`model.layers.00.mlp.experts.000.up_proj`)."""
        if self._forms is None:
            written = list(map(_DIGITS_AS_ZERO, self.names))
            forms = list(dict.fromkeys(written))
            self._forms = forms, list(map(dict(zip(forms, count())).__getitem__, written))
        return self._forms


_DIGITS_AS_ZERO = methodcaller("translate", str.maketrans("123456789", "000000000"))


def _line_ends(names: list[str], positions) -> dict:
    return dict(zip(map(add, accumulate(map(len, names)), count()), positions))


_LINE_END = methodcaller("end")
_TESTS = {"prefix": str.startswith, "suffix": str.endswith, "contains": lambda name, texts: True,
          "equal": lambda name, texts: name in texts}


def _filter(table: NameTable, positions, kind: str, texts) -> list[int]:
    """The positions whose name starts with / ends with / equals / contains one of `texts`."""
    names = table.names
    texts = tuple(sorted(texts))
    if kind == "contains" and "" in texts:
        return list(positions)
    if len(positions) == len(names) and len(texts) <= 8 and table.newline_free:
        # Over all names, a text few names hold is found faster by C's string search over the
        # joined names (then one test per name holding it) than by a test per name.
        joined = table.joined
        if 8 * sum(map(joined.count, texts)) < len(names):
            return _scan(table, kind, texts)
    if kind == "prefix":
        return [i for i in positions if names[i].startswith(texts)]
    if kind == "suffix":
        return [i for i in positions if names[i].endswith(texts)]
    if kind == "equal":
        wanted = frozenset(texts)
        return [i for i in positions if names[i] in wanted]
    if len(texts) == 1:
        text = texts[0]
        return [i for i in positions if text in names[i]]
    search = re.compile("|".join(map(re.escape, texts))).search
    return [i for i in positions if search(names[i])]


def _scan(table: NameTable, kind: str, texts: tuple) -> list[int]:
    joined, names, line_of_end = table.joined, table.names, table.line_of_end()
    test = _TESTS[kind]
    wanted = frozenset(texts) if kind == "equal" else texts
    found: dict[int, None] = {}
    # Escaped literal alternatives only: the standard library's engine cannot backtrack badly on them.
    for m in re.finditer("|".join(map(re.escape, texts)), joined):
        end = joined.find("\n", m.end())
        position = line_of_end[len(joined) if end < 0 else end]
        if position not in found and test(names[position], wanted):
            found[position] = None
    return sorted(found)


def _exact(table: NameTable, positions: list[int], branches) -> list[int]:
    """The names one of the literal branches (anchored at the start?, at the end?, texts) accepts."""
    found: set[int] = set()
    for lead, trail, texts in branches:
        kind = "equal" if lead and trail else "prefix" if lead else "suffix" if trail else "contains"
        hits = _filter(table, positions, kind, texts)
        if len(branches) == 1:
            return hits
        found.update(hits)
    return sorted(found)


def named(table: NameTable, name: str) -> list[int]:
    """Positions whose name is `name` or ends with '.' + `name` (PEFT's suffix rule), in order."""
    names = table.names
    if not name or "\n" in name or not table.newline_free:
        dotted = "." + name
        return [i for i, n in enumerate(names) if n == name or n.endswith(dotted)]
    # One C search over the joined names for the lines ending with `name`, then the dot test on those:
    # a name asked of `under:` ends a few dozen lines among 60k.
    joined, line_of_end, size = table.joined, table.line_of_end(), len(name)
    needle, dotted, found, at = name + "\n", "." + name, [], joined.find(name + "\n")
    while at >= 0:
        position = line_of_end.get(at + size)
        if position is not None and (names[position] == name or names[position].endswith(dotted)):
            found.append(position)
        at = joined.find(needle, at + 1)
    last = len(names) - 1
    if joined.endswith(name) and (names[last] == name or names[last].endswith(dotted)):
        found.append(last)
    return found


def compile_line_regex(found: Shape) -> "Optional[regex.Pattern[str]]":
    flags = regex.VERSION0 | regex.MULTILINE
    flags |= regex.IGNORECASE if found.ignore_case else 0
    flags |= regex.ASCII if found.ascii else 0
    try:
        return regex.compile(found.line_regex, flags=flags)
    except Exception:  # noqa: BLE001 - a rewrite the engine refuses: the caller matches name by name
        return None


def match(table: NameTable, positions: list[int], found: Shape, line_regex: "regex.Pattern[str]",
          deadline: float, fullmatch: "Optional[Callable[[str], object]]" = None) -> list[int]:
    """The positions (a sorted subset of `positions`) whose name the regex of `found` searches
    successfully. Raises TimeoutError past `deadline` (time.monotonic(); `math.inf`: no budget);
    the engine's own errors pass. `fullmatch`: a trusted regex's (a glob's) own test, run on each
    name the filters leave instead of the line scan (faster where every line must be anchored)."""
    names = table.names
    if found.branches is not None:
        return _exact(table, positions, found.branches)
    for kind, texts in found.filters:
        positions = _filter(table, positions, kind, texts)
        if not positions:
            return []
    if fullmatch is not None:
        return list(compress(positions, map(fullmatch, map(names.__getitem__, positions))))
    if len(positions) == len(names):
        text, line_of_end = table.joined, table.line_of_end()
    else:
        subset = list(map(names.__getitem__, positions))
        text, line_of_end = "\n".join(subset), _line_ends(subset, positions)
    kept: list[int] = []
    last = -1
    # The line regex ends in [^\n]*, so each match ends where its name ends: one dict lookup says which.
    if deadline == math.inf:  # a trusted regex: no budget, and no Python code per match
        return list(dict.fromkeys(map(line_of_end.__getitem__, map(_LINE_END, line_regex.finditer(text)))))
    clock = time.monotonic
    remaining = deadline - clock()
    if remaining <= 0:
        raise TimeoutError
    for m in line_regex.finditer(text, timeout=remaining):
        position = line_of_end[m.end()]
        if position != last:
            kept.append(position)
            last = position
        if clock() > deadline:  # the engine's timeout restarts at each match
            raise TimeoutError
    return kept
