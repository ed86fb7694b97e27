"""`audit(peft_model, selection)`: after `get_peft_model`, did PEFT wrap exactly what was selected?

`get_peft_model` rewrites the model in place — layers become `lora.Linear` wrappers, base
weights get frozen — so a selection evaluated afterwards would no longer mean what it meant.
The names a selection resolved to when it was patched are remembered (per model and selector,
weakly), and `audit` compares against those; a lock (`sel.lock()`) or a plain list of names works
as the reference too.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any, Union

from torch import nn

from .errors import TargetselError
from .grouping import summarize_names

# model → {selector node → names resolved before injection}
_REMEMBERED: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def remember(selection, names: list[str]) -> None:
    """Record what `selection` resolved to (called by `patch()` and `lock()`, before injection)."""
    try:
        _REMEMBERED.setdefault(selection.model, {})[selection._node] = list(names)
    except TypeError:  # an unhashable predicate inside .where(fn): nothing to key on
        pass


@dataclass(frozen=True)
class Audit:
    """What PEFT wrapped compared with what was selected. `ok` when both sets are equal."""

    expected: tuple[str, ...]
    wrapped: tuple[str, ...]
    missing: tuple[str, ...] = field(default=())
    unexpected: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        if self.ok:
            return f"audit ok: PEFT wrapped exactly the {len(self.expected)} selected module(s)"
        lines = [f"audit FAILED: PEFT wrapped {len(self.wrapped)} module(s); {len(self.expected)} were selected"]
        if self.missing:
            lines.append(f"  missing ({len(self.missing)}, selected but not wrapped): {summarize_names(list(self.missing))}")
        if self.unexpected:
            lines.append(f"  unexpected ({len(self.unexpected)}, wrapped but not selected): {summarize_names(list(self.unexpected))}")
        return "\n".join(lines)


def wrapped_modules(peft_model: nn.Module) -> list[str]:
    """Names (relative to the base model) of the modules PEFT replaced with adapter layers, model order."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    base = _base_model(peft_model)
    return [n for n, m in base.named_modules() if isinstance(m, BaseTunerLayer) and not _inside_tuner(n, base)]


def _inside_tuner(name: str, base: nn.Module) -> bool:
    # PEFT nests wrappers only through `base_layer`; a tuner layer inside another is not a target.
    return ".base_layer" in f".{name}"


def _base_model(peft_model: nn.Module) -> nn.Module:
    from peft import PeftModel

    if isinstance(peft_model, PeftModel):
        return peft_model.base_model.model
    if not isinstance(peft_model, nn.Module):
        raise TargetselError(f"audit(peft_model, ...) needs the model get_peft_model returned, got {type(peft_model).__name__}")
    return getattr(peft_model, "model", peft_model) if _is_tuner_model(peft_model) else peft_model


def _is_tuner_model(model: nn.Module) -> bool:
    from peft.tuners.tuners_utils import BaseTuner

    return isinstance(model, BaseTuner)


def audit(peft_model: nn.Module, selection: Union[Any, list, tuple, dict]) -> Audit:
    """Compare the modules PEFT wrapped in `peft_model` with `selection`.

    `selection` is the `Selection` that was patched (its names as resolved then are used), a lock
    from `Selection.lock()`, or a list of module names.
    """
    expected = _expected_names(peft_model, selection)
    wrapped = wrapped_modules(peft_model)
    want, got = set(expected), set(wrapped)
    return Audit(
        expected=tuple(expected),
        wrapped=tuple(wrapped),
        missing=tuple(n for n in expected if n not in got),
        unexpected=tuple(n for n in wrapped if n not in want),
    )


def _expected_names(peft_model, selection) -> list[str]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    from .selection import Selection

    if isinstance(selection, dict):
        from .lock import read_lock

        return list(read_lock(selection)["names"])
    if isinstance(selection, (list, tuple)):
        if not all(isinstance(n, str) for n in selection):
            raise TargetselError("audit(peft_model, names): names must be strings")
        return list(selection)
    if not isinstance(selection, Selection):
        raise TargetselError(
            f"audit(peft_model, selection): pass the Selection you patched with, its lock() or a list of names; "
            f"got {type(selection).__name__}"
        )
    model = selection.model
    wrapped_now = any(isinstance(m, BaseTunerLayer) for m in model.modules())
    if not wrapped_now:
        return selection.names()
    remembered = _REMEMBERED.get(model, {}).get(selection._node)
    if remembered is None:
        raise TargetselError(
            f"the model of selection {selection.query!r} has been rewritten by get_peft_model, and this selection "
            "was never patched, so what it meant before injection is unknown. Pass the selection you gave "
            "patch(), or take sel.lock() (or sel.names()) before get_peft_model and pass that."
        )
    return remembered
