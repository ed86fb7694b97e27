"""Dotted globs over module names: `*` one segment, `**` any number, `?`, `[qkv]`, `{q,k}`, `{0..31}`.

A glob is translated once into a `regex` pattern (cached) and checked there; the longest plain run
it requires (`glob_literal`) lets evaluation skip most names before any regex runs.
"""

from __future__ import annotations

import functools
import math

import regex

from targetsel.errors import PatternError
from targetsel.query.name_table import NameTable, compile_line_regex, match
from targetsel.query.patterns import MAX_PATTERN_NESTING, _lone_surrogate, describe
from targetsel.query.regex_shape import shape

#: The largest number a glob's `{A..B}` range may hold (what fits a signed 64-bit integer).
MAX_GLOB_NUMBER = 2**63 - 1


def _glob_braces(body: str, pattern: str, depth: int) -> str:
    """`{a,b}` → alternation; an alternative `A..B` is the integers A to B (`{0..3,7}`)."""
    from targetsel.text.names_regex import int_range_regex

    alts = []
    for part in _split_top_level(body, ","):
        lo, dots, hi = part.partition("..")
        if dots:
            low, high = _glob_number(lo), _glob_number(hi)
            if low is None or high is None:
                raise PatternError(f"glob {pattern!r}: bad numeric range {part!r} in {{{body}}}; write A..B with A <= B")
            if high > MAX_GLOB_NUMBER:
                raise PatternError(
                    f"glob {pattern!r}: the range {part!r} goes past {MAX_GLOB_NUMBER}, the largest number a glob "
                    "range may hold; block numbers are far smaller — use * for any number"
                )
            if low > high:
                raise PatternError(f"glob {pattern!r}: bad numeric range {part!r} in {{{body}}}; write A..B with A <= B")
            alts.append(int_range_regex(low, high))
        else:
            alts.append(_glob_segment_chars(part, pattern, depth))
    return "(?:" + "|".join(alts) + ")"


def _glob_number(text: str) -> "int | None":
    """The number written in ASCII digits (`'²'.isdigit()` holds, `int('²')` fails); None if not one.

    Past MAX_GLOB_NUMBER the value is only told to be too large: int() refuses 4300 digits and more.
    """
    if not (text.isascii() and text.isdigit()):
        return None
    return int(text) if len(text.lstrip("0")) <= 19 else MAX_GLOB_NUMBER + 1


def _glob_segment_chars(text: str, pattern: str, depth: int = 0) -> str:
    out = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "*":
            out.append("[^.]*")
        elif c == "?":
            out.append("[^.]")
        elif c == "[":
            j = text.find("]", i + 1)
            if j < 0:
                raise PatternError(f"glob {pattern!r}: '[' at {i} is never closed")
            cls = text[i + 1 : j]
            if cls.startswith("!"):
                cls = "^" + cls[1:]
            if cls in ("", "^"):
                raise PatternError(
                    f"glob {pattern!r}: the character class {text[i:j + 1]!r} is empty; write [qkv] for one of "
                    "q, k, v or [!qkv] for any other character"
                )
            out.append("[" + cls.replace("\\", "\\\\") + "]")
            i = j
        elif c == "{":
            if depth >= MAX_PATTERN_NESTING:
                raise PatternError(
                    f"glob {pattern!r}: '{{…}}' nests deeper than {MAX_PATTERN_NESTING} levels; "
                    "list the alternatives in one {a,b,c} instead"
                )
            level, j = 1, i + 1
            while j < len(text) and level:
                level += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            if level:
                raise PatternError(f"glob {pattern!r}: '{{' is never closed")
            out.append(_glob_braces(text[i + 1 : j - 1], pattern, depth + 1))
            i = j - 1
        elif c in "}]":
            raise PatternError(f"glob {pattern!r}: unmatched {c!r}")
        else:
            out.append(regex.escape(c))
        i += 1
    return "".join(out)


def glob_to_regex(pattern: str) -> str:
    """A dotted glob as a `re`-compatible regex for full matching.

    `*` matches within one name segment, `**` zero or more whole segments, `?` one character,
    `[qkv]` a class, `{q,k}` alternatives and `{0..31}` an integer range — so the groups
    targetsel displays (`layers.{0..31}.self_attn.{q,k,v}_proj`) paste back as globs.
    """
    if not isinstance(pattern, str) or not pattern:
        raise PatternError(f"a glob must be a non-empty string, got {describe(pattern)}")
    return _glob_to_regex(pattern)


