"""Build compact, exact `re` regexes for a set of module names.

Names are split into *templates* (the name with each numeric segment replaced by a slot) and,
per template, the set of integer tuples that fill the slots. Integer sets become range regexes
(`(?:[3-5][0-9]|60)`), tuple sets are factored into Cartesian blocks, and templates that differ in
one literal segment merge into an alternation (`(?:gate|up|down)_proj` stays readable as
`(?:gate_proj|up_proj|down_proj)`). The result matches exactly the given names — by
construction, since every part describes a finite set precisely — and callers check it anyway.

Digits are ASCII `[0-9]`, never `\\d`: PEFT runs `re.fullmatch(pattern, name)` with default flags,
where `\\d` is any Unicode decimal digit, so `layers\\.\\d` would also match `layers.٣` (a module
name torch allows). A segment of other digits is a literal, like any word.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Iterable

_CANONICAL_INT = re.compile(r"0|[1-9][0-9]*")  # ASCII digits only: see the module docstring
_DIGIT = "[0-9]"


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


def int_range_regex(lo: int, hi: int) -> str:
    """A regex (no anchors) matching exactly the canonical decimal integers lo..hi."""
    if lo < 0 or hi < lo:
        raise ValueError(f"bad integer range {lo}..{hi}")
    alts = []
    start = lo
    while start <= hi:
        digits = len(str(start))
        end = min(hi, 10**digits - 1)
        alts += _range_same_length(str(start), str(end))
        start = end + 1
    return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"


def int_set_regex(values: Iterable[int]) -> str:
    """A regex matching exactly the canonical decimal forms of `values` (runs become ranges)."""
    vals = sorted(set(values))
    runs: list[tuple[int, int]] = []
    for v in vals:
        if runs and runs[-1][1] == v - 1:
            runs[-1] = (runs[-1][0], v)
        else:
            runs.append((v, v))
    parts = []
    for lo, hi in runs:
        r = int_range_regex(lo, hi)
        parts.append(r[3:-1] if r.startswith("(?:") else r)
    return parts[0] if len(parts) == 1 and "|" not in parts[0] else "(?:" + "|".join(parts) + ")"


def _split(name: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """('model', None, 'mlp') style template (None marks a numeric slot) and the slot values."""
    template, values = [], []
    for seg in name.split("."):
        if _CANONICAL_INT.fullmatch(seg):
            template.append(None)
            values.append(int(seg))
        else:
            template.append(seg)
    return tuple(template), tuple(values)


def _blocks(tuples: frozenset) -> list[tuple[frozenset, ...]]:
    """Cover a set of equal-length int tuples by disjoint Cartesian blocks (one frozenset per slot)."""
    first = next(iter(tuples))
    if len(first) == 0:
        return [()]
    if len(first) == 1:
        return [(frozenset(t[0] for t in tuples),)]
    rest_by_head: dict[int, set] = defaultdict(set)
    for t in tuples:
        rest_by_head[t[0]].add(t[1:])
    heads_by_rest: dict[frozenset, set] = defaultdict(set)
    for head, rest in rest_by_head.items():
        heads_by_rest[frozenset(rest)].add(head)
    out = []
    for rest, heads in sorted(heads_by_rest.items(), key=lambda kv: min(kv[1])):
        for block in _blocks(rest):
            out.append((frozenset(heads),) + block)
    return out


def _render(template: tuple, block: tuple) -> list[str]:
    """Template segments rendered as regex pieces, numeric slots filled from the block."""
    pieces, k = [], 0
    for seg in template:
        if seg is None:
            pieces.append(int_set_regex(block[k]))
            k += 1
        else:
            pieces.append(re.escape(seg))
    return pieces


def _merge_alternatives(rows: list[list[str]]) -> list[list[str]]:
    """Merge rows (lists of regex pieces) that differ in exactly one position into an alternation."""
    changed = True
    while changed:
        changed = False
        by_shape: dict[tuple, list[int]] = defaultdict(list)
        for length in {len(r) for r in rows}:
            for pos in range(length):
                by_shape.clear()
                for idx, r in enumerate(rows):
                    if len(r) == length:
                        by_shape[tuple(r[:pos]) + ("\0",) + tuple(r[pos + 1 :])].append(idx)
                merged_any = False
                used: set[int] = set()
                new_rows = []
                for key, idxs in by_shape.items():
                    if len(idxs) < 2:
                        continue
                    alts = []
                    for i in idxs:
                        piece = rows[i][pos]
                        alts += _alternatives_of(piece)
                    row = list(rows[idxs[0]])
                    row[pos] = "(?:" + "|".join(dict.fromkeys(alts)) + ")"
                    new_rows.append(row)
                    used.update(idxs)
                    merged_any = True
                if merged_any:
                    rows = [r for i, r in enumerate(rows) if i not in used] + new_rows
                    changed = True
                    break
            if changed:
                break
    return rows


def _alternatives_of(piece: str) -> list[str]:
    """Split a piece we built as `(?:a|b)` back into its top-level alternatives."""
    if not (piece.startswith("(?:") and piece.endswith(")")):
        return [piece]
    body, depth, cur, out = piece[3:-1], 0, [], []
    for i, c in enumerate(body):
        escaped = i > 0 and body[i - 1] == "\\"
        if c in "([" and not escaped:
            depth += 1
        elif c in ")]" and not escaped:
            depth -= 1
        if c == "|" and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    out.append("".join(cur))
    if depth != 0 or len(out) == 1:
        return [piece]
    return out


def names_regex(names: Iterable[str]) -> str:
    """A compact regex (for `re.fullmatch`, no anchors) matching exactly `names`."""
    by_template: dict[tuple, set] = defaultdict(set)
    for name in names:
        template, values = _split(name)
        by_template[template].add(values)
    if not by_template:
        raise ValueError("names_regex needs at least one name")
    rows = []
    for template in sorted(by_template, key=lambda t: tuple("" if s is None else s for s in t)):
        for block in _blocks(frozenset(by_template[template])):
            rows.append(_render(template, block))
    rows = _merge_alternatives(rows)
    alts = sorted("\\.".join(r) for r in rows)
    return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
