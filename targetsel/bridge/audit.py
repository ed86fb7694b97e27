"""`audit(peft_model, sel, parameters=psel)`: after `get_peft_model`, did PEFT adapt exactly what was selected?

`get_peft_model` rewrites the model in place — layers become `lora.Linear` wrappers, fused expert
modules become chains of `lora.ParamWrapper`, base weights get frozen — so a selection evaluated
afterwards would no longer mean what it meant (its terminals raise `ModelRewrittenError`). The
names a selection resolved to when it was patched, locked or snapshotted (`resolved()`) are
remembered (per model and selector, weakly), and `audit` compares against those; a `Resolved`
snapshot, a lock or a plain list of names works as the reference too.

Modules and parameters are compared separately: `target_modules` makes PEFT wrap modules,
`target_parameters` makes it wrap the module that holds each parameter in a `ParamWrapper` (one
per parameter, stacked through `base_layer`). Whatever was not named as expected is expected to
stay unadapted, so parameters PEFT adapted on its own (its transformers-5 MoE conversion) show up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from torch import nn

from targetsel.errors import ModelRewrittenError, TargetselError
from targetsel.model.resolution import Bound, recall
from targetsel.model.wrappers import user_name
from targetsel.bridge.wrapped import inner_model
from targetsel.views.parameters import ParameterSelection
from targetsel.views.snapshot import Resolved

MODULES, PARAMETERS = "modules", "parameters"


@dataclass(frozen=True)
class Audit:
    """What PEFT adapted compared with what was selected; `ok` when both sets are equal, for modules and parameters.

    `expected` / `wrapped` / `missing` / `unexpected`: module names (`target_modules`);
    the `*_parameters` fields: parameter names, `module.param` (`target_parameters`).
    """

    expected: tuple[str, ...]
    wrapped: tuple[str, ...]
    missing: tuple[str, ...] = field(default=())
    unexpected: tuple[str, ...] = field(default=())
    expected_parameters: tuple[str, ...] = field(default=())
    wrapped_parameters: tuple[str, ...] = field(default=())
    missing_parameters: tuple[str, ...] = field(default=())
    unexpected_parameters: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.missing_parameters or self.unexpected_parameters)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        from targetsel.text.grouping import summarize_names

        counted = []  # modules are always shown, except in a parameters-only audit where none is involved
        if self.expected or self.wrapped or not (self.expected_parameters or self.wrapped_parameters):
            counted.append((len(self.expected), len(self.wrapped), "module(s)"))
        if self.expected_parameters or self.wrapped_parameters:
            counted.append((len(self.expected_parameters), len(self.wrapped_parameters), "parameter(s)"))
        if self.ok:
            return "audit ok: PEFT wrapped exactly " + " and ".join(f"the {e} selected {what}" for e, _, what in counted)
        wrapped = " and ".join(f"{w} {what}" for _, w, what in counted)
        selected = " and ".join(f"{e} {what}" for e, _, what in counted)
        if len(counted) == 1:
            selected = f"{counted[0][0]}"
        lines = [f"audit FAILED: PEFT wrapped {wrapped}; {selected} were selected"]
        for what, names, meaning in (
            ("missing", self.missing, "selected but not wrapped"),
            ("unexpected", self.unexpected, "wrapped but not selected"),
            ("missing parameters", self.missing_parameters, "selected but not wrapped"),
            ("unexpected parameters", self.unexpected_parameters, "wrapped but not selected"),
        ):
            if names:
                lines.append(f"  {what} ({len(names)}, {meaning}): {summarize_names(list(names))}")
        return "\n".join(lines)


def wrapped_modules(peft_model: nn.Module) -> list[str]:
    """Names (relative to the base model) of the modules PEFT wrapped through `target_modules`, model order."""
    return _adapted(_base_model(peft_model))[0]


def wrapped_parameters(peft_model: nn.Module) -> list[str]:
    """`module.param` names (relative to the base model) of the parameters PEFT wrapped through `target_parameters`."""
    return _adapted(_base_model(peft_model))[1]


def _is_param_wrapper(module: nn.Module) -> bool:
    # PEFT itself recognises the wrapper by class name (tuners_utils._inject_parameters).
    return type(module).__name__ == "ParamWrapper" and hasattr(module, "parameter_name")


def _adapted(base: nn.Module) -> tuple[list[str], list[str]]:
    """(wrapped module names, wrapped parameter names), as the user's model names them.

    PEFT inserts `base_layer` segments when it wraps: a parameter wrapper chain on `mlp.experts`
    lists `mlp.experts.base_layer(.base_layer…)`, and a layer below a wrapped module moves under
    it. PEFT strips `.base_layer` when it matches names, and so does this.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    modules: dict[str, None] = {}
    parameters: dict[str, None] = {}
    tuners: set[str] = set()  # names of tuner layers: only their `base_layer` is PEFT's insertion
    in_chain: set[int] = set()  # inner links of parameter-wrapper chains, read from their outermost link
    # Layers inside modules_to_save / trainable_token_indices wrappers come from those fields, not
    # from the targets (a TrainableTokensConfig's own layers are targets: they are not wrapped so).
    auxiliary: list[str] = []
    for name, module in base.named_modules():
        name = user_name(name)  # the plain model's name under FSDP1 / checkpoint wrappers (model/wrappers.py)
        if isinstance(module, AuxiliaryTrainingWrapper):
            auxiliary.append(name + ".")
            continue
        if not isinstance(module, BaseTunerLayer) or any(name.startswith(a) for a in auxiliary):
            continue
        tuners.add(name)
        real = _strip_base_layer(name, tuners)
        if not _is_param_wrapper(module):
            modules.setdefault(real)
            continue
        if id(module) in in_chain:
            continue
        layer = module
        while _is_param_wrapper(layer):
            in_chain.add(id(layer))
            parameters.setdefault(f"{real}.{layer.parameter_name}")
            layer = layer.base_layer
    return list(modules), _in_model_order(list(parameters), base, tuners)


