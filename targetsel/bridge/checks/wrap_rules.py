"""Rules about what the method can wrap, as PEFT's own dispatch answers (`Subject.probes`):
containers, unsupported layer types, and subclasses PEFT wraps as their base class."""

from __future__ import annotations

import functools
import inspect
import warnings
from typing import Optional, Sequence

import torch
from torch import nn

from targetsel.bridge.checks.registry import Finding, finding, rule
from targetsel.bridge.checks.subject import Subject
from targetsel.model.quantized import family_of_class
from targetsel.model.wrappers import user_class


def _by_class(s: Subject, positions: Sequence[int]) -> dict[type, list[int]]:
    groups: dict[type, list[int]] = {}
    for i in positions:
        groups.setdefault(type(s.index.modules[i]), []).append(i)
    return dict(sorted(groups.items(), key=lambda kv: -len(kv[1])))


def _reason(s: Subject, groups) -> str:
    return next(iter(s.probes[cls].reason for cls in groups if s.probes[cls].reason), "")


@rule("container-target", "error", peft_fails=True)
def container_target(s: Subject) -> list[Finding]:
    """A selected module with children that the PEFT method cannot wrap (a whole block)."""
    positions = [i for i in s.unwrappable if s.index.n_children[i] > 0]
    if not positions:
        return []
    groups = _by_class(s, positions)
    kinds = ", ".join(f"{user_class(cls).__name__} ×{len(p)}" for cls, p in groups.items())
    reason = _reason(s, groups)
    message = (
        f"{len(positions)} selected module(s) are containers — modules with children, not layers — that "
        f"{s.method} cannot wrap ({kinds}): {s.grouped([s.index.names[i] for i in positions])}. get_peft_model "
        f"would raise ValueError" + (f" ({reason})" if reason else "") + ". Select the layers inside them instead: "
        + s.fix(selection="add .linear() (& linear), e.g. select(model).under(NAME).linear().",
                config="name those layers in target_modules, or build the targets with "
                       "targetsel.bridge.patch(config, select(model).under(NAME).linear()).")
    )
    return [finding("container-target", message, s, positions)]


@rule("unsupported-type", "error", peft_fails=True)
def unsupported_type(s: Subject) -> list[Finding]:
    """A selected layer type the PEFT method cannot wrap, as PEFT's own dispatch says."""
    positions = [i for i in s.unwrappable if s.index.n_children[i] == 0]
    if not positions:
        return []
    groups = _by_class(s, positions)
    parts = [f"{user_class(cls).__name__} ×{len(ps)} ({s.grouped([s.index.names[i] for i in ps], 3)})" for cls, ps in groups.items()]
    reason = _reason(s, groups)
    fix = s.fix(
        selection="Keep the layers the method wraps: add .linear() (& linear in a query).",
        config="Name the layers themselves in target_modules (e.g. q_proj, or \"all-linear\"), or build the targets "
               "with targetsel.bridge.patch(config, select(model).linear()).",
    )
    message = (
        f"{s.method} cannot wrap {len(positions)} selected module(s) of {len(groups)} type(s): {'; '.join(parts)}. "
        f"PEFT's dispatch rejects them" + (f" — {reason}" if reason else "") + f"; get_peft_model would raise. {fix}"
    )
    return [finding("unsupported-type", message, s, positions)]


# ---------------------------------------------------------------------------- subclasses


def _library_base(cls: type) -> Optional[type]:
    """The nearest base class of `cls` that is a torch layer (or transformers' Conv1D); None for library classes."""
    def is_library(c: type) -> bool:
        return c.__module__.startswith("torch.nn.modules.") or c.__module__ == "transformers.pytorch_utils"

    if is_library(cls):
        return None
    for base in cls.__mro__[1:]:
        if base is nn.Module or not (isinstance(base, type) and issubclass(base, nn.Module)):
            return None
        if is_library(base):
            return base
    return None


