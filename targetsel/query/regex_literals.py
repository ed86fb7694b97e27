"""The literal text a regex's matches must hold, as sets of strings (regex_shape.py reads the regex).

Each node of a regex gets an `Info`: the finite set of texts it can match (when it has one), the
texts every match starts with, ends with and contains, and whether it matches exactly its texts
(no assertion, lookaround, backreference or atomic group). Sets hold at most `CAP` strings; past
that an analysis keeps what it knew, which stays true (a shorter prefix of every match is still one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

#: The most strings one literal set holds before the analysis stops enumerating.
CAP = 64
#: Filters whose shortest text is shorter than this cost more than the regex calls they save.
MIN_FILTER_LENGTH = 3

EMPTY = frozenset({""})


@dataclass(frozen=True)
class Info:
    texts: Optional[frozenset]  # every match's text is one of these; None: unbounded or unknown
    pure: bool  # the node matches exactly `texts` (no assertion, lookaround, backref or atomic group)
    pre: frozenset  # every match's text starts with one of these ({""}: nothing known)
    suf: frozenset
    must: Optional[frozenset]  # every match's text contains one of these (none empty); None: unknown


def _product(a, b):
    if len(a) * len(b) > CAP:
        return None
    return frozenset(x + y for x in a for y in b)


def info(texts, pure, pre=EMPTY, suf=EMPTY, must=None) -> Info:
    if texts is not None:
        pre = suf = texts
        if "" not in texts:
            must = best([must, texts])
    return Info(texts, pure, pre, suf, must)


def usable(s) -> bool:
    return s is not None and len(s) > 0 and "" not in s


def best(candidates):
    """The most selective set: the longest shortest text, then the fewest texts."""
    kept = [c for c in candidates if usable(c)]
    return max(kept, key=lambda s: (min(map(len, s)), -len(s))) if kept else None


UNKNOWN_CHAR = info(None, True)  # one character from an unbounded or case-folded set
ZERO_WIDTH = info(EMPTY, False)  # ^ $ \b \B and lookarounds
BACKREF = info(None, False)


def cat(items: list) -> Info:
    texts, pure = EMPTY, True
    for x in items:
        pure = pure and x.pure
        texts = None if texts is None or x.texts is None else _product(texts, x.texts)
    if texts is not None:
        return info(texts, pure)
    pre, suf, runs = _edge(items), _edge(items[::-1], suffix=True), _runs(items)
    # Prefer a text from inside the match: anchored regexes check their edges as prefix/suffix filters already.
    inner = best([r for r in runs if r != pre and r != suf])
    if inner is None or min(map(len, inner)) < MIN_FILTER_LENGTH:
        inner = best(runs + [pre, suf])
    return Info(None, pure, pre, suf, inner)


def _edge(items, suffix=False) -> frozenset:
    """Texts every match starts (or ends) with: the literal run at that edge, up to the first unbounded item."""
    acc = EMPTY
    for x in items:
        part = x.texts if x.texts is not None else (x.suf if suffix else x.pre)
        nxt = _product(part, acc) if suffix else _product(acc, part)
        if nxt is None:
            break
        acc = nxt
        if x.texts is None:
            break
    return acc


def _runs(items) -> list:
    """Candidate `must` sets: each item's own, and each run of literal items with its neighbours' edges."""
    found = [x.must for x in items]
    acc = EMPTY
    for x in items:
        if x.texts is not None:
            nxt = _product(acc, x.texts)
            if nxt is None:
                found.append(acc)
                nxt = x.texts
            acc = nxt
            continue
        found.append(_product(acc, x.pre) or acc)
        acc = x.suf
    found.append(acc)
    return found


def alt(branches: list) -> Info:
    pure = all(b.pure for b in branches)
    if all(b.texts is not None for b in branches):
        texts = frozenset().union(*(b.texts for b in branches))
        if len(texts) <= CAP:
            return info(texts, pure)

    def union(sets):
        if any(s is None for s in sets):
            return None
        joined = frozenset().union(*sets)
        return joined if len(joined) <= CAP else None

    return Info(None, pure, union([b.pre for b in branches]) or EMPTY, union([b.suf for b in branches]) or EMPTY,
                 union([b.must for b in branches]))


def repeat(x: Info, lo: int, hi: Optional[int], possessive: bool) -> Info:
    pure = x.pure and not possessive
    if hi is not None and hi <= 16 and x.texts is not None:
        texts, power = (EMPTY if lo == 0 else None), EMPTY
        for k in range(1, hi + 1):
            power = _product(power, x.texts)
            if power is None:
                texts = None
                break
            if k >= lo:
                texts = power if texts is None else texts | power
                if len(texts) > CAP:
                    texts = None
                    break
        else:
            return info(texts, pure)
    if lo >= 1:
        return Info(None, pure, x.pre, x.suf, x.must)
    return Info(None, pure, EMPTY, EMPTY, None)
