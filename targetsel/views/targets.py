"""Compile a selection to a `target_modules` value that PEFT matches exactly.

PEFT matches a *list* entry by exact name or by dotted suffix, and a *string* with
`re.fullmatch`. A list of full names therefore over-matches whenever another module's name
ends with `"." + selected_name`; the regex form never does. Every form is checked against all
module names of the model with an O(N) equivalent of PEFT's list rule (`list_matches`), which
the test-suite proves equal to PEFT's own `check_target_module_exists`. On a model's own names
the same rule and the minimal suffixes run on integer keys of every dotted suffix, built once per
index (`_SuffixKeys`): a few tensor operations per name depth instead of a set of 400k strings.
"""

from __future__ import annotations

import json
import re
from typing import Iterable, Optional, Union

import torch

from targetsel.errors import EmptySelectionError, SelectionError, TargetselError
from targetsel.model.arrays import long_tensor
from targetsel.model.resolution import Resolution
from targetsel.model.threads import single_threaded
from targetsel.model.wrappers import target_names
from targetsel.text.names_regex import names_regex

FORMS = ("auto", "list", "suffixes", "regex")


def _dotted_suffixes(name: str) -> Iterable[str]:
    """Proper dotted suffixes of `name`, longest first: a.b.c → b.c, c."""
    start = name.find(".")
    while start >= 0:
        yield name[start + 1 :]
        start = name.find(".", start + 1)


def list_matches(entries: Iterable[str], names: Iterable[str]) -> list[bool]:
    """PEFT's list rule (exact name or dotted suffix) for every name, in O(total segments)."""
    targets = set(entries)
    return [name in targets or any(s in targets for s in _dotted_suffixes(name)) for name in names]


def regex_matches(pattern: str, names: Iterable[str]) -> list[bool]:
    full = re.compile(pattern).fullmatch
    return [full(name) is not None for name in names]


def _selected_and_others(res: Resolution) -> tuple[list[str], list[str], list[bool], Optional["_SuffixKeys"]]:
    """(selected names, all names, mask, the index's suffix keys when the names are the index's own)."""
    both = target_names(res.index, res.mask)  # a wrapped model: exact on its names and the plain model's
    if both is not None:
        return (*both, None)
    return res.names, res.index.names, res.mask.tolist(), suffix_keys(res.index)


