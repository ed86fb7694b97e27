"""Collapse module names into readable groups: `model.layers.{0..31}.self_attn.{q,k,v,o}_proj`.

Numeric segments become integer sets (`{0..31}`, `{0..3,7}`); names that then differ in one
literal segment merge into an alternation, with the common prefix and suffix of that segment
pulled out (`q_proj`, `k_proj` → `{q,k}_proj`). Numbers are ASCII digits, as in regex_build:
`layers.٣` is a word, not block 3. Every group pattern is a valid `glob:` that matches exactly
its names among those given, so a group can be pasted back into a query.
Used by the display, by error messages and by preflight findings.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

from targetsel.text.names_regex import _blocks, _split



@dataclass(frozen=True)
class NameGroup:
    pattern: str
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.names)


def int_set_text(values: Iterable[int]) -> str:
    """{0..31}, {0..3,7}, or a bare number for one value."""
    vals = sorted(set(values))
    if len(vals) == 1:
        return str(vals[0])
    runs: list[list[int]] = []
    for v in vals:
        if runs and runs[-1][1] == v - 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
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
    # ASCII only, as numeric segments are (regex_build): `str.isdigit` also takes '٣' and '¹'.
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


def _render(template: tuple, block: tuple) -> list[str]:
    out, k = [], 0
    for seg in template:
        if seg is None:
            out.append(int_set_text(block[k]))
            k += 1
        else:
            out.append(seg)
    return out


def group_names(names: Sequence[str]) -> list[NameGroup]:
    """Groups of `names`, ordered by their first member's position in `names`."""
    order = {n: i for i, n in enumerate(names)}
    by_template: dict[tuple, set] = defaultdict(set)
    members: dict[tuple, list[tuple[str, tuple]]] = defaultdict(list)
    for name in names:
        template, values = _split(name)  # split once: it dominates the cost at 50k names
        by_template[template].add(values)
        members[template].append((name, values))

    # rows: (segments with int sets rendered, literal-segment words per position, member names)
    rows: list[tuple[list, list[str]]] = []
    for template, tuples in by_template.items():
        blocks = _blocks(frozenset(tuples))
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
            rows.append(([[p] if i_is_literal else p for p, i_is_literal in _tag(template, block)], inside))

    # Merge rows that differ in exactly one literal position (same shape otherwise).
    merged = True
    while merged:
        merged = False
        for pos in range(max((len(r[0]) for r in rows), default=0)):
            buckets: dict[tuple, list[int]] = defaultdict(list)
            for idx, (segs, _) in enumerate(rows):
                if pos < len(segs) and isinstance(segs[pos], list):
                    key = (len(segs), pos) + tuple(
                        "\0" if j == pos else (tuple(s) if isinstance(s, list) else s) for j, s in enumerate(segs)
                    )
                    buckets[key].append(idx)
            groups = [idxs for idxs in buckets.values() if len(idxs) > 1]
            if groups:
                used = set()
                new_rows = []
                for idxs in groups:
                    segs = list(rows[idxs[0]][0])
                    words: list[str] = []
                    names_in: list[str] = []
                    for i in idxs:
                        words += [w for w in rows[i][0][pos] if w not in words]
                        names_in += rows[i][1]
                    segs[pos] = words
                    new_rows.append((segs, names_in))
                    used.update(idxs)
                rows = [r for i, r in enumerate(rows) if i not in used] + new_rows
                merged = True
                break

    out = []
    for segs, inside in rows:
        inside.sort(key=order.__getitem__)
        alternatives = [pos for pos, s in enumerate(segs) if isinstance(s, list) and len(s) > 1]
        first_seen: dict[int, dict[str, int]] = {pos: {} for pos in alternatives}
        if alternatives:  # alternatives appear in model order: the first member using each word
            for n in inside:
                parts = n.split(".")
                for pos in alternatives:
                    first_seen[pos].setdefault(parts[pos], order[n])
        text = ".".join(
            (_alternation(sorted(s, key=first_seen[pos].__getitem__) if pos in first_seen else s)
             if isinstance(s, list) else s)
            for pos, s in enumerate(segs)
        )
        out.append(NameGroup(pattern=text, names=tuple(inside)))
    out.sort(key=lambda g: order[g.names[0]])
    return out


def _tag(template: tuple, block: tuple):
    """Template segments paired with 'is a literal' (literals are mergeable, int sets are not)."""
    rendered = _render(template, block)
    return [(text, seg is not None) for text, seg in zip(rendered, template)]


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
