"""User regexes, run under the `regex` package with a time budget (globs: `globs.py`).

Regexes come from users (`.name()`, `name:/…/`) and run against every module name of a model
that may have 60k modules, so a catastrophic pattern such as `(a+)+$` must end with an error,
not a hang: the `regex` package supports a per-call timeout, which `re` does not.

The timeout does not cover compiling, nor the engine's own failures, so a few patterns are
refused before the engine sees them (each found by fuzzing the `regex` package):

- counted repeats are unrolled when compiling: `a{4294967294}` allocates gigabytes before it
  fails, `(?:a{1000}){1000}` takes a second and 300 MB. Module names are a few hundred
  characters at most, so the unrolled size is capped at `MAX_REPEAT_EXPANSION`;
- recursion (`(?R)`, `(?1)`, `(?&name)`) under fuzzy matching (`{e<=1}`) overflows the C stack
  and kills the process. Recursive patterns mean nothing for dotted names: refused;
- groups nested past the Python recursion limit of the engine's parser: capped at
  `MAX_PATTERN_NESTING`, for regexes and for `{…}` in globs alike.

Whatever the engine still raises (a `KeyError` for `(?V1)` against the VERSION0 flag passed here,
a `ValueError` for `(?a)(?L)`, a `RuntimeError` from a match) becomes a `PatternError`.
"""

from __future__ import annotations

import functools
import re
import time

import regex

from targetsel.errors import PatternError, RegexTimeoutError
from targetsel.query.name_table import NameTable, compile_line_regex, match
from targetsel.query.regex_shape import shape

#: Wall-clock budget for one user regex over all names of one model.
REGEX_BUDGET_SECONDS = 1.0

#: The deepest nesting of groups in a regex, and of `{…}` in a glob.
MAX_PATTERN_NESTING = 32

#: The most elements counted repeats may unroll a regex to (`a{100000}` compiles in 0.1 s).
MAX_REPEAT_EXPANSION = 100_000

def describe(value) -> str:
    """`list ['a']`: the type and a short repr, for messages about a value of the wrong type.

    Safe for any value: `repr` of an int past 4300 digits raises ValueError, a message must not.
    """
    try:
        shown = repr(value)
    except Exception:  # noqa: BLE001
        shown = f"<{type(value).__name__} object>"
    if len(shown) > 80:
        shown = shown[:60] + f"…({len(shown)} characters)"
    return f"{type(value).__name__} {shown}"


def _printable(text: str) -> str:
    """`text` with lone surrogates written as escapes, so that a message holding it can be printed."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _regex_error(pattern: str, reason: str, pos: "int | None") -> PatternError:
    """`PatternError` with `.pattern`, `.reason` (the message alone) and `.pos` (column in the regex)."""
    where = f" at position {pos}" if pos is not None else ""
    err = PatternError(f"invalid regex /{_printable(pattern)}/: {reason}{where}")
    err.pattern, err.reason, err.pos = pattern, reason, pos  # type: ignore[attr-defined]
    return err


def compile_regex(pattern: str) -> "regex.Pattern[str]":
    """Compile a user regex, or raise `PatternError` with the engine's message and column."""
    if not isinstance(pattern, str):
        raise PatternError(f"a name pattern must be a string, got {describe(pattern)}")
    return _compile_regex(pattern)


