"""Integer runs and name templates: what exact regexes (`names_regex`) and display groups (`grouping`) share.

A dotted module name splits into a *template* — its segments, each canonical ASCII integer replaced
by a slot (`None`) — and the integers that fill the slots. The names of one template are a set of
integer tuples, covered exactly by disjoint Cartesian blocks (one integer set per slot). A block
filled into its template is a *row*: one cell per segment. The two renderers differ only in how a
cell is written (`(?:[0-9]|1[0-5])` or `{0..15}`), so they share the rest:

- `int_runs` — a set of integers as runs of consecutive ones;
- `split_name`, `cartesian_blocks`, `fill_template` — names → rows;
- `merge_rows` — rows that differ in one cell become one row listing both cells' alternatives.

A cell is either a tuple of alternatives (mergeable: a literal segment is the 1-tuple of its text)
or a `str` (fixed: it never merges). Only ASCII digits make a slot: `layers.٣` is a word (PEFT
matches with `re`, where `\\d` would also take '٣'; see names_regex).
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Callable, Iterable, Optional, Sequence, TypeVar, Union

#: A name's segments, `None` where a canonical ASCII integer stood.
Template = tuple[Optional[str], ...]

#: One segment of a row: alternatives that may merge with another row's, or a fixed text.
Cell = Union[tuple[str, ...], str]

Payload = TypeVar("Payload")

_CANONICAL_INT = re.compile(r"0|[1-9][0-9]*")  # ASCII digits only; '07' is a word, not 7


def int_runs(values: Iterable[int]) -> list[tuple[int, int]]:
    """The distinct `values` as maximal runs of consecutive integers, ascending: [5, 0, 1, 2] → [(0, 2), (5, 5)]."""
    runs: list[tuple[int, int]] = []
    for value in sorted(set(values)):
        if runs and runs[-1][1] == value - 1:
            runs[-1] = (runs[-1][0], value)
        else:
            runs.append((value, value))
    return runs


def split_name(name: str) -> tuple[Template, tuple[int, ...]]:
    """`'model.3.mlp'` → `(('model', None, 'mlp'), (3,))`: the template and the integers in its slots."""
    template: list[Optional[str]] = []
    values: list[int] = []
    for segment in name.split("."):
        if _CANONICAL_INT.fullmatch(segment):
            template.append(None)
            values.append(int(segment))
        else:
            template.append(segment)
    return tuple(template), tuple(values)


def cartesian_blocks(tuples: frozenset) -> list[tuple[frozenset, ...]]:
    """Disjoint Cartesian blocks (one frozenset of integers per slot) whose union is exactly `tuples`.

    All tuples have the same length. Tuples that share their tail share a block of heads, so a full
    grid `{0..31} × {0..7}` is one block; blocks come ordered by their smallest head.
    """
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
        for block in cartesian_blocks(rest):
            out.append((frozenset(heads),) + block)
    return out


def fill_template(
    template: Template,
    block: tuple[frozenset, ...],
    literal: Callable[[str], Cell],
    numbers: Callable[[frozenset], Cell],
) -> tuple[Cell, ...]:
    """One cell per segment: `literal(text)` for a word, `numbers(integer set)` for a slot, in block order."""
    cells: list[Cell] = []
    slot = 0
    for segment in template:
        if segment is None:
            cells.append(numbers(block[slot]))
            slot += 1
        else:
            cells.append(literal(segment))
    return tuple(cells)


def merge_rows(rows: Sequence[tuple[tuple[Cell, ...], list[Payload]]]) -> list[tuple[tuple[Cell, ...], list[Payload]]]:
    """Merge rows of one length that differ in exactly one mergeable cell, until no two do.

    A row is `(cells, payload)`; a merged row lists the alternatives of its rows' cells in row order
    (each once) and concatenates their payloads. Each round merges, at the first position where any
    rows can merge, every group of rows that can, and starts over; merged rows go last. The order
    of rows and alternatives is kept as given, so equal input gives equal output.
    """
    rows = list(rows)
    merged = True
    while merged:
        merged = False
        for pos in range(max((len(cells) for cells, _ in rows), default=0)):
            buckets: dict[tuple, list[int]] = defaultdict(list)
            for idx, (cells, _) in enumerate(rows):
                if pos < len(cells) and isinstance(cells[pos], tuple):
                    buckets[(len(cells), cells[:pos], cells[pos + 1 :])].append(idx)
            groups = [idxs for idxs in buckets.values() if len(idxs) > 1]
            if not groups:
                continue
            used: set[int] = set()
            new_rows = []
            for idxs in groups:
                alternatives = tuple(dict.fromkeys(alt for i in idxs for alt in rows[i][0][pos]))
                cells = rows[idxs[0]][0]
                new_rows.append((cells[:pos] + (alternatives,) + cells[pos + 1 :], [p for i in idxs for p in rows[i][1]]))
                used.update(idxs)
            rows = [row for i, row in enumerate(rows) if i not in used] + new_rows
            merged = True
            break
    return rows
