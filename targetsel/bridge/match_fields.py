"""The PEFT config fields that change which modules `get_peft_model` adapts, besides `target_modules`.

One list, for everything that asks "does a field of this config change the targets?": `patch()`
names the field that makes a compiled form inexact, and `check()` says what an empty config target
would adapt without the fields that remove targets. Both clear fields the same way: `without()`.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

from targetsel.errors import ConfigError


@dataclass(frozen=True)
class FieldGroup:
    """Fields cleared together (layers_pattern only means something beside layers_to_transform).

    `removes`: the fields can take modules out of what the targets match (exclusion, modules_to_save
    skipping, a layer filter); otherwise they add or move adapted modules."""

    fields: tuple[str, ...]
    removes: bool


MATCH_CHANGING_FIELDS = (
    FieldGroup(("exclude_modules",), removes=True),
    FieldGroup(("modules_to_save",), removes=True),
    FieldGroup(("layers_to_transform", "layers_pattern"), removes=True),
    FieldGroup(("layer_replication",), removes=False),
    FieldGroup(("ensure_weight_tying",), removes=False),
    FieldGroup(("trainable_token_indices",), removes=False),
    FieldGroup(("target_parameters",), removes=False),
)

# A cleared field's value: PEFT's default for it (ensure_weight_tying is a bool, the others optional).
_CLEARED = {"ensure_weight_tying": False}


def cleared_value(field: str) -> Any:
    return _CLEARED.get(field)


def is_set(config: Any, field: str) -> bool:
    """Does `config` carry `field` with a value other than "nothing" (None, an empty container, False)?"""
    value = getattr(config, field, None)
    if value is None or value is False:
        return False
    return not (isinstance(value, (str, list, tuple, set, frozenset, dict)) and not value)


def set_fields(config: Any, *, removing_only: bool = False) -> list[tuple[str, ...]]:
    """The groups of match-changing fields `config` carries, each as the fields of it that are set."""
    groups = []
    for group in MATCH_CHANGING_FIELDS:
        if removing_only and not group.removes:
            continue
        present = tuple(f for f in group.fields if is_set(config, f))
        if present:
            groups.append(present)
    return groups


def without(config: Any, fields, **changes) -> Any:
    """A copy of `config` with `fields` cleared (and `changes` applied); the input is never changed.

    `ConfigError` when the config class refuses the result (its `__post_init__` validates fields)."""
    cleared = {f: cleared_value(f) for f in fields}
    try:
        return dataclasses.replace(copy.deepcopy(config), **cleared, **changes)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{type(config).__name__} rejected the compiled targets: {exc}") from None
