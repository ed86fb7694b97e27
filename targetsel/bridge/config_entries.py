"""Config entries that match no module: dead `target_modules`, `exclude_modules` and `modules_to_save`.

Each field is judged by the rule PEFT applies to it (peft/tuners/tuners_utils.py
`check_target_module_exists`, peft/utils/other.py `_set_trainable`):

- `target_modules` / `exclude_modules` as a list: an entry matches a name that equals it or ends
  with `"." + entry`; as a string: `re.fullmatch` — the whole regex, and each alternative of an
  alternation where that can be decided exactly (text/alternatives.py);
- `modules_to_save`: a plain `name.endswith(entry)`, no dot boundary.

Names are those PEFT sees (a wrapped model's own, model/wrappers.py). A `target_modules` entry that
PEFT's transformers-5 MoE conversion rewrites before matching is not judged as written:
`peft-rewrites-targets` says what happens to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

from torch import nn

from targetsel.model.index import get_index
from targetsel.model.wrappers import peft_names
from targetsel.text.alternatives import alternatives

FIELDS = ("target_modules", "exclude_modules", "modules_to_save")


@dataclass(frozen=True)
class DeadEntry:
    field: str
    entry: str  # the list entry, the whole regex, or one alternative of it as written
    part_of: str = ""  # the regex an alternative belongs to ("" for a list entry or a whole regex)


def dead_entries(model: nn.Module, config: Any, fields: Iterable[str] = FIELDS) -> list[DeadEntry]:
    """The entries of `config`'s `fields` that match no module name of `model`, in field order."""
    names = peft_names(get_index(model))[1:]  # the root ("") is never matched
    out: list[DeadEntry] = []
    for name in fields:
        value = getattr(config, name, None)
        if not value:
            continue
        if name == "modules_to_save":
            out += [DeadEntry(name, e) for e in value if not any(n.endswith(e) for n in names)]
        elif isinstance(value, str):
            if not (name == "target_modules" and value == "all-linear"):  # PEFT's keyword, not a regex
                out += _dead_in_regex(name, value, names)
        else:
            entries = sorted(value) if isinstance(value, (set, frozenset)) else list(value)  # PEFT keeps sets
            if name == "target_modules":
                entries = [e for e in entries if e not in _rewritten(model, config)]
            suffixes = _names_and_suffixes(names)
            out += [DeadEntry(name, e) for e in entries if e not in suffixes]
    return out


def _names_and_suffixes(names: list[str]) -> set[str]:
    """Every name and every dotted suffix of one: what a list entry must equal to match."""
    found = set(names)
    for n in names:
        start = n.find(".")
        while start >= 0:
            found.add(n[start + 1 :])
            start = n.find(".", start + 1)
    return found


def _dead_in_regex(field: str, pattern: str, names: list[str]) -> list[DeadEntry]:
    try:
        full = re.compile(pattern).fullmatch
    except re.error:
        return []  # PEFT raises on it: peft-rejects says so
    if not any(full(n) for n in names):
        return [DeadEntry(field, pattern)]
    dead = []
    for alt in alternatives(pattern):
        try:
            full = re.compile(alt.regex).fullmatch
        except re.error:  # pragma: no cover - a part of a valid regex stays valid (text/alternatives.py)
            continue
        if not any(full(n) for n in names):
            dead.append(DeadEntry(field, alt.text, part_of=pattern))
    return dead


def _rewritten(model: nn.Module, config: Any) -> set[str]:
    """`target_modules` entries PEFT's transformers-5 MoE conversion takes out before matching."""
    from targetsel.bridge.verify import convert_for_transformers
    from targetsel.bridge.match_fields import without

    converted = without(config, ())
    try:
        convert_for_transformers(model, converted)
    except (ValueError, TypeError, KeyError):  # the conversion raising is peft-rejects' to report
        return set()
    after = converted.target_modules
    if isinstance(after, str) or after is None:
        return set(config.target_modules)
    return set(config.target_modules) - set(after)
