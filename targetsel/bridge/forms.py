"""Which compiled `target_modules` forms the installed PEFT keeps as written on a model.

The views compile forms exact *by name*; PEFT may still rewrite a value before matching (its
transformers-5 MoE conversion turns `*_proj` targets into fused `target_parameters`, the Mamba
guard drops `out_proj`). This keeps the forms PEFT leaves alone and explains the refusal otherwise.
"""

from __future__ import annotations

import json
from typing import Union

from targetsel.errors import ConfigError, TargetselError
from targetsel.model.resolution import Resolution
from targetsel.views.targets import candidate_forms, shortest, size


def targets_peft_keeps(res: Resolution, form: str = "auto") -> Union[str, list[str]]:
    """The shortest exact form of `form` that PEFT matches as written; `ConfigError` when it keeps none."""
    return shortest(kept_by_peft(res, candidate_forms(res, form), form))


def kept_by_peft(res: Resolution, candidates: list, form: str) -> list:
    """The candidates PEFT matches as written on this model; ConfigError when it rewrites or rejects all."""
    from targetsel.bridge.verify import peft_rewrites

    selected = res.names
    kept, refused = [], []
    for value in candidates:
        why = peft_rewrites(res.model, value, selected)
        if why is None:
            kept.append(value)
        else:
            refused.append((value, why))
    if kept:
        return kept
    value, why = min(refused, key=lambda pair: size(pair[0]))
    shown = json.dumps(value)
    shown = shown if len(shown) <= 100 else shown[:99] + "…"
    instead = _what_peft_adapts_instead(res, value)
    if form == "auto":
        advice = (
            "No form targetsel can write survives that on this model: leave those modules out of the selection, "
            "or target fused experts with .parameters()."
        )
    else:
        advice = "Use form='auto', which picks a form PEFT keeps when there is one."
    raise ConfigError(f"to_peft(form={form!r}) = {shown} is not what PEFT matches here: {why}{instead}. {advice}")


def _what_peft_adapts_instead(res: Resolution, value) -> str:
    from peft import LoraConfig

    from targetsel.bridge.verify import dry_run
    from targetsel.text.grouping import adapter_differences

    try:
        outcome = dry_run(res.model, LoraConfig(target_modules=value))
    except TargetselError:
        return ""
    if outcome.error is not None:
        return ""
    parts = adapter_differences(res.names, outcome.modules)
    if outcome.parameters:
        parts.append(f"{len(outcome.parameters)} fused parameter(s) would be adapted instead")
    return "; so " + "; ".join(parts) if parts else ""
