"""Rules about names PEFT reads besides the targets: `modules_to_save`, the adapter prefix in
base-model names, and modules registered under several names."""

from __future__ import annotations

import copy
import operator
import warnings
from itertools import chain
from typing import Optional

import torch
from torch import nn

from targetsel.bridge.checks.registry import Finding, finding, rule
from targetsel.bridge.checks.subject import Subject
from targetsel.bridge.probe import probe_config
from targetsel.model.wrappers import class_name, peft_view

_PARAMETERS = operator.attrgetter("_parameters")


def _effective_modules_to_save(config) -> list[str]:
    names = list(getattr(config, "modules_to_save", None) or [])
    task = getattr(config, "task_type", None)
    if str(getattr(task, "value", task)) == "SEQ_CLS":  # PeftModelForSequenceClassification adds these before injecting
        names += [n for n in ("classifier", "score") if n not in names]
    return names


@rule("modules-to-save-overlap", "error")
def modules_to_save_overlap(s: Subject) -> list[Finding]:
    """Selected modules that `modules_to_save` also names; PEFT skips them silently."""
    from peft.tuners.tuners_utils import _ExcludedModule, check_target_module_exists

    saved = _effective_modules_to_save(s.config)
    if not saved:
        return []
    cfg = probe_config(s.config, ".*")
    cfg.modules_to_save = saved
    names = s.index.names
    hits = [i for i in s.matched_apart_from_modules_to_save
            if isinstance(check_target_module_exists(cfg, names[i]), _ExcludedModule)]
    if not hits:
        return []
    added = "" if saved == list(getattr(s.config, "modules_to_save", None) or []) else " (task_type=SEQ_CLS adds classifier, score)"
    message = (
        f"{type(s.config).__name__} carries modules_to_save={getattr(s.config, 'modules_to_save', None)!r}{added}, "
        f"whose modules PEFT trains in full instead of adapting: {len(hits)} selected module(s) would not be targeted: "
        f"{s.grouped([names[i] for i in hits])} — PEFT skips them silently. Remove them from the selection "
        "or from modules_to_save (patch(..., strict=False) accepts the skip with a warning)."
    )
    return [finding("modules-to-save-overlap", message, s, hits)]


# ---------------------------------------------------------------------------- the adapter prefix


def _prefix(config) -> Optional[str]:
    try:
        from peft.utils.constants import PEFT_TYPE_TO_PREFIX_MAPPING

        prefix = PEFT_TYPE_TO_PREFIX_MAPPING.get(config.peft_type)
    except ImportError:  # pragma: no cover - older peft keeps it on the tuner only
        prefix = None
    if prefix is None:
        from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

        prefix = getattr(PEFT_TYPE_TO_TUNER_MAPPING.get(config.peft_type), "prefix", None)
    return prefix or None


def _clash_effects(config, prefix: str) -> tuple[str, ...]:
    """What the installed PEFT does with base names containing `prefix`, measured on a tiny meta model."""
    from peft import get_peft_model
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import get_peft_model_state_dict

    clash_target, clash_other = f"t_{prefix}x", f"b_{prefix}y"
    with torch.device("meta"):
        model = nn.Module()
        model.plain = nn.Linear(64, 64)
        model.add_module(clash_target, nn.Linear(64, 64))
        model.add_module(clash_other, nn.Linear(64, 64))
    effects = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = probe_config(config, ["plain", clash_target])
        cfg.task_type = None  # a bare nn.Module, not a transformers task model
        peft_model = get_peft_model(model, cfg)
        base = peft_model.base_model.model
        if any(p.requires_grad for p in getattr(base, clash_other).parameters()):
            effects.append("get_peft_model leaves their parameters trainable")
        if any(clash_other in k for k in get_peft_model_state_dict(peft_model)):
            effects.append("get_peft_model_state_dict saves them into the adapter file")
        try:  # some methods allow one adapter only (AdaLoRA)
            peft_model.add_adapter("targetsel_second", copy.deepcopy(cfg))
        except Exception:
            pass
        else:
            peft_model.delete_adapter("targetsel_second")
            if any(".targetsel_second" in n for n, _ in getattr(base, clash_target).named_parameters()):
                effects.append("delete_adapter() leaves the adapter in place on targeted modules with such names")
        unloaded = peft_model.unload()
        if isinstance(getattr(unloaded, clash_target), BaseTunerLayer):
            effects.append("unload()/merge_and_unload() leave targeted modules with such names wrapped")
    return tuple(effects)