def _strip_base_layer(name: str, tuners: set[str]) -> str:
    """`name` without the `base_layer` segments wrapping inserted (a module of the model's own may be called so)."""
    if "base_layer" not in name:
        return name
    kept, path = [], ""
    for part in name.split("."):
        inserted = part == "base_layer" and path in tuners
        path = f"{path}.{part}" if path else part
        if not inserted:
            kept.append(part)
    return ".".join(kept)


def _in_model_order(parameters: list[str], base: nn.Module, tuners: set[str]) -> list[str]:
    # A chain lists its parameters outermost first, i.e. in PEFT's (sorted) wrapping order; the
    # model's own order is that of the original module's parameters.
    if len(parameters) < 2:
        return parameters
    order: dict[str, int] = {}
    for name, _ in base.named_parameters():
        name = user_name(name)
        order.setdefault(_strip_base_layer(name, tuners), len(order))
    return sorted(parameters, key=lambda p: order.get(p, len(order)))


def _base_model(peft_model: nn.Module) -> nn.Module:
    from peft import PeftModel

    peft_model = inner_model(peft_model)  # FSDP1 / checkpoint wrappers put around it after get_peft_model
    if isinstance(peft_model, PeftModel):
        return peft_model.base_model.model
    if not isinstance(peft_model, nn.Module):
        raise TargetselError(f"audit(peft_model, ...) needs the model get_peft_model returned, got {type(peft_model).__name__}")
    return getattr(peft_model, "model", peft_model) if _is_tuner_model(peft_model) else peft_model


def _is_tuner_model(model: nn.Module) -> bool:
    from peft.tuners.tuners_utils import BaseTuner

    return isinstance(model, BaseTuner)


def audit(peft_model: nn.Module, selection: Any = None, *, parameters: Any = None) -> Audit:
    """Compare what PEFT adapted in `peft_model` with what was selected, for modules and parameters.

    `selection`: what `target_modules` selected — the `Selection` that was patched (its names as
    resolved then are used), its `resolved()` snapshot, its `lock()`, or a list of module names.
    `parameters`: what `target_parameters` selected — the `ParameterSelection`, its `resolved()`
    snapshot, or a list of `module.param` names. A `ParameterSelection` (or its snapshot) may also
    be passed as `selection` when only parameters were patched. What is not given is expected to be
    left alone: parameters PEFT adapts when only modules were selected are reported as unexpected.
    """
    base = _base_model(peft_model)
    modules_ref, parameters_ref = _route(selection, parameters)
    expected = _expected(modules_ref, MODULES)
    expected_parameters = _expected(parameters_ref, PARAMETERS)
    wrapped, wrapped_params = _adapted(base)
    return Audit(
        expected=tuple(expected),
        wrapped=tuple(wrapped),
        missing=_minus(expected, wrapped),
        unexpected=_minus(wrapped, expected),
        expected_parameters=tuple(expected_parameters),
        wrapped_parameters=tuple(wrapped_params),
        missing_parameters=_minus(expected_parameters, wrapped_params),
        unexpected_parameters=_minus(wrapped_params, expected_parameters),
    )