@functools.lru_cache(maxsize=None)
def _base_layout(base: type) -> tuple[frozenset, frozenset]:
    """(parameter names, child names) of a default instance of a torch layer class, built on meta."""
    try:
        sig = inspect.signature(base.__init__)
        required = [
            p for p in list(sig.parameters.values())[1:]
            if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inst = base(*[1] * len(required))
    except Exception:
        return frozenset(), frozenset()
    return frozenset(k for k, v in inst._parameters.items() if v is not None), frozenset(inst._modules)


def _signature(fn) -> str:
    try:
        params = list(inspect.signature(fn).parameters.values())[1:]
    except (TypeError, ValueError):
        return "forward(...)"
    return "forward(" + ", ".join(str(p) for p in params) + ")"


def _additions(cls: type, base: type, module: nn.Module) -> tuple[list[str], bool, str]:
    """What a subclass adds to its base: descriptions, whether it overrides forward, its forward signature."""
    base_params, base_children = _base_layout(base)
    children = [k for k, v in module._modules.items() if v is not None and k not in base_children]
    params = [k for k, v in module._parameters.items() if v is not None and k not in base_params]
    forward_overridden = getattr(cls, "forward", None) is not getattr(base, "forward", None)
    adds = []
    if children:
        adds.append("child modules " + ", ".join(children))
    if params:
        adds.append("parameters " + ", ".join(params))
    signature = _signature(cls.forward)
    if forward_overridden:
        adds.append(signature)
    return adds, forward_overridden, signature


@rule("subclass-target", "warning")
def subclass_target(s: Subject) -> list[Finding]:
    """A subclass of a layer PEFT wraps, with its own children/parameters/forward; PEFT wraps it as its base class."""
    out = []
    for cls, positions in _by_class(s, s.positions).items():
        pr = s.probes[cls]
        base = _library_base(cls)
        if not pr.supported or base is None:
            continue
        if pr.wrapper is not None and not pr.wrapper.__module__.endswith(".layer"):
            continue  # a dedicated PEFT layer (quantized backends, custom mappings), not the base class's
        adds, forward_overridden, signature = _additions(cls, base, s.index.modules[positions[0]])
        if not adds:
            continue  # a subclass that adds nothing behaves exactly like its base class
        names = [s.index.names[i] for i in positions]
        base_name = f"{base.__module__.split('.')[0]}.nn.{base.__name__}" if base.__module__.startswith("torch.") else base.__name__
        wrapper = f" ({pr.wrapper.__module__}.{pr.wrapper.__qualname__})" if pr.wrapper is not None else ""
        takes_more = forward_overridden and len(signature.split(",")) > 1
        effects = [
            f"its update is computed from the first input alone and added to whatever {signature} returns"
            + (" (the extra arguments never reach the adapter)" if takes_more else ""),
            "merging writes into `weight` only",
        ]
        if pr.frozen:
            effects.append(f"get_peft_model freezes the module's own parameters ({', '.join(pr.frozen)})")
        if pr.kept:
            effects.append(f"and leaves {', '.join(pr.kept)} trainable")
        message = (
            f"{len(positions)} selected {cls.__name__} module(s) subclass {base_name} and add {' and '.join(adds)}: "
            f"{s.grouped(names)}. {s.method} wraps each as a plain {base.__name__}{wrapper}: {'; '.join(effects)}. "
            f"Leave them out (- type:{cls.__name__}), or, if you mean to adapt them, check the wrapped forward and "
            "re-enable the parameters that must keep training after get_peft_model."
        )
        family = family_of_class(cls)
        if family is not None and family.wraps() and family.condition:  # PEFT's own layer, had the model said so
            message += (f" PEFT puts its {family.label} LoRA layer ({family.wrapper}) on {cls.__name__} only when "
                        f"{family.condition}: set it on the model before get_peft_model.")
        out.append(finding("subclass-target", message, s, positions))
    return out
