"""Which module names a regex, glob or `under:` name matches, remembered per model index.

An index is replaced, never updated, when its model's structure changes (model/index.py), so
what a pattern matches among its names is computed once per (index, pattern) and read back by
every later query: a further query pays a tensor `&`, not a scan. Results are kept for the
`MAX_PATTERNS` patterns used last; names are matched lazily, only where a query's domain needs
them, and all at once when a query needs most of them anyway.

A pattern blind to digits (no digit written, `\d`, `*`, `.` …) is matched on the names' forms
instead — each name with its digits written 0, a few hundred forms for a 60k-module MoE — and read
back per module through a tensor of form ids, so even a pattern's first use costs no scan of the names.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from targetsel.model.arrays import long_tensor
from targetsel.query.globs import glob_digit_blind, glob_names
from targetsel.query.name_table import NameTable, named
from targetsel.query.patterns import digit_blind, search_names

#: Patterns whose results one index keeps (two bool tensors of one entry per module each).
MAX_PATTERNS = 64


def name_table(index) -> NameTable:
    """The names of `index` joined once, for bulk scans (query/name_table.py)."""
    return index.memo("name-table", lambda: NameTable(index.names))


def name_forms(index) -> tuple[list[str], torch.Tensor]:
    """(the distinct forms of the names, digits written 0; each position's form as a tensor)."""
    def build():
        forms, form_of = name_table(index).forms()
        return forms, long_tensor(form_of)

    return index.memo("name-forms", build)


def _positions(mask: torch.Tensor) -> list[int]:
    return mask.nonzero().flatten().tolist()


def pattern_mask(index, kind: str, pattern: str, domain: torch.Tensor) -> torch.Tensor:
    """`domain` narrowed to the modules whose name the regex (`kind="regex"`, a search) or glob
    (`kind="glob"`, a full match) matches. Errors (bad pattern, time budget) leave nothing cached."""
    cache: OrderedDict = index.memo("pattern-matches", OrderedDict)
    key = (kind, pattern)
    entry = cache.get(key)
    find = search_names if kind == "regex" else glob_names
    if entry is None and (digit_blind(pattern) if kind == "regex" else glob_digit_blind(pattern)):
        forms, form_of = name_forms(index)
        if 4 * len(forms) <= index.size:  # a few hundred forms stand for 60k names: match those, all at once
            form_hit = torch.zeros(len(forms), dtype=torch.bool)
            found = find(pattern, forms, list(range(len(forms))))
            if found:
                form_hit[torch.tensor(found, dtype=torch.long)] = True
            cache[key] = (torch.ones(index.size, dtype=torch.bool), form_hit[form_of])
            _bound(cache)
            return domain & cache[key][1]
    if entry is not None:
        cache.move_to_end(key)
        checked, hit = entry
        todo = domain & ~checked
    else:
        checked = hit = None
        todo = domain
    n_todo = int(todo.sum())
    if not n_todo:
        return domain & hit if hit is not None else domain.clone()
    unchecked = index.size - (int(checked.sum()) if checked is not None else 0)
    if 4 * n_todo >= 3 * unchecked:  # most names are needed now: match them all, later queries only read
        todo = ~checked if checked is not None else torch.ones(index.size, dtype=torch.bool)
    found = find(pattern, index.names, _positions(todo), name_table(index))
    new_hit = torch.zeros(index.size, dtype=torch.bool) if hit is None else hit.clone()
    if found:
        new_hit[torch.tensor(found, dtype=torch.long)] = True
    cache[key] = (todo if checked is None else checked | todo, new_hit)
    _bound(cache)
    return domain & new_hit


def _bound(cache: OrderedDict) -> None:
    if len(cache) > MAX_PATTERNS:
        cache.popitem(last=False)


def under_mask(index, prefix: str) -> torch.Tensor:
    """Strict descendants of the modules named `prefix` or `….prefix` (structural: once per index)."""
    return index.memo(("under", prefix), lambda: index.ancestors_mask(_mask(index, under_roots(index, prefix))))


def under_roots(index, prefix: str) -> list[int]:
    """Modules whose full name is `prefix` or ends with '.' + prefix (PEFT's suffix rule)."""
    return index.memo(("under-roots", prefix), lambda: _named(index, prefix))


def named_like(index, name: str) -> list[int]:
    """Positions of the modules named `name` or `….name`, the root included if `name` is empty (`layers(within=)`)."""
    return index.memo(("named", name), lambda: _named(index, name, root=True))


def _named(index, name: str, root: bool = False) -> list[int]:
    found = named(name_table(index), name)
    return found if root or not found or found[0] else found[1:]


def _mask(index, positions: list[int]) -> torch.Tensor:
    mask = torch.zeros(index.size, dtype=torch.bool)
    if positions:
        mask[torch.tensor(positions, dtype=torch.long)] = True
    return mask


#: memo keys of what an index remembers per pattern or name (the rest of its memo is structure).
_PER_PATTERN = ("under", "under-roots", "named", "type")


def forget_patterns(index) -> None:
    """Drop every per-pattern result `index` remembers (and its grad-state sums), keeping its structure:
    benchmarks/ measures a query whose patterns the index has not seen yet this way."""
    index._cached.pop("pattern-matches", None)
    for key in [k for k in index._cached if isinstance(k, tuple) and k and k[0] in _PER_PATTERN]:
        del index._cached[key]
    index._grad_sums = None
