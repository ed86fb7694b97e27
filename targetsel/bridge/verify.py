"""What the installed PEFT adapts with a config: `dry_run()` and `verify()`.

The judge is a real `get_peft_model` (`injection.real_injection`: PEFT runs on a meta skeleton of
the model). Running it costs a structural copy of the model and one adapter layer per target, so
for the common case there is a fast path that calls the same PEFT code on names only:
`prepare_config` applies, on a deep copy, what `BaseTuner.inject_adapter` does to the config before
matching (the transformers-5 MoE conversion, target defaults, "all-linear", condensation of long
lists), matching calls the tuner's own `_check_target_module_exists`, the Mamba guard is PEFT's own
function, and what a method can wrap is asked from PEFT's dispatch on a one-module model (the
check probe). Whatever the fast path cannot prove equal — `layer_replication`,
`trainable_token_indices`, `ensure_weight_tying`, `target_parameters` (given or made by the MoE
conversion), nested targets, `modules_to_save` wrappers around or inside a target, a model that
already holds adapters — goes to the real injection. The test-suite checks that both agree on every
corpus model and every property-test example.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Optional

import torch
from torch import nn

from targetsel.views.targets import list_matches
from targetsel.errors import ConfigError, PeftRejectionError, TargetselError
from targetsel.text.grouping import short_repr
from targetsel.bridge.injection import Injection, real_injection
from targetsel.bridge.wrapped import user_named
from targetsel.model.index import get_index
from targetsel.model.wrappers import peft_matched, peft_names, peft_view


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


def prepare_config(model: nn.Module, config: Any, *, convert: bool = True):
    """A deep copy of `config` as `inject_adapter` sees it just before matching module names."""
    from peft.tuners.tuners_utils import _find_minimal_target_modules, _maybe_include_all_linear_layers
    from peft.utils.constants import MIN_TARGET_MODULES_FOR_OPTIMIZATION
    from peft.utils.peft_types import PeftType

    cfg = copy.deepcopy(config)
    saved = task_modules_to_save(cfg, before_injection=True)
    if saved:  # the task-model classes extend modules_to_save before injecting (peft_model.py)
        cfg.modules_to_save = list(cfg.modules_to_save or []) + [n for n in saved if n not in (cfg.modules_to_save or [])]
    if convert:
        convert_for_transformers(model, cfg)
    if cfg.target_modules is None:
        cfg = _infer_default_targets(cfg, model)
    cfg = _maybe_include_all_linear_layers(cfg, model)
    targets = cfg.target_modules
    if (
        isinstance(targets, (list, set))
        and len(targets) >= MIN_TARGET_MODULES_FOR_OPTIMIZATION
        and cfg.peft_type != PeftType.IA3
    ):
        names = peft_names(get_index(model))  # a wrapped model's own names (model/wrappers.py)
        matched = list_matches(targets, names)
        names_no_target = [n for n, m in zip(names, matched) if not m]
        condensed = _find_minimal_target_modules(targets, names_no_target)
        if len(condensed) < len(targets):
            cfg.target_modules = condensed
    return cfg


def convert_for_transformers(model: nn.Module, cfg: Any) -> None:
    """PEFT's transformers-5 conversion of the config, in place, as `inject_adapter` runs it first."""
    if not hasattr(getattr(model, "config", None), "model_type"):
        return
    try:
        from peft.import_utils import is_transformers_ge_v5
        from peft.utils.transformers_weight_conversion import (
            convert_peft_config_for_transformers,
            get_model_conversion_mapping,
        )
    except ImportError:  # older peft: no conversion step
        return
    if is_transformers_ge_v5:
        convert_peft_config_for_transformers(cfg, model=model, conversions=get_model_conversion_mapping(model))


