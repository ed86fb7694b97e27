"""Which module names a regex, glob or `under:` name matches, remembered per model index.

An index is replaced, never updated, when its model's structure changes (model/index.py), so
what a pattern matches among its names is computed once per (index, pattern) and read back by
every later query: a further query pays a tensor `&`, not a scan. Results are kept for the
`MAX_PATTERNS` patterns used last; names are matched lazily, only where a query's domain needs
them, and all at once when a query needs most of them anyway.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from targetsel.query.globs import glob_names
from targetsel.query.name_table import NameTable
from targetsel.query.patterns import search_names

#: Patterns whose results one index keeps (two bool tensors of one entry per module each).
MAX_PATTERNS = 64


def name_table(index) -> NameTable:
    """The names of `index` joined once, for bulk scans (query/name_table.py)."""
    return index.memo("name-table", lambda: NameTable(index.names))


def _positions(mask: torch.Tensor) -> list[int]:
    return mask.nonzero().flatten().tolist()


def pattern_mask(index, kind: str, pattern: str, domain: torch.Tensor) -> torch.Tensor:
    """`domain` narrowed to the modules whose name the regex (`kind="regex"`, a search) or glob
    (`kind="glob"`, a full match) matches. Errors (bad pattern, time budget) leave nothing cached."""
    cache: OrderedDict = index.memo("pattern-matches", OrderedDict)
    key = (kind, pattern)
    entry = cache.get(key)
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
    find = search_names if kind == "regex" else glob_names
    found = find(pattern, index.names, _positions(todo), name_table(index))
    new_hit = torch.zeros(index.size, dtype=torch.bool) if hit is None else hit.clone()
    if found:
        new_hit[torch.tensor(found, dtype=torch.long)] = True
    cache[key] = (todo if checked is None else checked | todo, new_hit)
    if len(cache) > MAX_PATTERNS:
        cache.popitem(last=False)
    return domain & new_hit


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
    dotted = "." + name
    return [i for i, n in enumerate(index.names) if (root or i) and (n == name or n.endswith(dotted))]


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