def _minus(names: list[str], other: list[str]) -> tuple[str, ...]:
    drop = set(other)
    return tuple(n for n in names if n not in drop)


def _kind(reference) -> Optional[str]:
    """MODULES or PARAMETERS for a reference that says which it is; None for plain lists of names."""
    if isinstance(reference, (Bound, dict)):
        return MODULES
    if isinstance(reference, ParameterSelection):
        return PARAMETERS
    if isinstance(reference, Resolved):
        return reference.kind
    return None


def _route(selection, parameters) -> tuple[Any, Any]:
    if selection is None and parameters is None:
        raise TargetselError(
            "audit(peft_model) needs what was selected: audit(peft_model, sel) for target_modules, "
            "audit(peft_model, sel, parameters=psel) when target_parameters were patched too"
        )
    if _kind(selection) == PARAMETERS:
        if parameters is not None:
            raise TargetselError(
                f"audit() got two parameter references: {type(selection).__name__} as selection and "
                f"{type(parameters).__name__} as parameters=; pass the module selection first "
                "(audit(peft_model, sel, parameters=psel)), or only the parameters"
            )
        return None, selection
    if _kind(parameters) == MODULES:
        raise TargetselError(
            f"audit(..., parameters=...) takes a ParameterSelection (sel.parameters(...)), its resolved() snapshot "
            f"or a list of parameter names; got a {type(parameters).__name__} of modules: pass it as the selection"
        )
    return selection, parameters


def _expected(reference, kind: str) -> list[str]:
    what = "module" if kind == MODULES else "parameter"
    if reference is None:
        return []
    if isinstance(reference, Resolved):
        return list(reference.names)
    if isinstance(reference, dict):
        from targetsel.views.lock import read_lock

        return list(read_lock(reference)["names"])
    if isinstance(reference, (list, tuple)):
        bad = [n for n in reference if not isinstance(n, str)]
        if bad:
            raise TargetselError(f"audit(): {what} names must be strings, got {type(bad[0]).__name__} {bad[0]!r}")
        return list(reference)
    if isinstance(reference, (Bound, ParameterSelection)):
        return _before_injection(reference)
    accepted = (
        "the Selection you patched with, its resolved() snapshot, its lock() or a list of module names"
        if kind == MODULES else
        "the ParameterSelection you patched with, its resolved() snapshot or a list of parameter names"
    )
    label = "selection" if kind == MODULES else "parameters="
    raise TargetselError(f"audit(peft_model, {label}): pass {accepted}; got {type(reference).__name__}")


def _before_injection(reference) -> list[str]:
    """What a (Parameter)Selection meant before get_peft_model rewrote its model."""
    from targetsel.model.index import get_index

    selection = reference.selection if isinstance(reference, ParameterSelection) else reference
    index = get_index(selection.model)
    if not index.has_tuner_layers():  # a model PEFT has not touched (e.g. a fresh copy): evaluate it now
        return reference.names()
    if selection.adapted:
        raise TargetselError(
            f"selection {selection.query!r} was made on a model that already held PEFT adapter layers, so it "
            "cannot say what was selected before injection. Pass the selection you gave patch(), or its resolved() "
            "snapshot (or lock()) taken before get_peft_model"
        )
    remembered = recall(selection.model, reference.memory_key)
    if remembered is None:
        raise ModelRewrittenError(
            f"the model of selection {selection.query!r} was rewritten by get_peft_model after the selection was "
            "made, and this selection was never patched, locked or resolved, so what it meant before injection is "
            "unknown. Pass the selection you gave patch(), or take sel.resolved() (or sel.lock()) before "
            "get_peft_model and pass that"
        )
    return list(remembered)