def peft_rewrites(model: nn.Module, value, selected: list[str]) -> Optional[str]:
    """Why LoRA's `get_peft_model` would not match `target_modules=value` as written on this model
    (its MoE conversion rewrites it, or it rejects it by name), or None when it keeps it.

    Name-level rules only — what any LoRA-family config meets; the method's own dispatch and the
    other config fields are `dry_run()`'s business."""
    from peft import LoraConfig

    cfg = LoraConfig(target_modules=copy.deepcopy(value))
    try:
        convert_for_transformers(model, cfg)
    except (ValueError, TypeError, KeyError) as exc:
        return f"get_peft_model raises {type(exc).__name__}: {exc}"
    after = cfg.target_modules
    moved = sorted(getattr(cfg, "target_parameters", None) or ())
    same = after == value if isinstance(value, str) or isinstance(after, str) else set(after) == set(value)
    if not same and not moved and _rewrite_is_harmless(model, cfg, selected):
        same = True  # e.g. a regex resolved to leaf names that still match exactly the selection
    if not same or moved:
        model_type = getattr(getattr(model, "config", None), "model_type", "?")
        shown = after if isinstance(after, str) else sorted(after)
        return (
            f"PEFT's transformers-5 MoE conversion rewrites it for {model_type!r} models to target_modules="
            f"{short_repr(shown)}" + (f" plus target_parameters={short_repr(moved)}" if moved else "")
        )
    try:
        from peft.tuners.tuners_utils import _check_lora_target_modules_mamba
    except ImportError:  # older peft: no guard
        return None
    for leaf in dict.fromkeys(n.rpartition(".")[2] for n in selected):
        try:
            _check_lora_target_modules_mamba(cfg, model, leaf)
        except ValueError as exc:
            return f"get_peft_model raises ValueError: {exc}"
    return None


def _rewrite_is_harmless(model: nn.Module, converted: Any, selected: list[str]) -> bool:
    """Do the rewritten targets still match exactly the selected names (by PEFT's own matcher)?"""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    index, tuner = get_index(model), PEFT_TYPE_TO_TUNER_MAPPING[converted.peft_type]
    matched = peft_matched(index, lambda seen: _matched_positions(tuner, converted, seen))
    return matched is not None and [index.names[i] for i in matched] == list(selected)


def converted_names(model: nn.Module, names: list[str]) -> set[str]:
    """The names LoRA's transformers-5 MoE conversion takes out of a `target_modules` list (they
    become fused-expert or router `target_parameters` and never reach the method's dispatch)."""
    from peft import LoraConfig

    if not names or not hasattr(getattr(model, "config", None), "model_type"):
        return set()
    cfg = LoraConfig(target_modules=list(names))
    try:
        convert_for_transformers(model, cfg)
    except (ValueError, TypeError, KeyError):
        return set()
    return set(names) - set(cfg.target_modules or ())


def _infer_default_targets(cfg, model):
    """PEFT fills target_modules=None from its per-architecture table; do the same on the copy."""
    from targetsel.bridge.peft_support import default_targets

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    targets = default_targets(cfg.peft_type).get(model_type) if model_type else None
    if targets is None:
        raise PeftRejectionError(
            f"{type(cfg).__name__}.target_modules is None and PEFT has no default targets for "
            f"model type {model_type!r}: set target_modules (e.g. with targetsel.bridge.patch).",
            "ValueError: Please specify `target_modules` in `peft_config`",
        )
    cfg.target_modules = set(targets) if not isinstance(targets, str) else targets
    return cfg


# Task-model classes add these to modules_to_save (peft/peft_model.py): sequence and token
# classification before injecting (so matching skips them too), question answering after.
_TASK_MODULES_TO_SAVE = {"SEQ_CLS": (("classifier", "score"), True), "TOKEN_CLS": (("classifier", "score"), True),
                         "QUESTION_ANS": (("qa_outputs",), False)}


def task_modules_to_save(config: Any, *, before_injection: Optional[bool] = None) -> tuple[str, ...]:
    if not hasattr(config, "modules_to_save"):
        return ()
    task = getattr(config, "task_type", None)
    names, before = _TASK_MODULES_TO_SAVE.get(str(getattr(task, "value", task)), ((), True))
    return names if before_injection is None or before == before_injection else ()


def effective_modules_to_save(config: Any) -> list[str]:
    """`modules_to_save` as get_peft_model applies it: the config's own entries and the task defaults."""
    own = list(getattr(config, "modules_to_save", None) or [])
    return own + [n for n in task_modules_to_save(config) if n not in own]