class _SuffixKeys:
    """Every dotted suffix of every module name as an integer, level by level, once per index.

    `levels[k-1][i]` identifies the last k segments of name i (-1 when it has fewer, and for the
    root): name i is `prefix + "." + leaf` with `prefix` the name at `parent[i]`, so its level-k key
    is the pair (level k-1 key of the parent, leaf). PEFT's list rule and the minimal suffixes then
    become a few tensor operations per level instead of a set of every suffix of every name."""

    def __init__(self, parent: list[int], leaf: list[int], depth: list[int], leaves: dict[str, int]):
        n = len(parent)
        self.leaves = leaves
        parent_t, leaf_t = long_tensor(parent), long_tensor(leaf)
        self.depth = long_tensor(depth)  # segments per name (0: the root)
        key = leaf_t  # level 1: the last segment (the root has none: -1)
        self.levels, self._pairs = [key], [None]  # _pairs[k-1]: the sorted (parent key, leaf) pair codes of level k
        self._codes: dict[int, dict] = {}  # level → {pair code: key}, built when an entry first reaches that level
        width = max(len(leaves), 1)
        for k in range(2, int(self.depth.max()) + 1 if n > 1 else 1):
            here = self.depth >= k
            code = key[parent_t[here]] * width + leaf_t[here]
            uniq, inverse = torch.unique(code, return_inverse=True)
            key = torch.full_like(leaf_t, -1)
            key[here] = inverse
            self.levels.append(key)
            self._pairs.append(uniq)
        self.width = width

    def _code_table(self, level: int) -> dict:
        table = self._codes.get(level)
        if table is None:  # most entries are short: the deep levels (one key per module) are rarely asked
            pairs = self._pairs[level]
            table = self._codes[level] = dict(zip(pairs.tolist(), range(len(pairs))))
        return table

    def entry_key(self, entry: str, known: Optional[dict] = None) -> Optional[tuple[int, int]]:
        """(level, key) of the names that equal `entry` or end with '.' + entry; None when none does.

        `known`: keys of entries already looked up (suffixes share their leading segments)."""
        known = {} if known is None else known
        if entry in known:
            return known[entry]
        head, dot, tail = entry.rpartition(".")
        leaf = self.leaves.get(tail)
        found = None
        if leaf is not None and not dot:
            found = (1, leaf)
        elif leaf is not None:
            before = self.entry_key(head, known)
            if before is not None and before[0] < len(self.levels):
                key = self._code_table(before[0]).get(before[1] * self.width + leaf)
                found = None if key is None else (before[0] + 1, key)
        known[entry] = found
        return found

    @single_threaded  # one entry per module: torch's thread pool only adds overhead (model/threads.py)
    def list_matches(self, entries: Iterable[str]) -> list[bool]:
        """`list_matches(entries, index.names)`, by keys."""
        matched = torch.zeros(len(self.depth), dtype=torch.bool)
        wanted: dict[int, list[int]] = {}
        known: dict = {}
        for found in (self.entry_key(entry, known) for entry in set(entries)):
            if found is not None:
                wanted.setdefault(found[0], []).append(found[1])
        for level, keys in wanted.items():
            matched |= torch.isin(self.levels[level - 1], torch.tensor(keys, dtype=torch.long))
        matched[0] = False  # the root ("") is never matched (an entry "" has no key)
        return matched.tolist()

    @single_threaded
    def minimal_suffixes(self, names: list[str], mask: torch.Tensor) -> Optional[list[str]]:
        """`minimal_suffixes(selected, names, mask)` by keys: level by level, the selected names whose
        level-k suffix no unselected name has take it; a name left when its full name is blocked: None."""
        n = len(self.depth)
        outside = ~mask
        outside[0] = False
        remaining = mask.nonzero().flatten()
        remaining = remaining[remaining > 0]
        chosen_at = torch.zeros(n, dtype=torch.long)
        for k, key in enumerate(self.levels, start=1):
            if not len(remaining):
                break
            blocked = torch.zeros(n + 1, dtype=torch.bool)
            theirs = key[outside]
            blocked[theirs[theirs >= 0]] = True
            free = ~blocked[key[remaining]]
            chosen_at[remaining[free]] = k
            remaining = remaining[~free]
            if bool((self.depth[remaining] == k).any()):
                return None  # an unselected name ends with this selected full name
        selected = mask.nonzero().flatten()
        selected = selected[selected > 0]
        level = chosen_at[selected]
        picked = torch.zeros_like(level)
        for k in torch.unique(level).tolist():
            rows = level == k
            picked[rows] = k * n + self.levels[k - 1][selected[rows]]  # keys < n: one code per (level, key)
        _, inverse = torch.unique(picked, return_inverse=True)
        first = torch.full((int(inverse.max()) + 1 if len(inverse) else 0,), len(inverse), dtype=torch.long)
        first.scatter_reduce_(0, inverse, torch.arange(len(inverse)), reduce="amin")
        rows = torch.sort(first).values  # in the order the selected names first need them
        return [".".join(names[i].split(".")[-k:]) for i, k in zip(selected[rows].tolist(), level[rows].tolist())]


def suffix_keys(index) -> Optional[_SuffixKeys]:
    """The index's `_SuffixKeys`, once per index; None when some name's dotted prefix is not itself a
    module name (wrappers that drop segments): the string functions above answer then."""
    return index.memo("suffix_keys", lambda: _build_suffix_keys(index.names, index.parents))


@single_threaded
def _build_suffix_keys(names: list[str], parents: list[int]) -> Optional[_SuffixKeys]:
    # A name is its parent's name, a dot and its leaf (the root's children: the leaf alone); the
    # index's parent positions say which name that is, so no name → position table is needed.
    leaves: dict[str, int] = {}
    new_leaf = leaves.setdefault
    n = len(names)
    parent, leaf, depth = [0] * n, [-1] * n, [0] * n
    for i in range(1, n):
        head, dot, tail = names[i].rpartition(".")
        p = parents[i]
        if not tail or ((p == 0 or head != names[p]) if dot else p != 0) or not 0 <= p < i:
            return None  # a prefix that is no listed module (a wrapper dropped a segment), or a second root
        parent[i], leaf[i], depth[i] = p, new_leaf(tail, len(leaves)), depth[p] + 1
    return _SuffixKeys(parent, leaf, depth, leaves)


def _require_nonempty(res: Resolution, selected: list[str]) -> None:
    if not selected:
        from targetsel.views.diagnose import explain_empty

        raise EmptySelectionError(explain_empty(res))


