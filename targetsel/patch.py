"""`patch(config, selection)`: a new PEFT config that targets exactly the selection."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from .errors import ConfigError, EmptySelectionError, NestedTargetsError, TargetselError

# Config fields that can change which modules PEFT targets, besides target_modules itself. Fields
# that only make sense together (layers_pattern needs layers_to_transform) are cleared together.
MATCH_CHANGING_FIELDS = (("exclude_modules",), ("modules_to_save",), ("layers_to_transform", "layers_pattern"))


def nested_pairs(selection) -> list[tuple[str, str]]:
    """(ancestor, descendant) pairs of selected modules, nearest selected ancestor for each descendant."""
    index = selection._index()
    mask = selection._mask()
    inner = (index.ancestors_mask(mask) & mask).nonzero().flatten().tolist()
    selected = mask.tolist()
    pairs = []
    for i in inner:
        p = index.parents[i]
        while p > 0 and not selected[p]:
            p = index.parents[p]
        pairs.append((index.names[p], index.names[i]))
    return pairs


def _new_config(config: Any, **changes):
    try:
        return dataclasses.replace(copy.deepcopy(config), **changes)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{type(config).__name__} rejected the compiled targets: {exc}") from None


def patch(config: Any, selection, *, form: str = "auto"):
    """A new config of the same class whose `target_modules` make PEFT target exactly `selection`.

    The input config is never changed. Raises `TargetselError` subclasses when the selection is
    empty, holds nested targets, or when another field of the config (exclude_modules,
    modules_to_save, layers_to_transform, …) would change the set PEFT targets.
    """
    from .selection import Selection
    from .verify import require_peft_config, verify

    require_peft_config(config)
    if not isinstance(selection, Selection):
        raise TargetselError(
            f"patch(config, selection) needs a targetsel Selection, got {type(selection).__name__}; "
            "build one with targetsel.select(model, ...)"
        )
    names = selection.names()
    if not names:
        from .diagnose import explain_empty

        raise EmptySelectionError(explain_empty(selection))
    pairs = nested_pairs(selection)
    if pairs:
        shown = "\n".join(f"  {a}  ⊃  {d}" for a, d in pairs[:8])
        more = f"\n  … and {len(pairs) - 8} more" if len(pairs) > 8 else ""
        raise NestedTargetsError(
            f"{len(pairs)} selected module(s) sit inside another selected module; PEFT would wrap the outer "
            f"one and then crash (AttributeError) reaching the inner one:\n{shown}{more}\n"
            "Keep one level: add .leaf() (innermost) or .outermost() (outermost), or & leaf / & outermost in a query."
        )
    value = selection.to_peft(form)
    new = _new_config(config, target_modules=value)
    got = verify(selection.model, new)
    if got != names:
        _raise_mismatch(config, selection, value, names, got)
    return new


def _raise_mismatch(config, selection, value, names: list[str], got: list[str]) -> None:
    from .verify import verify

    wanted, seen = set(names), set(got)
    lost = [n for n in names if n not in seen]
    extra = [n for n in got if n not in wanted]
    culprits = []
    for group in MATCH_CHANGING_FIELDS:
        present = [f for f in group if getattr(config, f, None) not in (None, [], "", set())]
        if not present:
            continue
        try:
            cleared = _new_config(config, target_modules=value, **{f: None for f in present})
        except ConfigError:
            continue
        if verify(selection.model, cleared) != got:
            culprits.extend(present)
    fields = ", ".join(f"{f}={getattr(config, f)!r}" for f in culprits) or "a field of the config"
    from .grouping import summarize_names

    detail = []
    if lost:
        detail.append(f"{len(lost)} selected module(s) would not be targeted: {summarize_names(lost, limit=4)}")
    if extra:
        detail.append(f"{len(extra)} unselected module(s) would be targeted: {summarize_names(extra, limit=4)}")
    raise ConfigError(
        f"{type(config).__name__} carries {fields}, which changes what PEFT targets: "
        + "; ".join(detail)
        + ". Remove the field (express it in the selection instead, e.g. - under:NAME) and patch again."
    )
