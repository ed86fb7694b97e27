"""PEFT itself: the `adapter_config.json` fields that target exactly the selection.

No trainer in between: the fields go to `LoraConfig(**fields)` (or into adapter_config.json) as
they are, so the expansion is the identity and the judge is the installed PEFT (peft 0.21 here:
its transformers-5 MoE conversion, list condensation and matching all run in the dry run). The
fields that change what PEFT targets besides the targets are written as null so that merging
them into an existing adapter_config.json clears them.
"""

from __future__ import annotations

from importlib.metadata import version

from targetsel.bridge.exports._common import Request

NAME = "peft"
SOURCE = f"peft {version('peft')}, the installed copy (LoraConfig fields, peft/tuners/lora/config.py)"

# Fields besides the targets that change what PEFT adapts (bridge/patch.py MATCH_CHANGING_FIELDS);
# layer_replication, trainable_token_indices and ensure_weight_tying are left to their defaults.
CLEARED = ("exclude_modules", "layers_to_transform", "layers_pattern", "modules_to_save")


def candidates(request: Request):
    keys: dict = {"target_modules": request.forms()[0]}
    if request.parameter_names:
        keys["target_parameters"] = request.target_parameters
    keys.update({field: None for field in CLEARED})
    keys.update(request.patterns())
    yield keys


def expand(keys: dict, model) -> dict:
    """The identity: `LoraConfig(**keys)` is what PEFT gets."""
    return dict(keys)


EXPANSIONS = (expand,)


def why_not(request: Request, failed: list) -> str:  # pragma: no cover - patch() already proved the fields
    return failed[0][1] if failed else "no field set could be built"


def alternative(request: Request, failed: list) -> str:  # pragma: no cover - see why_not
    return "targetsel.patch(LoraConfig(...), selection), which says what PEFT does instead"
