"""Build compact, exact `re` regexes for a set of module names.

Names are split into *templates* (the name with each numeric segment replaced by a slot) and,
per template, the set of integer tuples that fill the slots (`runs.py`, shared with the display
groups). Integer sets become range regexes (`(?:[3-5][0-9]|60)`), tuple sets are factored into
Cartesian blocks, and rows that differ in one segment merge into an alternation
(`(?:gate_proj|up_proj|down_proj)`). The result matches exactly the given names — by
construction, since every part describes a finite set precisely — and callers check it anyway.

Digits are ASCII `[0-9]`, never `\\d`: PEFT runs `re.fullmatch(pattern, name)` with default flags,
where `\\d` is any Unicode decimal digit, so `layers\\.\\d` would also match `layers.٣` (a module
name torch allows). A segment of other digits is a literal, like any word.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Iterable

from targetsel.text.runs import cartesian_blocks, fill_template, int_runs, merge_rows, split_name

_DIGIT = "[0-9]"  # ASCII digits only: see the module docstring


def _range_same_length(lo: str, hi: str) -> list[str]:
    """Regex alternatives for the integers lo..hi written with the same number of digits."""
    if lo == hi:
        return [lo]
    if len(lo) == 1:
        if lo == "0" and hi == "9":
            return [_DIGIT]
        return [f"[{lo}-{hi}]" if int(hi) - int(lo) > 1 else f"[{lo}{hi}]"]
    if lo[0] == hi[0]:
        return [lo[0] + alt for alt in _range_same_length(lo[1:], hi[1:])]
    n = len(lo) - 1
    out = []
    # lo..(lo[0] followed by 9s), then full middle leading digits, then (hi[0] followed by 0s)..hi
    lo_full = lo[1:] == "0" * n
    hi_full = hi[1:] == "9" * n
    first = int(lo[0]) if lo_full else int(lo[0]) + 1
    last = int(hi[0]) if hi_full else int(hi[0]) - 1
    if not lo_full:
        out += [lo[0] + alt for alt in _range_same_length(lo[1:], "9" * n)]
    if first <= last:
        lead = str(first) if first == last else (f"[{first}{last}]" if last - first == 1 else f"[{first}-{last}]")
        out.append(lead + _DIGIT + (f"{{{n}}}" if n > 1 else ""))
    if not hi_full:
        out += [hi[0] + alt for alt in _range_same_length("0" * n, hi[1:])]
    return out


def _alternatives(values: Iterable[str]) -> str:
    """One regex piece from its alternatives: `a`, or `(?:a|b)`."""
    alts = list(values)
    return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"


def int_range_alternatives(lo: int, hi: int) -> list[str]:
    """Regex alternatives (no group) that together match exactly the canonical decimal integers lo..hi."""
    if lo < 0 or hi < lo:
        raise ValueError(f"bad integer range {lo}..{hi}")
    alts = []
    start = lo
    while start <= hi:
        digits = len(str(start))
        end = min(hi, 10**digits - 1)
        alts += _range_same_length(str(start), str(end))
        start = end + 1
    return alts


def int_range_regex(lo: int, hi: int) -> str:
    """A regex (no anchors) matching exactly the canonical decimal integers lo..hi."""
    return _alternatives(int_range_alternatives(lo, hi))


def int_set_alternatives(values: Iterable[int]) -> tuple[str, ...]:
    """Regex alternatives matching exactly the canonical decimal forms of `values` (runs become ranges)."""
    return tuple(alt for lo, hi in int_runs(values) for alt in int_range_alternatives(lo, hi))


def int_set_regex(values: Iterable[int]) -> str:
    """A regex matching exactly the canonical decimal forms of `values` (runs become ranges)."""
    return _alternatives(int_set_alternatives(values))


def _literal(segment: str) -> tuple[str, ...]:
    return (re.escape(segment),)


def names_regex(names: Iterable[str]) -> str:
    """A compact regex (for `re.fullmatch`, no anchors) matching exactly `names`."""
    by_template: dict[tuple, set] = defaultdict(set)
    for name in names:
        template, values = split_name(name)
        by_template[template].add(values)
    if not by_template:
        raise ValueError("names_regex needs at least one name")
    rows = []
    for template in sorted(by_template, key=lambda t: tuple("" if s is None else s for s in t)):
        for block in cartesian_blocks(frozenset(by_template[template])):
            rows.append((fill_template(template, block, _literal, int_set_alternatives), []))
    # Every cell is a tuple of alternatives, so rows may merge at any segment, numbers included.
    alts = sorted("\\.".join(_alternatives(cell) for cell in cells) for cells, _ in merge_rows(rows))
    return _alternatives(alts)
