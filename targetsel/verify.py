"""What the installed PEFT will target with a config — decided by PEFT's own matching code.

`prepare_config` reproduces, on a deep copy, what `BaseTuner.inject_adapter` does to the config
before matching (transformers-v5 MoE conversion, "all-linear" expansion, condensation of long
lists with `_find_minimal_target_modules`). Matching then calls PEFT's
`check_target_module_exists`. For long lists that is O(modules × entries), so candidates are
found first with the O(N) suffix rule (`compile.list_matches`, proven equal to PEFT's in the
tests) and only candidates are passed to PEFT's function.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from torch import nn

from .compile import list_matches
from .errors import ConfigError
from .index import get_index


def require_peft_config(config: Any, what: str = "patch()") -> None:
    try:
        from peft import PeftConfig
    except ImportError as exc:  # pragma: no cover - peft is a hard dependency
        raise ConfigError(f"{what} needs peft installed: {exc}") from None
    if not isinstance(config, PeftConfig) or not dataclasses.is_dataclass(config):
        raise ConfigError(
            f"{what} needs a PEFT config object such as peft.LoraConfig(r=16), got {type(config).__name__}"
            + (" (a dict: build the config with LoraConfig(**d) first)" if isinstance(config, dict) else "")
        )
    if not any(f.name == "target_modules" for f in dataclasses.fields(config)):
        raise ConfigError(
            f"{type(config).__name__} ({config.peft_type}) has no target_modules field: it does not put "
            "adapters on chosen modules (prompt-learning methods adapt the input, not layers)."
        )
    if str(getattr(config.peft_type, "value", config.peft_type)) == "ADAPTION_PROMPT":
        raise ConfigError(
            "AdaptionPromptConfig.target_modules names the attention class to prepend prompts to (e.g. 'self_attn'), "
            "not modules matched by PEFT's target rules; targetsel cannot make it exact. Set it by hand."
        )


def prepare_config(model: nn.Module, config: Any):
    """A deep copy of `config` as `inject_adapter` sees it just before matching module names."""
    from peft.tuners.tuners_utils import _find_minimal_target_modules, _maybe_include_all_linear_layers
    from peft.utils.constants import MIN_TARGET_MODULES_FOR_OPTIMIZATION
    from peft.utils.peft_types import PeftType

    cfg = copy.deepcopy(config)
    if hasattr(getattr(model, "config", None), "model_type"):
        try:
            from peft.import_utils import is_transformers_ge_v5
            from peft.utils.transformers_weight_conversion import (
                convert_peft_config_for_transformers,
                get_model_conversion_mapping,
            )
        except ImportError:  # older peft: no conversion step
            pass
        else:
            if is_transformers_ge_v5:
                convert_peft_config_for_transformers(cfg, model=model, conversions=get_model_conversion_mapping(model))
    if cfg.target_modules is None:
        cfg = _infer_default_targets(cfg, model)
    cfg = _maybe_include_all_linear_layers(cfg, model)
    targets = cfg.target_modules
    if (
        isinstance(targets, (list, set))
        and len(targets) >= MIN_TARGET_MODULES_FOR_OPTIMIZATION
        and cfg.peft_type != PeftType.IA3
    ):
        names = get_index(model).names
        matched = list_matches(targets, names)
        names_no_target = [n for n, m in zip(names, matched) if not m]
        condensed = _find_minimal_target_modules(targets, names_no_target)
        if len(condensed) < len(targets):
            cfg.target_modules = condensed
    return cfg


def _infer_default_targets(cfg, model):
    """PEFT fills target_modules=None from its per-architecture table; do the same on the copy."""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    tuner = PEFT_TYPE_TO_TUNER_MAPPING.get(cfg.peft_type)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    mapping = getattr(tuner, "target_module_mapping", None) or {}
    targets = mapping.get(model_type) if model_type else None
    if targets is None:
        raise ConfigError(
            f"{type(cfg).__name__}.target_modules is None and PEFT has no default targets for "
            f"model type {model_type!r}: set target_modules (e.g. with targetsel.patch)."
        )
    cfg.target_modules = set(targets) if not isinstance(targets, str) else targets
    return cfg


def verify(model: nn.Module, config: Any) -> list[str]:
    """The module names the installed PEFT will target with `config`, in model order."""
    from peft.tuners.tuners_utils import _ExcludedModule, check_target_module_exists
    from peft.utils.constants import DUMMY_TARGET_MODULES

    require_peft_config(config, "verify()")
    index = get_index(model)
    cfg = prepare_config(model, config)
    targets = cfg.target_modules
    names = index.names
    if targets is None or targets == DUMMY_TARGET_MODULES:
        return []
    if isinstance(targets, str):
        candidates = range(1, len(names))
    else:
        matched = list_matches(targets, names)
        candidates = [i for i in range(1, len(names)) if matched[i]]
    out = []
    for i in candidates:
        result = check_target_module_exists(cfg, names[i])
        if result and not isinstance(result, _ExcludedModule):
            out.append(names[i])
    return out
