"""Compile a selection to a `target_modules` value that PEFT matches exactly.

PEFT matches a *list* entry by exact name or by dotted suffix, and a *string* with
`re.fullmatch`. A list of full names therefore over-matches whenever another module's name
ends with `"." + selected_name`; the regex form never does. Every form is checked against all
module names of the model with an O(N) equivalent of PEFT's list rule (`list_matches`), which
the test-suite proves equal to PEFT's own `check_target_module_exists`.
"""

from __future__ import annotations

import json
import re
from typing import Iterable, Optional, Union

from targetsel.errors import EmptySelectionError, SelectionError, TargetselError
from targetsel.model.resolution import Resolution
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


def _selected_and_others(res: Resolution) -> tuple[list[str], list[str], list[bool]]:
    both = target_names(res.index, res.mask)  # a wrapped model: exact on its names and the plain model's
    return both if both is not None else (res.names, res.index.names, res.mask.tolist())


def _require_nonempty(res: Resolution, selected: list[str]) -> None:
    if not selected:
        from targetsel.views.diagnose import explain_empty

        raise EmptySelectionError(explain_empty(res))


def _check_exact(kind: str, matched: list[bool], mask: list[bool], names: list[str]) -> None:
    # Position 0 is the root (""): PEFT never matches it, so it does not count.
    wrong = [n for n, got, want in zip(names[1:], matched[1:], mask[1:]) if got != want]
    if wrong:
        # Point at a form built by other code than the one that failed.
        other = "form='suffixes' or form='list'" if kind == "regex" else "form='regex'"
        raise AssertionError(
            f"internal error: the {kind} form is not exact for {len(wrong)} module(s), e.g. {wrong[:3]}. "
            f"Please report this with the model; use {other} meanwhile."
        )


def exact_regex(res: Resolution) -> str:
    selected, names, mask = _selected_and_others(res)
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
    selected, names, mask = _selected_and_others(res)
    _require_nonempty(res, selected)
    candidates: list[Union[str, list[str]]] = []
    if form in ("list", "auto"):
        matched = list_matches(selected, names)
        if any(g != w for g, w in zip(matched[1:], mask[1:])):
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
        suffixes = minimal_suffixes(selected, names, mask)
        if suffixes is None and form == "suffixes":
            raise SelectionError(
                "no exact suffix list exists: an unselected module's name ends with a selected module's "
                "full name. Use form='regex' (or 'auto')."
            )
        if suffixes is not None:
            _check_exact("suffixes", list_matches(suffixes, names), mask, names)
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