def verify(model: nn.Module, config: Any, *, real: bool = False) -> list[str]:
    """The module names a real `get_peft_model(model, config)` wraps with adapter layers, model order.

    Raises `PeftRejectionError` (a `ConfigError`) with PEFT's own message when get_peft_model would
    raise. `real=True` always runs PEFT itself on a skeleton of the model; otherwise the fast path
    answers where it is proven equal (see the module docstring). `dry_run()` gives the whole answer:
    adapted parameters, modules_to_save wrappers, trainable-token layers, the reload check.
    """
    result = dry_run(model, config, real=real)
    if result.error is not None:
        raise PeftRejectionError(
            f"get_peft_model would raise on this {type(config).__name__} and {type(model).__name__}: {result.error}",
            result.error,
        )
    if _method(config) == "TRAINABLE_TOKENS":  # the method's own layers are token layers
        return [n for n in result.tokens if n not in set(result.mirrors)]
    return list(result.modules)


def _method(config: Any) -> str:
    return str(getattr(config.peft_type, "value", config.peft_type))


def dry_run(model: nn.Module, config: Any, *, real: bool = False) -> Injection:
    """What `get_peft_model(model, config)` would adapt, without touching `model`.

    `real=True` (or any config the fast path cannot prove) runs the installed PEFT on a meta
    skeleton of the model and also checks that the saved adapter reloads onto the same set.
    """
    require_peft_config(config, "dry_run()")
    index = get_index(model)
    fast = None if real else _fast_path(model, config, index)
    return fast if fast is not None else user_named(real_injection(model, config), index)


def _needs_real(config: Any) -> bool:
    """Config fields whose effect only a real injection shows (they add or move adapted modules)."""
    return bool(
        _method(config) == "TRAINABLE_TOKENS"  # token layers, tied mirrors
        or getattr(config, "layer_replication", None)
        or getattr(config, "trainable_token_indices", None)
        or getattr(config, "ensure_weight_tying", False)
        or getattr(config, "target_parameters", None)
    )


def _fast_path(model: nn.Module, config: Any, index) -> Optional[Injection]:
    """PEFT's own matching code on names only; None where only a real injection can tell."""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING
    from peft.utils.constants import DUMMY_TARGET_MODULES

    tuner = PEFT_TYPE_TO_TUNER_MAPPING.get(config.peft_type)
    if tuner is None or _needs_real(config) or _has_tuner_layers(index):
        return None
    try:
        cfg = prepare_config(model, config)
    except PeftRejectionError as exc:
        return Injection(error=exc.peft_error, how="fast")
    except (ValueError, TypeError, KeyError) as exc:  # PEFT's conversion raising, as inject_adapter would
        return Injection(error=f"{type(exc).__name__}: {exc}", how="fast")
    if getattr(cfg, "target_parameters", None):
        return None  # the MoE conversion moved targets to fused parameters
    targets = cfg.target_modules
    names = index.names
    if targets == DUMMY_TARGET_MODULES:
        return Injection(target_modules=targets, how="fast")
    matched = peft_matched(index, lambda seen: _matched_positions(tuner, cfg, seen))  # on a wrapped model's own names
    if matched == []:
        return Injection(
            error=f"NoMatchingPeftModuleError: target_modules={targets!r} target no module of the model "
            "(after exclude_modules, modules_to_save and layers_to_transform)",
            how="fast",
        )
    if matched is None or _has_nested(index, matched):
        return None
    error, probes = _rejected(model, cfg, index, matched)
    if error:
        return Injection(error=error, how="fast")
    saved = _modules_to_save_wrapped(config, index, matched, probes)
    if saved is None:
        return None
    shown = sorted(targets) if isinstance(targets, (set, frozenset)) else targets
    return Injection(modules=tuple(names[i] for i in matched), saved=saved, target_modules=shown, how="fast")


def name_matches(model: nn.Module, config: Any, *, convert: bool = True) -> list[int]:
    """Positions PEFT's matcher picks by name for `config` (its preparation, `exclude_modules`,
    `modules_to_save`, layers), before dispatch and the fields that add modules. `convert=False`
    skips the transformers-5 MoE conversion: the names as the user wrote them. [] where PEFT's
    preparation itself raises."""
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    tuner = PEFT_TYPE_TO_TUNER_MAPPING.get(config.peft_type)
    if tuner is None:
        return []
    try:
        cfg = prepare_config(model, config, convert=convert)
    except (TargetselError, ValueError, TypeError, KeyError):
        return []
    return peft_matched(get_index(model), lambda seen: _matched_positions(tuner, cfg, seen)) or []