def _check_exact(kind: str, matched: list[bool], mask: list[bool], names: list[str]) -> None:
    # Position 0 is the root (""): PEFT never matches it, so it does not count.
    if matched[1:] == mask[1:]:  # both lists of bools: compared in C, the common case
        return
    wrong = [n for n, got, want in zip(names[1:], matched[1:], mask[1:]) if got != want]
    if wrong:
        # Point at a form built by other code than the one that failed.
        other = "form='suffixes' or form='list'" if kind == "regex" else "form='regex'"
        raise AssertionError(
            f"internal error: the {kind} form is not exact for {len(wrong)} module(s), e.g. {wrong[:3]}. "
            f"Please report this with the model; use {other} meanwhile."
        )


def exact_regex(res: Resolution) -> str:
    selected, names, mask, _ = _selected_and_others(res)
    _require_nonempty(res, selected)
    pattern = "^" + names_regex(selected) + "$"
    _check_exact("regex", regex_matches(pattern, names), mask, names)
    return pattern


def minimal_suffixes(selected: list[str], names: list[str], mask: list[bool]) -> Optional[list[str]]:
    """For each selected name its shortest dotted suffix that no unselected module name matches.

    None when even a full name over-matches (another module's name ends with '.' + it).
    """
    blocked: set[str] = set()
    for name, m in zip(names[1:], mask[1:]):
        if not m:
            blocked.add(name)
            blocked.update(_dotted_suffixes(name))
    chosen: dict[str, None] = {}
    for name in selected:
        candidates = list(_dotted_suffixes(name))[::-1] + [name]  # shortest first
        pick = next((c for c in candidates if c not in blocked), None)
        if pick is None:
            return None
        chosen.setdefault(pick, None)
    return list(chosen)


def size(value) -> int:
    return len(json.dumps(value if isinstance(value, str) else sorted(value)))


def candidate_forms(res: Resolution, form: str = "auto") -> list[Union[str, list[str]]]:
    """Every exact `target_modules` value of the requested form, most readable first (by name only)."""
    if form not in FORMS:
        raise TargetselError(f"unknown form {form!r}; choose one of {', '.join(FORMS)}")
    selected, names, mask, keys = _selected_and_others(res)
    _require_nonempty(res, selected)
    if mask[0]:
        keys = None  # the root selected: only the string functions say what PEFT does with ""
    matches = keys.list_matches if keys is not None else lambda entries: list_matches(entries, names)
    candidates: list[Union[str, list[str]]] = []
    if form in ("list", "auto"):
        matched = matches(selected)
        if matched[1:] != mask[1:]:  # lists of bools
            if form == "list":
                over = [n for n, g, w in zip(names[1:], matched[1:], mask[1:]) if g and not w]
                raise SelectionError(
                    f"a list of full names would over-match here: PEFT matches list entries by dotted suffix, "
                    f"and {len(over)} unselected module(s) end with a selected name, e.g. {over[:3]}. "
                    "Use form='regex' (or 'auto')."
                )
        else:
            candidates.append(list(selected))
    if form in ("suffixes", "auto"):
        suffixes = (keys.minimal_suffixes(names, res.mask) if keys is not None
                    else minimal_suffixes(selected, names, mask))
        if suffixes is None and form == "suffixes":
            raise SelectionError(
                "no exact suffix list exists: an unselected module's name ends with a selected module's "
                "full name. Use form='regex' (or 'auto')."
            )
        if suffixes is not None:
            _check_exact("suffixes", matches(suffixes), mask, names)
            candidates.append(suffixes)
    if form in ("regex", "auto"):
        pattern = "^" + names_regex(selected) + "$"
        _check_exact("regex", regex_matches(pattern, names), mask, names)
        candidates.append(pattern)
    return candidates


def shortest(candidates: list) -> Union[str, list[str]]:
    # Shortest serialised form wins; on a tie the earlier (more readable) one.
    return min(candidates, key=size)


def compile_targets(res: Resolution, form: str = "auto") -> Union[str, list[str]]:
    """The `target_modules` value for PEFT in the requested form, checked exact by name.

    Whether the installed PEFT keeps the value as written is the bridge's question
    (`targetsel.bridge.forms.targets_peft_keeps`); `Selection.to_peft()` asks it by default.
    """
    return shortest(candidate_forms(res, form))