@functools.lru_cache(maxsize=512)
def _glob_to_regex(pattern: str) -> str:
    surrogate = _lone_surrogate(pattern)
    if surrogate is not None:
        raise PatternError(f"glob {pattern!r}: {surrogate[0]} at {surrogate[1]}")
    text = _glob_regex_text(pattern)
    try:
        regex.compile(text)
    except regex.error as exc:  # what the translation passes through unchecked: class ranges such as [z-a]
        raise PatternError(f"glob {pattern!r}: {exc.msg}") from None
    return text


def _glob_regex_text(pattern: str) -> str:
    segments = _split_top_level_dots(pattern)
    for seg in segments:
        if not seg:
            raise PatternError(f"glob {pattern!r}: empty segment (two dots in a row, or a leading/trailing dot)")
        if "**" in seg and seg != "**":
            raise PatternError(f"glob {pattern!r}: '**' must be a whole segment, as in 'a.**.b'")
    # `**.**` means what `**` means; collapsing also keeps the separator rule below simple.
    segments = [seg for k, seg in enumerate(segments) if not (seg == "**" and k and segments[k - 1] == "**")]
    if segments == ["**"]:
        return "[^.]+(?:\\.[^.]+)*"
    out = []
    for k, seg in enumerate(segments):
        if seg == "**":
            # Zero or more segments: the separator travels with each repeated segment.
            out.append("(?:[^.]+\\.)*" if k == 0 else "(?:\\.[^.]+)*")
            continue
        sep = "" if k == 0 or segments[k - 1] == "**" and k == 1 else "\\."
        out.append(sep + _glob_segment_chars(seg, pattern))
    return "".join(out)


def _split_top_level_dots(pattern: str) -> list[str]:
    """Split on dots outside `{…}` and `[…]` (so `{0..31}` stays one segment)."""
    return _split_top_level(pattern, ".")


def _split_top_level(text: str, separator: str) -> list[str]:
    """Split on `separator` outside `{…}` and `[…]` (so `{a,{b,c}}` has two alternatives)."""
    parts, depth, current = [], 0, []
    for c in text:
        if c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
        if c == separator and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
    parts.append("".join(current))
    return parts


@functools.lru_cache(maxsize=512)
def compile_glob(pattern: str) -> "regex.Pattern[str]":
    return regex.compile(glob_to_regex(pattern))


def glob_names(pattern: str, names: list[str], indices: list[int], table: "NameTable | None" = None) -> list[int]:
    """The indices (of `names`) whose full name the glob matches.

    With `table` (the same names joined once, `NameTable(names)`), the glob's regex is read like a
    user regex (query/regex_shape.py): literal globs are answered by string tests alone, the others
    by one scan over the names their literal text leaves. A translated glob cannot backtrack
    without bound on its own, so it runs without the user-regex time budget, as it always has.
    """
    bulk = _glob_bulk(pattern)
    if bulk is not None and indices:
        table = table if table is not None else NameTable(names)
        if table.newline_free:
            return match(table, indices, *bulk, math.inf, fullmatch=compile_glob(pattern).fullmatch)
    full = compile_glob(pattern).fullmatch
    literal = glob_literal(pattern)  # '' for globs without one: `'' in name` always holds
    return [i for i in indices if literal in names[i] and full(names[i])]


def glob_digit_blind(pattern: str) -> bool:
    """Does the glob treat every ASCII digit alike (no digit written, no class or range naming some)?"""
    found = shape("^(?:" + glob_to_regex(pattern) + ")$")
    return found is not None and found.digit_blind


@functools.lru_cache(maxsize=512)
def _glob_bulk(pattern: str):
    # A full match is a search anchored at both ends, for names without a newline.
    found = shape("^(?:" + glob_to_regex(pattern) + ")$")
    line_regex = compile_line_regex(found) if found is not None else None
    return (found, line_regex) if line_regex is not None else None


@functools.lru_cache(maxsize=512)
def glob_literal(pattern: str) -> str:
    """The longest run of plain characters every name the glob matches must contain ('' if none).

    A substring test costs a tenth of a regex call, so globs scan 60k names by this first and run
    the regex only on the names that contain it (`**.experts.*.down_proj` → `down_proj`).
    """
    runs, depth, current, i = [], 0, [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "[":  # a class runs to the first ']', as the translation reads it: `[!}3]` holds no literal
            end = pattern.find("]", i + 1)
            i = len(pattern) if end < 0 else end + 1
            runs.append("".join(current))
            current = []
            continue
        depth += {"{": 1, "}": -1}.get(c, 0)
        if depth or c in "*?.}":
            runs.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    runs.append("".join(current))
    return max(runs, key=len)
