"""User patterns: regexes run under the `regex` package with a time budget, and dotted globs.

Regexes come from users (`.name()`, `name:/…/`) and run against every module name of a model
that may have 60k modules, so a catastrophic pattern such as `(a+)+$` must end with an error,
not a hang: the `regex` package supports a per-call timeout, which `re` does not.
"""

from __future__ import annotations

import functools
import time

import regex

from targetsel.errors import PatternError, RegexTimeoutError

#: Wall-clock budget for one user regex over all names of one model.
REGEX_BUDGET_SECONDS = 1.0


@functools.lru_cache(maxsize=512)
def compile_regex(pattern: str) -> "regex.Pattern[str]":
    """Compile a user regex, or raise `PatternError` with the engine's message and column."""
    if not isinstance(pattern, str):
        raise PatternError(f"a name pattern must be a string, got {type(pattern).__name__}: {pattern!r}")
    try:
        return regex.compile(pattern, flags=regex.VERSION0)
    except regex.error as exc:
        pos = getattr(exc, "pos", None)
        where = f" at position {pos}" if pos is not None else ""
        err = PatternError(f"invalid regex /{pattern}/: {exc.msg}{where}")
        err.pattern, err.pos = pattern, pos  # type: ignore[attr-defined]
        raise err from None


def search_names(pattern: str, names: list[str], indices: list[int]) -> list[int]:
    """The indices (of `names`) whose name the regex *searches* successfully, under the time budget."""
    compiled = compile_regex(pattern)
    deadline = time.monotonic() + REGEX_BUDGET_SECONDS
    kept = []
    search = compiled.search
    try:
        # A per-call timeout equal to the remaining budget bounds the whole loop, not just one call.
        for i in indices:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            if search(names[i], timeout=remaining) is not None:
                kept.append(i)
    except TimeoutError:
        raise RegexTimeoutError(
            f"regex /{pattern}/ took more than {REGEX_BUDGET_SECONDS:g}s over {len(indices)} module names "
            "and was stopped (catastrophic backtracking?). Simplify it, e.g. replace nested quantifiers "
            "like (a+)+ with a+, or use glob:/.glob() instead."
        ) from None
    return kept


def _glob_braces(body: str, pattern: str) -> str:
    """`{a,b}` → alternation; an alternative `A..B` is the integers A to B (`{0..3,7}`)."""
    from targetsel.text.names_regex import int_range_regex

    alts = []
    for part in body.split(","):
        lo, dots, hi = part.partition("..")
        if dots:
            if not (lo.isdigit() and hi.isdigit()) or int(lo) > int(hi):
                raise PatternError(f"glob {pattern!r}: bad numeric range {part!r} in {{{body}}}; write A..B with A <= B")
            alts.append(int_range_regex(int(lo), int(hi)))
        else:
            alts.append(_glob_segment_chars(part, pattern))
    return "(?:" + "|".join(alts) + ")"


def _glob_segment_chars(text: str, pattern: str) -> str:
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
            out.append("[" + cls.replace("\\", "\\\\") + "]")
            i = j
        elif c == "{":
            depth, j = 1, i + 1
            while j < len(text) and depth:
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            if depth:
                raise PatternError(f"glob {pattern!r}: '{{' is never closed")
            out.append(_glob_braces(text[i + 1 : j - 1], pattern))
            i = j - 1
        elif c in "}]":
            raise PatternError(f"glob {pattern!r}: unmatched {c!r}")
        else:
            out.append(regex.escape(c))
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=512)
def glob_to_regex(pattern: str) -> str:
    """A dotted glob as a `re`-compatible regex for full matching.

    `*` matches within one name segment, `**` zero or more whole segments, `?` one character,
    `[qkv]` a class, `{q,k}` alternatives and `{0..31}` an integer range — so the groups
    targetsel displays (`layers.{0..31}.self_attn.{q,k,v}_proj`) paste back as globs.
    """
    if not isinstance(pattern, str) or not pattern:
        raise PatternError(f"a glob must be a non-empty string, got {pattern!r}")
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
    parts, depth, current = [], 0, []
    for c in pattern:
        if c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
        if c == "." and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
    parts.append("".join(current))
    return parts


@functools.lru_cache(maxsize=512)
def compile_glob(pattern: str) -> "regex.Pattern[str]":
    return regex.compile(glob_to_regex(pattern))


@functools.lru_cache(maxsize=512)
def glob_literal(pattern: str) -> str:
    """The longest run of plain characters every name the glob matches must contain ('' if none).

    A substring test costs a tenth of a regex call, so globs scan 60k names by this first and run
    the regex only on the names that contain it (`**.experts.*.down_proj` → `down_proj`).
    """
    runs, depth, current = [], 0, []
    for c in pattern:
        if c in "{[":
            depth += 1
        if depth or c in "*?.}]":
            runs.append("".join(current))
            current = []
        else:
            current.append(c)
        if c in "}]":
            depth -= 1
    runs.append("".join(current))
    return max(runs, key=len)