def _matched_positions(tuner, cfg, names: list[str]) -> list[int]:
    from peft.tuners.tuners_utils import _ExcludedModule

    targets = cfg.target_modules
    if isinstance(targets, str):
        candidates = range(1, len(names))
    else:  # only names the O(N) list rule admits can match; PEFT's own function decides
        hits = list_matches(targets, names)
        candidates = [i for i in range(1, len(names)) if hits[i]]
    check = tuner._check_target_module_exists
    out = []
    for i in candidates:
        result = check(cfg, names[i])
        if result and not isinstance(result, _ExcludedModule):
            out.append(i)
    return out


def _has_nested(index, positions) -> bool:
    """Does any of these positions sit inside another of them?"""
    mask = torch.zeros(index.size, dtype=torch.bool)
    mask[torch.tensor(sorted(positions), dtype=torch.long)] = True
    return bool((index.ancestors_mask(mask) & mask).any())


def _rejected(model, cfg, index, positions: list[int]) -> tuple[Optional[str], dict]:
    """What inject_adapter raises for these targets, in model order (the Mamba guard, then the
    dispatch), and PEFT's answer for each targeted class."""
    from targetsel.bridge.probe import probe

    try:
        from peft.tuners.tuners_utils import _check_lora_target_modules_mamba
    except ImportError:  # older peft: no guard
        _check_lora_target_modules_mamba = None
    probes: dict[type, Any] = {}
    for i in positions:
        if _check_lora_target_modules_mamba is not None:
            try:
                _check_lora_target_modules_mamba(cfg, model, index.names[i].rpartition(".")[2])
            except ValueError as exc:
                return f"ValueError: {exc}", probes
        module = index.modules[i]
        cls = type(module)
        if cls not in probes:
            probes[cls] = probe(module, cfg, model)
        if not probes[cls].supported:
            return f"ValueError: Target module {cls.__name__} is not supported. {probes[cls].reason}", probes
    return None, probes


def _modules_to_save_wrapped(config, index, targeted: list[int], probes: dict) -> Optional[tuple[str, ...]]:
    """The modules `_set_trainable` wraps (plain `endswith`, no dot boundary), when that provably
    leaves the targets alone; None when a wrapper would sit on, around or inside a target.

    `_set_trainable` runs after injection, so its names include the adapter's own modules
    (`q.base_layer`, `q.lora_dropout`): an entry `out` matches `lora_dropout` and PEFT raises."""
    entries = effective_modules_to_save(config)
    if not entries:
        return ()
    suffixes = tuple(entries)
    for i in targeted:
        internals = probes[type(index.modules[i])].internals
        if internals is None or any(f"{index.names[i]}.{n}".endswith(suffixes) for n in internals):
            return None
    if index.aliases() or peft_view(index) is not None:
        return None  # _set_trainable walks named_modules(remove_duplicate=False); wrappers: the real one
    names = index.names
    wrapped = [i for i in range(1, len(names)) if names[i].endswith(suffixes)]
    if not wrapped:
        return ()
    if set(wrapped) & set(targeted) or _has_nested(index, set(wrapped) | set(targeted)):
        return None  # a wrapper on, around or inside a target
    return tuple(names[i] for i in wrapped)


def _has_tuner_layers(index) -> bool:
    """The model already holds PEFT adapter layers: adding another adapter follows other rules."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in index.modules)


def verify_parameters(model, config) -> list[str]:
    """The parameter keys the installed PEFT will target with `config.target_parameters`, model order.

    PEFT matches them inline in `_inject_parameters` (no function to call), so this is that rule:
    each module's own parameters, key `module_name.param_name`, exact or dotted-suffix match.
    """
    from targetsel.model.index import get_index
    from targetsel.views.parameters import parameter_keys
    from targetsel.views.targets import list_matches

    targets = list(getattr(config, "target_parameters", None) or [])
    if not targets:
        return []
    keys = [key for _, _, key in parameter_keys(get_index(model))]
    return [k for k, m in zip(keys, list_matches(targets, keys)) if m]
