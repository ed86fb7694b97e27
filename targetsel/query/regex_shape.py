"""What a regex asks of the names it matches, read from its source — so most names never meet the engine.

Running the `regex` package once per module name costs about 4 µs a call with a timeout, and a
model may have 60k names. As RE2 and ripgrep do, `shape(pattern)` reads the literal text a match
must contain, and how the regex can be run once over all names joined by newlines:

- `branches`: when the regex is only literal text, alternatives and small character classes,
  anchored or not (`(gate|router)$`, `^model\\.embed_tokens$`), its exact meaning as string tests:
  each branch is (anchored at the start, anchored at the end, the texts it matches);
- `filters`: texts every match must start with, end with or contain — a necessary condition that
  `str.startswith`/`endswith`/`in` check at C speed before the regex runs;
- `line_regex`: the regex rewritten to run once over the names joined by "\\n" (MULTILINE, each
  atom that could match a newline kept from matching one), so that a match never spans two names
  and `^`/`$`/`\\b`/lookarounds mean at a name's edges what they mean at a string's.

Only a conservative subset is read: literals, escaped punctuation, `. \\d \\w \\s \\D \\W \\S \\b \\B`,
simple character classes, groups, lookarounds, atomic groups, backreferences `\\1`–`\\9`, counted and
lazy/possessive repeats, and leading global flags `(?imsau)`. Anything else (fuzzy matching, `\\p{}`,
`\\N{}`, POSIX or nested sets, verbose mode, `(?V1)`, scoped flags, conditionals …) gets `None`, and
the caller runs the regex name by name as before. Every answer assumes names without "\\n", which
the caller checks once per model.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

from targetsel.query.regex_literals import (
    CAP, EMPTY, MIN_FILTER_LENGTH, BACKREF, UNKNOWN_CHAR, ZERO_WIDTH, Info, alt, best, cat, info, repeat, usable,
)

_REPEAT_CHARS = set("*+?{")
_FLAG_LETTERS = set("imsau")


@dataclass(frozen=True)
class Shape:
    branches: "Optional[tuple[tuple[bool, bool, frozenset[str]], ...]]"
    filters: "tuple[tuple[str, tuple[str, ...]], ...]"  # ("prefix" | "suffix" | "contains", texts)
    line_regex: str
    ignore_case: bool
    ascii: bool
    # Every ASCII digit is alike to it (no digit written, no class holding some digits but not all, no
    # backreference): it matches a name iff it matches the name with each ASCII digit written as 0.
    digit_blind: bool = False


class _Unsupported(Exception):
    """The pattern uses syntax outside the subset read here."""


class _Reader:
    """One pass over the pattern: infos bottom-up, and the splices that make `line_regex`."""

    def __init__(self, pattern: str):
        self.p = pattern
        self.i = 0
        self.splices: list[tuple[int, int, str]] = []
        self.flags = set()
        self.digit_blind = True
        self.groups = 0

    def read(self):
        while self.p.startswith("(?", self.i):
            end = self.p.find(")", self.i)
            letters = self.p[self.i + 2: end] if end > 0 else ""
            if not letters or not set(letters) <= _FLAG_LETTERS:
                break
            self.flags |= set(letters)
            self.splices.append((self.i, end + 1, ""))
            self.i = end + 1
        branches = self.alternation()
        if self.i != len(self.p):
            raise _Unsupported
        return branches

    def alternation(self) -> list:
        branches = [self.sequence()]
        while self.i < len(self.p) and self.p[self.i] == "|":
            self.i += 1
            branches.append(self.sequence())
        return branches

    def sequence(self) -> list:
        items = []
        while self.i < len(self.p) and self.p[self.i] not in "|)":
            start = self.i
            atom, kind = self.atom()
            if self.i < len(self.p) and self.p[self.i] in _REPEAT_CHARS:
                if kind != "consumer":
                    raise _Unsupported  # a repeated assertion: legal in some engines, never needed here
                atom, kind = self.repeat(atom), "consumer"
            items.append((atom, kind, start))
        return items

    def repeat(self, atom: Info) -> Info:
        c = self.p[self.i]
        if c == "{":
            end = self.p.find("}", self.i)
            body = self.p[self.i + 1: end] if end > 0 else ""
            lo_s, comma, hi_s = body.partition(",")
            if end < 0 or not (lo_s or hi_s) or not (lo_s.isdigit() or not lo_s) or not (hi_s.isdigit() or not hi_s) \
                    or not (lo_s + hi_s).isascii():
                raise _Unsupported  # fuzzy matching {e<=1}, or a literal '{'
            lo = int(lo_s) if lo_s else 0
            hi = (int(hi_s) if hi_s else None) if comma else lo
            self.i = end + 1
        else:
            lo, hi = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
            self.i += 1
        possessive = False
        if self.i < len(self.p) and self.p[self.i] in "?+":
            possessive = self.p[self.i] == "+"
            self.i += 1
        if self.i < len(self.p) and self.p[self.i] in _REPEAT_CHARS:
            raise _Unsupported
        return repeat(atom, lo, hi, possessive)

    def atom(self) -> tuple[Info, str]:
        p, i = self.p, self.i
        c = p[i]
        if c == "(":
            return self.group()
        if c == "[":
            return self.char_class(), "consumer"
        if c == ".":
            self.splices.append((i, i + 1, r"[^\n]"))
            self.i += 1
            return UNKNOWN_CHAR, "consumer"
        if c in "^$":
            self.i += 1
            return ZERO_WIDTH, c
        if c == "\\":
            return self.escape()
        if c in _REPEAT_CHARS or c == "\n":
            raise _Unsupported
        self.i += 1
        return self.literal(c), "consumer"

    def literal(self, c: str) -> Info:
        if "0" <= c <= "9":
            self.digit_blind = False
        return UNKNOWN_CHAR if "i" in self.flags else info(frozenset({c}), True)

    def escape(self) -> tuple[Info, str]:
        i = self.i
        if i + 1 >= len(self.p):
            raise _Unsupported
        c = self.p[i + 1]
        self.i = i + 2
        if c in "dwS":
            return UNKNOWN_CHAR, "consumer"
        if c in "sDW":  # can match "\n": the complement class without it
            self.splices.append((i, i + 2, {"s": r"[^\S\n]", "D": r"[^\d\n]", "W": r"[^\w\n]"}[c]))
            return UNKNOWN_CHAR, "consumer"
        if c in "bB":
            return ZERO_WIDTH, "assert"
        if c in "123456789" and not (self.i < len(self.p) and self.p[self.i].isdigit()):
            self.digit_blind = False  # (\d)\1 tells 12 from 11
            return BACKREF, "consumer"
        if c.isalnum() or c == "\n" or not c.isascii():
            raise _Unsupported  # \A \Z \p \N \x \n \G octal … and non-ASCII escapes: not read here
        return self.literal(c), "consumer"

    def char_class(self) -> Info:
        # One piece on purpose: one scan of a character class; its branches share the cursor and the set.
        p, start = self.p, self.i
        i = start + 1
        negated = i < len(p) and p[i] == "^"
        i += negated
        chars: set = set()
        newline = unknown = all_digits = False
        digits: set = set()  # the ASCII digits the class names one by one or by range
        first = True
        while True:
            if i >= len(p):
                raise _Unsupported
            c = p[i]
            if c == "]" and not first:
                break
            first = False
            if c == "[" or p.startswith(("--", "&&", "||", "~~"), i):
                raise _Unsupported  # POSIX classes, nested sets and set operations differ between engines
            if c == "\\":
                e = p[i + 1] if i + 1 < len(p) else ""
                i += 2
                if e in ("d", "w", "S"):
                    unknown = all_digits = True
                    continue
                if e in ("s", "D", "W"):
                    unknown = newline = True
                    continue
                if e == "n":
                    lo = "\n"
                elif e and not e.isalnum() and e.isascii() and e != "\n":
                    lo = e
                else:
                    raise _Unsupported
            else:
                lo = c
                i += 1
            hi = lo
            if i + 1 < len(p) and p[i] == "-" and p[i + 1] != "]":
                hi = p[i + 1]
                if hi == "\\":
                    e = p[i + 2] if i + 2 < len(p) else ""
                    if not e or e.isalnum() or not e.isascii():
                        raise _Unsupported
                    hi, i = e, i + 3
                elif hi == "[":
                    raise _Unsupported
                else:
                    i += 2
            if ord(lo) <= 10 <= ord(hi):
                newline = True
            if not (hi < "0" or lo > "9" or (lo <= "0" and hi >= "9")):  # some digits but maybe not all
                digits.update(chr(k) for k in range(max(ord(lo), 48), min(ord(hi), 57) + 1))
            if ord(hi) - ord(lo) >= 16:
                unknown = True
            else:
                chars.update(chr(k) for k in range(ord(lo), ord(hi) + 1))
        self.i = i + 1
        if digits and len(digits) < 10 and not all_digits:
            self.digit_blind = False
        if negated and not newline and p[start + 2] != "]" and p[i - 1] != "-":
            self.splices.append((i, i, r"\n"))  # [^.] → [^.\n]: keep it from matching the names' separator
        elif negated != newline:  # it can match "\n": guard it
            self.splices.append((start, self.i, r"(?:(?!\n)" + p[start:self.i] + ")"))
        if negated or unknown or "i" in self.flags or len(chars) > CAP:
            return UNKNOWN_CHAR
        return info(frozenset(chars), True)

    def group(self) -> tuple[Info, str]:
        p, i = self.p, self.i
        kind = "consumer"
        if p.startswith("(?#", i):
            end = p.find(")", i)
            if end < 0:
                raise _Unsupported
            self.i = end + 1
            return info(EMPTY, True), "comment"
        if p.startswith("(?P=", i):
            end = p.find(")", i)
            if end < 0:
                raise _Unsupported
            self.i = end + 1
            self.digit_blind = False
            return BACKREF, "consumer"
        for opener, what in (("(?:", "plain"), ("(?>", "atomic"), ("(?=", "look"), ("(?!", "look"),
                             ("(?<=", "look"), ("(?<!", "look"), ("(?P<", "named"), ("(?<", "named"), ("(?", None), ("(", "plain")):
            if p.startswith(opener, i):
                break
        if what is None:
            raise _Unsupported  # flags in the middle, scoped flags, conditionals, recursion, branch reset …
        self.i = i + len(opener)
        if what == "named":
            end = p.find(">", self.i)
            if end < 0 or not p[self.i:end].isidentifier():
                raise _Unsupported
            self.i = end + 1
        branches = self.alternation()
        if self.i >= len(p) or p[self.i] != ")":
            raise _Unsupported
        self.i += 1
        inner = alt([cat([x for x, _, _ in b]) for b in branches])
        if what == "look":
            return ZERO_WIDTH, "look"
        if what == "atomic":
            return Info(inner.texts, False, inner.pre, inner.suf, inner.must), kind
        return inner, kind


@functools.lru_cache(maxsize=512)
def shape(pattern: str) -> Optional[Shape]:
    """The `Shape` of a regex (already checked to compile), or None when it uses syntax not read here."""
    if not isinstance(pattern, str) or "\n" in pattern:
        return None
    reader = _Reader(pattern)
    try:
        branches = reader.read()
        exact, filters = _branch_tests(branches)
    except Exception:  # noqa: BLE001 - _Unsupported, or any surprise: the engine then matches name by name
        return None
    text = pattern
    for start, end, new in sorted(reader.splices, reverse=True):
        text = text[:start] + new + text[end:]
    icase = "i" in reader.flags
    return Shape(branches=None if icase else exact, filters=() if icase else filters,
                 line_regex="(?:" + text + r")[^\n]*", ignore_case=icase, ascii="a" in reader.flags,
                 digit_blind=reader.digit_blind)


def _branch_tests(branches):
    """(exact branch tests or None, necessary filters) of the top-level alternatives."""
    exact, per_branch = [], []
    for items in branches:
        items = [x for x in items if x[1] != "comment"]
        lead = trail = False
        while items and items[0][1] == "^":
            lead, items = True, items[1:]
        while items and items[-1][1] == "$":
            trail, items = True, items[:-1]
        core = cat([x for x, _, _ in items])
        if exact is not None and core.pure and core.texts is not None:
            exact.append((lead, trail, core.texts))
        else:
            exact = None
        options = {}
        if lead and usable(core.pre):
            options["prefix"] = core.pre
        if trail and usable(core.suf):
            options["suffix"] = core.suf
        # The edges not checked as prefix/suffix still have to occur somewhere in the name.
        candidates = [core.must] + ([core.pre] if not lead else []) + ([core.suf] if not trail else [])
        contains = best([c for c in candidates if c not in options.values()]) or best(candidates)
        if contains is not None:
            options["contains"] = contains
        per_branch.append(options)
    filters = []
    for kind in ("prefix", "suffix", "contains"):
        if all(kind in o for o in per_branch):
            union = frozenset().union(*(o[kind] for o in per_branch))
            if len(union) <= CAP and min(map(len, union)) >= MIN_FILTER_LENGTH:
                filters.append((kind, tuple(sorted(union))))
    if not any(k == "contains" for k, _ in filters) and all(per_branch):
        union = frozenset().union(*(best(list(o.values())) for o in per_branch))
        if len(union) <= CAP and min(map(len, union)) >= MIN_FILTER_LENGTH:
            filters.append(("contains", tuple(sorted(union))))
    # A contains-filter of the very texts a prefix or suffix filter checks tells nothing more. Module
    # names share their beginnings (`model.layers.`) far more than their ends: suffixes first.
    anchored = [texts for kind, texts in filters if kind != "contains"]
    filters = [f for f in filters if f[0] != "contains" or f[1] not in anchored]
    filters.sort(key=lambda f: ("suffix", "contains", "prefix").index(f[0]))
    return (tuple(exact) if exact is not None else None), tuple(filters[:2])