@functools.lru_cache(maxsize=512)
def _compile_regex(pattern: str) -> "regex.Pattern[str]":
    refused = _lone_surrogate(pattern) or _refuse_regex(pattern)
    if refused is not None:
        raise _regex_error(pattern, *refused)
    try:
        try:
            compiled = regex.compile(pattern, flags=regex.VERSION0)
        except KeyError:
            # The pattern turns VERSION1 on itself (`(?V1)`), which the regex package reports as a
            # KeyError against the VERSION0 passed above: let the pattern's own flag decide.
            compiled = regex.compile(pattern)
    except regex.error as exc:
        raise _regex_error(pattern, exc.msg, getattr(exc, "pos", None)) from None
    except KeyError:
        raise _regex_error(pattern, "it turns on both VERSION0 (?V0) and VERSION1 (?V1); keep one", None) from None
    except RecursionError:
        raise _regex_error(pattern, "it nests too deeply for the regex engine; simplify its groups", None) from None
    except Exception as exc:  # noqa: BLE001 - the engine's own failures on odd input, e.g. ValueError for (?a)(?L)
        raise _regex_error(pattern, f"the regex engine rejects it ({type(exc).__name__}: {exc})", None) from None
    return _probed(compiled, pattern)


def _probed(compiled: "regex.Pattern[str]", pattern: str) -> "regex.Pattern[str]":
    """Match a few module-like names once, so that the engine's failures while matching (`\\G` under fuzzy
    matching raises RuntimeError('invalid RE code')) are found where the regex is written, not later."""
    for sample in _PROBES:
        try:
            compiled.search(sample, timeout=0.05)
        except TimeoutError:
            pass  # slow is the time budget's business (search_names), not an error in the pattern
        except Exception as exc:  # noqa: BLE001
            raise _regex_error(pattern, f"the regex engine fails on it while matching ({type(exc).__name__}: {exc})", None) from None
    return compiled


_PROBES = ("", "ab", "model.layers.0.self_attn.q_proj")


def _lone_surrogate(text: str) -> "tuple[str, int] | None":
    """Lone surrogates come from bytes that are not UTF-8; JSON (and so a saved selector) cannot hold them."""
    found = LONE_SURROGATE.search(text)
    if found is None:
        return None
    return f"the character {found.group()!r} is a lone surrogate, not text (bytes that were not valid UTF-8); remove it", found.start()


#: Lone surrogates: what undecodable bytes become in a str (argv, files); JSON cannot hold them.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


_RECURSION = re.compile(r"\(\?(?:R|[+-]?[0-9]+|&\w+|P>\w+)\)")
_COUNTED_REPEAT = re.compile(r"\{([0-9]*)(?:,([0-9]*))?\}")
_BRACED_ESCAPE = {"p": "}", "P": "}", "N": "}", "x": "}", "o": "}", "u": "}", "U": "}", "g": ">"}


def _class_end(pattern: str, start: int) -> int:
    """The index after the character class opening at `start` (nested sets and [:posix:] included)."""
    i = start + 1
    if i < len(pattern) and pattern[i] == "^":
        i += 1
    if i < len(pattern) and pattern[i] == "]":
        i += 1  # a ']' first in a class is a literal
    depth = 1
    while i < len(pattern) and depth:
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        depth += {"[": 1, "]": -1}.get(c, 0)
        i += 1
    return i


