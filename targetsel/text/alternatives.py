"""The alternatives of a regex, each as a regex of its own — only where that is exact.

`.*\\.(q_proj|v_projj)` matches a name through `q_proj` exactly when `.*\\.(q_proj)` matches it, so
an alternative that matches no module name is dead. That substitution is exact for an alternation
of the whole regex and for a group that no other group encloses, holds no group itself and is not
repeated: `(a|b)+` matches `ab` through both alternatives at once, and a backreference or an inline
flag changes what the parts mean. Anything else gives no alternatives (the whole regex is judged
as one entry), never a guess.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

_QUANTIFIERS = "*+?{"


class Alternative(NamedTuple):
    text: str  # the alternative as written
    regex: str  # the regex that matches exactly the strings matched through this alternative


def alternatives(pattern: str) -> list[Alternative]:
    """Each alternative of `pattern`'s alternations that can be judged alone; [] when none can."""
    scanned = _scan(pattern)
    if scanned is None:
        return []
    top_bars, groups = scanned
    if top_bars:
        return _split(pattern, 0, len(pattern), top_bars, lambda alt: f"(?:{alt})")
    out: list[Alternative] = []
    for start, end, bars in groups:  # content spans of the judgeable groups
        out += _split(pattern, start, end, bars, lambda alt, s=start, e=end: pattern[:s] + alt + pattern[e:])
    return out


def _split(pattern: str, start: int, end: int, bars: list[int], rebuild) -> list[Alternative]:
    cuts = [start, *[b + 1 for b in bars]]
    stops = [*bars, end]
    return [Alternative(pattern[a:b], rebuild(pattern[a:b])) for a, b in zip(cuts, stops)]


def _scan(pattern: str) -> Optional[tuple[list[int], list[tuple[int, int, list[int]]]]]:
    """(top-level `|` positions, [(content start, content end, its `|` positions)] of judgeable groups),
    or None where a backreference, an inline flag or a lookaround makes substitution unsafe."""
    top_bars: list[int] = []
    groups: list[tuple[int, int, list[int]]] = []
    stack: list[dict] = []  # open groups: content start, bars, whether a group sits inside
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 < n and pattern[i + 1].isdigit() and pattern[i + 1] != "0":
                return None  # a backreference ties alternatives together
            i += 2
            continue
        if c == "[":
            i = _class_end(pattern, i)
            continue
        if c == "(":
            content = _content_start(pattern, i)
            if content is None:
                return None
            if stack:
                stack[-1]["nested"] = True
            stack.append({"content": content, "bars": [], "nested": False, "depth": len(stack)})
            i = content
            continue
        if c == ")":
            if not stack:
                return None  # unbalanced: re.compile decides what it means, not us
            group = stack.pop()
            repeated = i + 1 < n and pattern[i + 1] in _QUANTIFIERS
            if group["bars"] and not group["nested"] and not repeated and group["depth"] == 0:
                groups.append((group["content"], i, group["bars"]))
        elif c == "|":
            (stack[-1]["bars"] if stack else top_bars).append(i)
        i += 1
    return None if stack else (top_bars, groups)


def _content_start(pattern: str, i: int) -> Optional[int]:
    """Where a group's content starts: after `(`, `(?:` or `(?P<name>`; None for anything else."""
    if pattern.startswith("(?:", i):
        return i + 3
    if pattern.startswith("(?P<", i):
        close = pattern.find(">", i)
        return None if close < 0 else close + 1
    if pattern.startswith("(?", i):
        return None  # lookaround, inline flags, (?P=name): not a plain part of the language
    return i + 1


def _class_end(pattern: str, i: int) -> int:
    """The position after the character class opening at `i` (`[]a]` and `[^]a]` hold a literal `]`)."""
    j = i + 1
    if j < len(pattern) and pattern[j] == "^":
        j += 1
    if j < len(pattern) and pattern[j] == "]":
        j += 1
    while j < len(pattern) and pattern[j] != "]":
        j += 2 if pattern[j] == "\\" else 1
    return j + 1
