"""Collapse module names into readable groups: `model.layers.{0..31}.self_attn.{q,k,v,o}_proj`.

Numeric segments become integer sets (`{0..31}`, `{0..3,7}`); names that then differ in one
literal segment merge into an alternation, with the common prefix and suffix of that segment
pulled out (`q_proj`, `k_proj` → `{q,k}_proj`). Templates, blocks and merging are `runs.py`'s,
shared with names_regex; numbers are ASCII digits there: `layers.٣` is a word, not block 3.
Every group pattern is a valid `glob:` that matches exactly its names among those given, so a
group can be pasted back into a query. Used by the display, by error messages and by preflight
findings.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

from targetsel.text.runs import cartesian_blocks, fill_template, int_runs, merge_rows, split_name


@dataclass(frozen=True)
class NameGroup:
    pattern: str
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)


def int_set_text(values: Iterable[int]) -> str:
    """{0..31}, {0..3,7}, or a bare number for one value."""
    runs = int_runs(values)
    if len(runs) == 1 and runs[0][0] == runs[0][1]:
        return str(runs[0][0])
    parts = [str(a) if a == b else (f"{a},{b}" if b == a + 1 else f"{a}..{b}") for a, b in runs]
    return "{" + ",".join(parts) + "}"


def _alternation(words: list[str]) -> str:
    """['q_proj','k_proj'] → '{q,k}_proj'; prefix and suffix shared by all words stay outside."""
    if len(words) == 1:
        return words[0]
    prefix = _word_prefix(os.path.commonprefix(words), words)
    rests = [w[len(prefix) :] for w in words]
    suffix = _word_suffix(os.path.commonprefix([r[::-1] for r in rests])[::-1], rests)
    cores = [w[len(prefix) : len(w) - len(suffix)] for w in words]
    if any(not c for c in cores):  # one word is the bare prefix+suffix: no factoring possible
        prefix, suffix, cores = "", "", words
    return prefix + "{" + ",".join(cores) + "}" + suffix


def _is_digit(char: str) -> bool:
    # ASCII only, as numeric segments are (runs.py): `str.isdigit` also takes '٣' and '¹'.
    return len(char) == 1 and "0" <= char <= "9"


def _word_prefix(prefix: str, words: list[str]) -> str:
    """Factor a shared prefix only at a word boundary: `linear_{1,2}`, `fc{1,2}`, never `p{re_lay,ost_laye}rnorm`."""
    if not prefix:
        return ""
    rests = [w[len(prefix) :] for w in words]
    if prefix.endswith("_") or (not _is_digit(prefix[-1]) and all(_is_digit(r[:1]) for r in rests)):
        return prefix
    cut = prefix.rfind("_")
    return prefix[: cut + 1] if cut >= 0 else ""


def _word_suffix(suffix: str, words: list[str]) -> str:
    if not suffix:
        return ""
    rests = [w[: len(w) - len(suffix)] for w in words]
    if suffix.startswith("_") or (not _is_digit(suffix[0]) and all(_is_digit(r[-1:]) for r in rests)):
        return suffix
    cut = suffix.find("_")
    return suffix[cut:] if cut >= 0 else ""


def _word(segment: str) -> tuple[str]:
    return (segment,)


def group_names(names: Sequence[str]) -> list[NameGroup]:
    """Groups of `names`, ordered by their first member's position in `names`."""
    order = {n: i for i, n in enumerate(names)}
    by_template: dict[tuple, set] = defaultdict(set)
    members: dict[tuple, list[tuple[str, tuple]]] = defaultdict(list)
    for name in names:
        template, values = split_name(name)  # split once: it dominates the cost at 50k names
        by_template[template].add(values)
        members[template].append((name, values))

    # Rows: a word is a mergeable cell (a 1-tuple), an integer set a fixed one ("{0..31}" never merges).
    rows = []
    for template, tuples in by_template.items():
        blocks = cartesian_blocks(frozenset(tuples))
        if len(blocks) == 1:
            insides = [[n for n, _ in members[template]]]
        else:  # the blocks are disjoint: each name lands in exactly one
            insides = [[] for _ in blocks]
            for n, values in members[template]:
                for inside, block in zip(insides, blocks):
                    if all(v in s for v, s in zip(values, block)):
                        inside.append(n)
                        break
        for block, inside in zip(blocks, insides):
            rows.append((fill_template(template, block, _word, int_set_text), inside))

    out = []
    for cells, inside in merge_rows(rows):
        inside.sort(key=order.__getitem__)
        alternatives = [pos for pos, c in enumerate(cells) if isinstance(c, tuple) and len(c) > 1]
        first_seen: dict[int, dict[str, int]] = {pos: {} for pos in alternatives}
        if alternatives:  # alternatives appear in model order: the first member using each word
            for n in inside:
                parts = n.split(".")
                for pos in alternatives:
                    first_seen[pos].setdefault(parts[pos], order[n])
        text = ".".join(
            (_alternation(sorted(c, key=first_seen[pos].__getitem__)) if pos in first_seen else c[0])
            if isinstance(c, tuple) else c
            for pos, c in enumerate(cells)
        )
        out.append(NameGroup(pattern=text, names=tuple(inside)))
    out.sort(key=lambda g: order[g.names[0]])
    return out


def summarize_names(names: Sequence[str], limit: int = 6) -> str:
    """A short, grouped rendering of many names for messages: 'a.{0..23}.fc1 (24), b.out'."""
    groups = group_names(list(names))
    parts = [g.pattern + (f" ({len(g)})" if len(g) > 1 else "") for g in groups[:limit]]
    if len(groups) > limit:
        rest = sum(len(g) for g in groups[limit:])
        parts.append(f"… and {rest} more in {len(groups) - limit} group(s)")
    return ", ".join(parts)


def short_repr(value, limit: int = 100) -> str:
    """`repr(value)` cut to `limit` characters with an ellipsis, for messages quoting a config value."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def adapter_differences(want, got, what: str = "module", limit: int = 3) -> list[str]:
    """How an adapted set differs from the wanted one, as clauses: the selected names that would get no
    adapter, then the unselected ones that would get one (each in order, grouped)."""
    want, got = list(want), list(got)
    wanted, adapted = set(want), set(got)
    lost = [n for n in want if n not in adapted]
    extra = [n for n in got if n not in wanted]
    parts = []
    if lost:
        parts.append(f"{len(lost)} selected {what}(s) would get no adapter ({summarize_names(lost, limit=limit)})")
    if extra:
        parts.append(f"{len(extra)} unselected {what}(s) would get one ({summarize_names(extra, limit=limit)})")
    return parts