def _refuse_regex(pattern: str) -> "tuple[str, int] | None":
    """(reason, position) when the pattern would crash, exhaust memory or overflow the engine's parser.

    A single scan that tracks groups, skipping escapes, character classes and comments. Each open
    group holds [unrolled size so far, size of the last item]; a counted repeat {n} or {n,m}
    multiplies the last item by n (the engine unrolls the n mandatory copies, not the optional ones).
    """
    # One piece on purpose: a single scanner whose state (open groups, classes, escapes) every branch shares.
    groups = [[0, 0]]
    i, n = 0, len(pattern)

    def item(size: int) -> None:
        groups[-1][0] += size
        groups[-1][1] = size

    while i < n:
        c = pattern[i]
        if c == "\\":
            j = i + 2
            close = _BRACED_ESCAPE.get(pattern[i + 1]) if i + 1 < n else None
            if close and j < n and pattern[j] == ("<" if close == ">" else "{"):
                end = pattern.find(close, j)
                j = n if end < 0 else end + 1
            item(1)
            i = j
        elif c == "[":
            item(1)
            i = _class_end(pattern, i)
        elif c == "(":
            if pattern.startswith("(?#", i):
                end = pattern.find(")", i)
                i = n if end < 0 else end + 1
                continue
            if _RECURSION.match(pattern, i):
                return (
                    "recursive patterns ((?R), (?1), (?&name)) are not supported: module names are flat "
                    "dotted paths, and the regex engine can crash on them",
                    i,
                )
            if len(groups) > MAX_PATTERN_NESTING:
                return f"groups nest deeper than {MAX_PATTERN_NESTING} levels", i
            groups.append([0, 0])
            i += 1
        elif c == ")":
            if len(groups) > 1:
                item(groups.pop()[0])
            i += 1
        elif c == "{" and (m := _COUNTED_REPEAT.match(pattern, i)) and (m.group(1) or m.group(2)):
            digits = m.group(1) or "0"
            times = int(digits) if len(digits) <= 9 else 10**9
            top = groups[-1]
            top[0] += top[1] * (times - 1)
            top[1] *= times
            if top[0] > MAX_REPEAT_EXPANSION or sum(g[0] for g in groups) > MAX_REPEAT_EXPANSION:
                return (
                    f"the counted repeat {m.group(0)} unrolls it to more than {MAX_REPEAT_EXPANSION:,} elements "
                    "when compiled; module names are far shorter — use a smaller count, or + or *",
                    i,
                )
            i = m.end()
        else:
            item(1)
            i += 1
    return None


def search_names(pattern: str, names: list[str], indices: list[int], table: "NameTable | None" = None) -> list[int]:
    """The indices (of `names`) whose name the regex *searches* successfully, under the time budget.

    `table`: the same names joined once (`NameTable(names)`), kept by the caller across calls; the
    regex then runs once over the names its literal text leaves (query/name_table.py), or not at
    all when string tests answer exactly. Regexes outside the subset regex_shape.py reads, and
    names holding a newline, are searched name by name.
    """
    compiled = compile_regex(pattern)
    deadline = time.monotonic() + REGEX_BUDGET_SECONDS
    try:
        bulk = _bulk(pattern)
        if bulk is not None and indices:
            table = table if table is not None else NameTable(names)
            if table.newline_free:
                return match(table, indices, *bulk, deadline)
        return _search_each(compiled, names, indices, deadline)
    except TimeoutError:
        raise RegexTimeoutError(
            f"regex /{pattern}/ took more than {REGEX_BUDGET_SECONDS:g}s over {len(indices)} module names "
            "and was stopped (catastrophic backtracking?). Simplify it, e.g. replace nested quantifiers "
            "like (a+)+ with a+, or use glob:/.glob() instead."
        ) from None
    except Exception as exc:  # noqa: BLE001 - e.g. RuntimeError('invalid RE code') for [[:alpha:]]\G{e<=1}
        raise PatternError(
            f"regex /{pattern}/ failed inside the regex engine while matching module names "
            f"({type(exc).__name__}: {exc}); simplify it (fuzzy matching and \\G are the usual suspects)"
        ) from None


def digit_blind(pattern: str) -> bool:
    """Does the regex treat every ASCII digit alike (query/regex_shape.py)? Checks the regex first."""
    compile_regex(pattern)
    found = shape(pattern)
    return found is not None and found.digit_blind


@functools.lru_cache(maxsize=512)
def _bulk(pattern: str):
    """(shape, line regex) of a regex that can be matched in bulk, or None."""
    found = shape(pattern)
    line_regex = compile_line_regex(found) if found is not None else None
    return (found, line_regex) if line_regex is not None else None


def _search_each(compiled: "regex.Pattern[str]", names: list[str], indices: list[int], deadline: float) -> list[int]:
    kept = []
    search = compiled.search
    # A per-call timeout equal to the remaining budget bounds the whole loop, not just one call.
    for i in indices:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        if search(names[i], timeout=remaining) is not None:
            kept.append(i)
    return kept
