"""`patch(config, selection)`: a new PEFT config that targets exactly the selection."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from .errors import ConfigError, TargetselError

# Config fields that can change which modules PEFT targets, besides target_modules itself. Fields
# that only make sense together (layers_pattern needs layers_to_transform) are cleared together.
MATCH_CHANGING_FIELDS = (("exclude_modules",), ("modules_to_save",), ("layers_to_transform", "layers_pattern"))


def nested_pairs(selection) -> list[tuple[str, str]]:
    """(ancestor, descendant) pairs of selected modules, nearest selected ancestor for each descendant."""
    from .checks import nested_pairs as position_pairs

    index = selection._index()
    return [(index.names[a], index.names[d]) for a, d in position_pairs(index, selection._mask())]


def _new_config(config: Any, **changes):
    try:
        return dataclasses.replace(copy.deepcopy(config), **changes)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{type(config).__name__} rejected the compiled targets: {exc}") from None


def patch(config: Any, selection, *, form: str = "auto", strict: bool = True):
    """A new config of the same class whose `target_modules` make PEFT target exactly `selection`.

    The input config is never changed. Runs the preflight `targetsel.check()` first: errors
    (empty selection, nested targets, types the method cannot wrap, `modules_to_save` overlap, …)
    raise a `PreflightError` subclass listing the findings, and warnings are emitted once each as
    `TargetselWarning`. `strict=False` turns the errors PEFT would survive (modules-to-save-overlap:
    PEFT skips those modules) into warnings. Raises `ConfigError` when another field of the config
    (exclude_modules, layers_to_transform, …) would change the set PEFT targets.
    """
    from .selection import Selection
    from .verify import require_peft_config, verify

    require_peft_config(config)
    if not isinstance(selection, Selection):
        raise TargetselError(
            f"patch(config, selection) needs a targetsel Selection, got {type(selection).__name__}; "
            "build one with targetsel.select(model, ...)"
        )
    from .checks import check, enforce

    # Empty selections and nested targets are findings too: they raise EmptySelectionError / NestedTargetsError.
    downgraded = enforce(check(selection.model, selection, config=config), strict=strict, stacklevel=3)
    skipped = {n for f in downgraded if f.code == "modules-to-save-overlap" for n in f.modules}
    names = selection.names()
    value = selection.to_peft(form)
    new = _new_config(config, target_modules=value)
    got = verify(selection.model, new)
    if got != [n for n in names if n not in skipped]:
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