_CLASH_EFFECTS: dict[tuple[type, str], Optional[tuple[str, ...]]] = {}


def _measured_clash_effects(config, prefix: str) -> Optional[tuple[str, ...]]:
    """The measured effects (once per config class), or None when the measurement itself fails."""
    key = (type(config), prefix)
    if key not in _CLASH_EFFECTS:
        _CLASH_EFFECTS[key] = None
        # The behaviour is the method's code, not this config's options: try the defaults first
        # (options such as use_dora cannot initialise a second adapter on meta weights).
        for make in (type(config), lambda: config):
            try:
                _CLASH_EFFECTS[key] = _clash_effects(make(), prefix)
                break
            except Exception:
                continue
    return _CLASH_EFFECTS[key]


def _parameter_keys(index) -> str:
    """Every module's own parameter keys, joined by newlines (each parameter name ends with its key)."""
    if len(index.reg_pos) == len(index.params) and peft_view(index) is None:
        # Every parameter registered once, under the name it is listed by: the index's parameter names
        # hold every key, and joining them skips reading the `_parameters` dict of each of 60k modules.
        return "\n".join(index.param_names)
    return "\n".join(chain.from_iterable(map(dict.keys, map(_PARAMETERS, index.modules))))


def _names_with_prefix(index, prefix: str) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """(positions, names shown) of modules whose own name or own parameters' names contain `prefix`.

    Structural, so once per index; and most models have no such name at all, which one substring
    search over all names and parameter keys joined (in C) tells without a per-module loop."""
    if "\n" not in prefix and prefix not in "\n".join(index.names) and prefix not in _parameter_keys(index):
        return (), ()
    positions, shown = [], []
    for i, (name, module) in enumerate(zip(index.names, index.modules)):
        if not i:
            continue
        if prefix in name.rsplit(".", 1)[-1]:
            positions.append(i)
            shown.append(name)
            continue
        own = [k for k, v in module._parameters.items() if v is not None and prefix in k]
        if own:
            positions.append(i)
            shown += [f"{name}.{k}" for k in own]
    return tuple(positions), tuple(shown)


@rule("adapter-name-clash", "warning")
def adapter_name_clash(s: Subject) -> list[Finding]:
    """Base-model names containing the method's adapter prefix (`lora_`), which PEFT matches by name in places."""
    prefix = _prefix(s.config)
    if not prefix:
        return []
    positions, shown = map(list, s.index.memo(("adapter-name-clash", prefix), lambda: _names_with_prefix(s.index, prefix)))
    if not positions:
        return []
    import peft

    effects = _measured_clash_effects(s.config, prefix)
    if effects:
        installed = f"With the installed peft {peft.__version__}: " + "; ".join(effects) + "."
    elif effects is not None:
        installed = f"The installed peft {peft.__version__} tells adapter weights apart structurally."
    else:
        installed = ""
    message = (
        f"{len(shown)} base-model name(s) of {class_name(s.model)} contain {prefix!r}, the prefix PEFT gives "
        f"{s.method}'s own weights: {s.grouped(shown)}. {installed} Older PEFT versions find adapter weights by this "
        "prefix: get_peft_model leaves such parameters trainable and saves them into the adapter file. Rename the "
        "modules if you can; otherwise check print_trainable_parameters() and the saved adapter's keys."
    ).replace("  ", " ")
    return [finding("adapter-name-clash", message, s, positions)]


# ---------------------------------------------------------------------------- shared modules


@rule("shared-module", "warning")
def shared_module(s: Subject) -> list[Finding]:
    """A selected module registered under several names; PEFT wraps it under the first one only."""
    aliases = s.index.aliases()
    hits = [i for i in s.positions if i in aliases]
    if not hits:
        return []
    pairs = ", ".join(f"{s.index.names[i]} (also {', '.join(aliases[i][:3])})" for i in hits[:4])
    more = f", … and {len(hits) - 4} more" if len(hits) > 4 else ""
    message = (
        f"{len(hits)} selected module(s) are registered under more than one name: {pairs}{more}. PEFT replaces a "
        "module under its first name only, so calls through the other names run the original layer without the "
        "adapter. Untie the modules before get_peft_model, or make sure the model calls them through the first name."
    )
    return [finding("shared-module", message, s, hits)]
