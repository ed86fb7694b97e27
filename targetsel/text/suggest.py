"""Near spellings: `closest` finds them, `suggest` says "did you mean …?" — the one way targetsel does either.

Every message that proposes another spelling (an unknown atom, component, class, module name)
is built by `suggest`, so they all read alike; messages that list near names for another reason
("closest names: …" in a diagnosis) take `closest`, so they all find the same names.
"""

from __future__ import annotations

import difflib
from typing import Callable, Iterable

#: How alike (difflib's ratio, 0..1) a candidate must be to count as a near spelling.
CUTOFF = 0.5


def closest(word: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """At most `n` distinct candidates at least `CUTOFF` alike to `word`, the nearest first."""
    return difflib.get_close_matches(word, list(dict.fromkeys(candidates)), n=n, cutoff=CUTOFF)


def code(text: str) -> str:
    """A word of the query language or a class name, as a suggestion shows it: `` `Linear` ``."""
    return f"`{text}`"


def suggest(word: str, candidates: Iterable[str], *, n: int = 3, show: Callable[[str], str] = code,
            what: str = "") -> str:
    """`did you mean `a`?` / `did you mean `a`, `b` or `c`?`, or "" when no candidate is near `word`.

    `show` writes one candidate: `code` (backticks) for words and class names, `repr` for module
    names, which may hold any character. `what` says where the candidates come from and stands
    before the question mark: `did you mean `Linear` (classes in this model)?`.
    """
    near = [show(c) for c in closest(word, candidates, n)]
    if not near:
        return ""
    listed = near[0] if len(near) == 1 else f"{', '.join(near[:-1])} or {near[-1]}"
    return f"did you mean {listed}{' ' + what if what else ''}?"
