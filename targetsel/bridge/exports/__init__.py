"""Trainer exports: the keys each trainer needs in its own config to adapt exactly a selection.

Trainers rewrite LoRA targets before PEFT sees them — LLaMA-Factory expands `lora_target` by
substring on composite models, unsloth loops over a list and adds MoE experts, TRL turns a one-item
list into a regex, ms-swift expands `all-linear` — so a PEFT-exact `target_modules` can still be
wrong there. Each trainer module replays its trainer's own expansion (`expand(keys, model)`, what
the trainer hands `LoraConfig`, cited by file and version) and offers candidate keys; every
candidate is judged by a real `get_peft_model` with `patch()`'s judgement, and the first exact one
is returned. Where none is exact the export refuses with `ExportError`, saying why and what the
closest exact alternative is. No key set that over- or under-matches is ever returned.

    >>> export(select(model, "linear & trainable"), "axolotl")
    {'lora_target_linear': False, 'lora_target_modules': '^(…)$'}
"""

from __future__ import annotations

import importlib
from typing import Any

from targetsel.errors import ExportError
from targetsel.text.suggest import suggest

# trainer name → its module (and the version of the trainer it replays: see each module's SOURCE)
TRAINERS = ("axolotl", "llamafactory", "swift", "unsloth", "trl", "peft")


def trainer_module(trainer: Any):
    """The module replaying `trainer`; `ExportError` (with a did-you-mean) for anything else."""
    if not isinstance(trainer, str) or trainer.strip().lower() not in TRAINERS:
        hint = suggest(trainer.strip().lower(), TRAINERS) if isinstance(trainer, str) else ""
        raise ExportError(
            f"unknown trainer {trainer!r}: targetsel exports to {', '.join(TRAINERS)}"
            + (f" ({hint})" if hint else "")
        )
    return importlib.import_module(f"targetsel.bridge.exports.{trainer.strip().lower()}")


def export(selection, trainer: str, *, parameters=None, ranks=None, alphas=None) -> dict:
    """The config keys that make `trainer` adapt exactly `selection` (and `parameters`), as a plain dict.

    `trainer`: one of `TRAINERS`. `selection`: a `Selection` (or a `ParameterSelection` alone);
    `parameters`: a `ParameterSelection` of fused expert parameters (`target_parameters` or the
    trainer's equivalent); `ranks` / `alphas`: sub-selection → value, as for `patch()`, where the
    trainer has a key for them. Raises `ExportError` when the trainer cannot express the selection
    exactly, and `patch()`'s errors (`PreflightError`, `ConfigError`) for selections PEFT itself refuses.
    """
    from targetsel.bridge.exports._common import build_request, first_exact, refuse

    module = trainer_module(trainer)
    request = build_request(module.NAME, selection, parameters, ranks, alphas)
    keys, failed = first_exact(request, module.candidates(request), module.EXPANSIONS)
    if keys is not None:
        return keys
    raise refuse(request, module.why_not(request, failed), module.alternative(request, failed))


__all__ = ["TRAINERS", "export", "trainer_module"]
