"""The oracle: what the installed PEFT *actually* adapts, found by running it.

`verify()` is targetsel's model of PEFT's matcher; this module is the independent judge. It builds a
fresh model, runs a real `peft.get_peft_model` on it and reads the answer off the resulting module
tree — which modules became tuner layers, which parameters got a `ParamWrapper`, what was wrapped for
saving or for trainable tokens — and cross-checks that structural answer with PEFT's own bookkeeping
(`targeted_module_names` / `targeted_parameter_names`). If the two ever disagree, `peft_adapts`
raises `OracleDisagreement`: that is news about PEFT, not a targetsel failure.

    adapted = peft_adapts(lambda: corpus.build("llama"), patch(LoraConfig(), sel))
    adapted.modules == tuple(sel.names()) and not adapted.parameters

`wrap_any=True` judges *matching* on selections LoRA has no layer for (norms, whole decoder
blocks, activations, grouped convolutions): where LoRA's own dispatchers cannot build a layer, a
do-nothing stand-in tuner layer is put in through LoRA's custom-module hook
(`LoraConfig._register_custom_module`), so PEFT's whole injection path — transformers-5 conversion,
list condensation, matching, its compatibility checks — still runs and the tree shows what it
matched. Stand-ins are listed in `Adapted.stand_ins`.

`roundtrip(make_model_cpu, config)` does a save + reload on a small CPU model with real weights.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import tempfile
import warnings
from typing import Any, Callable, Optional

from torch import nn


class OracleDisagreement(AssertionError):
    """The tree PEFT built and PEFT's own bookkeeping name different targets."""


@dataclasses.dataclass(frozen=True)
class Adapted:
    """What one real `get_peft_model` call adapted. Names are relative to the base model, in model order."""

    modules: tuple[str, ...] = ()      # modules turned into tuner layers (not parameter wrappers)
    parameters: tuple[str, ...] = ()   # "module.parameter" adapted through target_parameters
    saved: tuple[str, ...] = ()        # ModulesToSaveWrapper
    tokens: tuple[str, ...] = ()       # TrainableTokensWrapper / TrainableTokensLayer
    error: Optional[str] = None        # "ValueError: message" when get_peft_model raised
    targeted_module_names: Optional[tuple[str, ...]] = None     # PEFT's bookkeeping (None: tuner has none)
    targeted_parameter_names: Optional[tuple[str, ...]] = None
    warnings: tuple[str, ...] = ()     # warnings get_peft_model emitted, "Category: message"
    stand_ins: tuple[str, ...] = ()    # modules (in `modules`) LoRA has no layer for; wrap_any=True only

    @property
    def error_type(self) -> Optional[str]:
        return self.error.split(":", 1)[0] if self.error else None

    def describe(self, limit: int = 6) -> str:
        """One line for a failure message or a report."""
        if self.error:
            return f"PEFT raised {self.error}"
        parts = [f"{len(self.modules)} module(s) {_short(self.modules, limit)}"]
        if self.parameters:
            parts.append(f"{len(self.parameters)} parameter(s) {_short(self.parameters, limit)}")
        if self.saved:
            parts.append(f"saved {_short(self.saved, limit)}")
        if self.tokens:
            parts.append(f"tokens {_short(self.tokens, limit)}")
        return "; ".join(parts)


def _short(names, limit: int) -> str:
    names = list(names)
    return repr(names) if len(names) <= limit else repr(names[:limit])[:-1] + f", … {len(names) - limit} more]"


def peft_adapts(
    make_model: Callable[[], nn.Module], config: Any, *, wrap_any: bool = False, low_cpu_mem_usage: bool = True
) -> Adapted:
    """Build a fresh model with `make_model()`, run `get_peft_model` on a deep copy of `config`, and
    return what it adapted (or the error it raised). The model is never reused."""
    from peft import get_peft_model

    model = make_model()
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    config = copy.deepcopy(config)
    if wrap_any:
        _register_stand_ins(config)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            peft_model = get_peft_model(model, config, low_cpu_mem_usage=low_cpu_mem_usage)
        except Exception as exc:  # the oracle reports what PEFT did, including refusing
            return Adapted(error=f"{type(exc).__name__}: {exc}", warnings=_warning_texts(caught))
    adapted = structure(peft_model, order)
    adapted = dataclasses.replace(adapted, warnings=_warning_texts(caught))
    check_bookkeeping(adapted, peft_model)
    return adapted


class StandIn(nn.Module):
    """A do-nothing tuner layer where LoRA cannot build one (see `wrap_any`)."""

    adapter_layer_names = ("oracle_stand_in",)  # no "lora_" in the name: PEFT moves those to the base's device

    def __init__(self, base_layer: nn.Module, adapter_name: str, **kwargs):
        super().__init__()
        self.base_layer = base_layer
        self.oracle_stand_in = nn.ModuleDict({adapter_name: nn.Identity()})
        self._active_adapter = adapter_name
        self.merged_adapters = []

    def __getattr__(self, name: str):
        # PEFT reaches modules below a target through it (`layers.0` wrapped, then `layers.0.mlp.fc1`)
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_layer":
                raise
            return getattr(self.base_layer, name)

    def forward(self, *args, **kwargs):
        return self.base_layer(*args, **kwargs)


@functools.lru_cache(maxsize=1)
def _stand_in_class():
    from peft.tuners.tuners_utils import BaseTunerLayer

    return type("StandIn", (StandIn, BaseTunerLayer), {"__doc__": StandIn.__doc__})


def _lora_layer_or_stand_in(target, adapter_name, config, parameter_name=None, **kwargs):
    """LoRA's custom dispatch (registered for every module type) calls this first: build LoRA's own
    layer as its dispatchers would; where they cannot (a norm, a block, a grouped conv), a StandIn.
    A parameter target (target_parameters, or the MoE conversion's `gate.weight`) returns None and
    goes on to LoRA's ParamWrapper."""
    from peft.tuners.lora import LoraModel

    if parameter_name is not None:
        return None
    plain = copy.copy(config)
    plain._custom_modules = None
    try:
        return LoraModel._create_new_module(plain, adapter_name, target, **kwargs)
    except ValueError:
        return _stand_in_class()(target, adapter_name)


def _register_stand_ins(config) -> None:
    if not hasattr(config, "_register_custom_module"):
        raise TypeError(f"wrap_any needs a LoRA config (custom-module hook), got {type(config).__name__}")
    config._register_custom_module({nn.Module: _lora_layer_or_stand_in})


def _warning_texts(caught) -> tuple[str, ...]:
    return tuple(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))


def structure(peft_model, order: Optional[dict] = None) -> Adapted:
    """Read what was adapted off the module tree of a PeftModel (or of a tuner model). Names are
    sorted by `order` (name → position in the model before injection) when given: PEFT can change
    the order of children (a target nested in another is set on the outer tuner layer)."""
    from peft.tuners.lora.layer import ParamWrapper
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper, ModulesToSaveWrapper, TrainableTokensWrapper

    base = _base_model(peft_model)
    modules, parameters, saved, tokens, stand_ins = {}, {}, {}, {}, {}
    # Walk the tree ourselves so that every module's name can be mapped back to its pre-injection
    # name: PEFT inserts `base_layer` (tuner layers), `original_module` / `token_adapter`
    # (auxiliary wrappers) and keeps copies under `modules_to_save.<adapter>`, which are skipped.
    stack, seen = [("", base, None)], set()
    while stack:
        original, module, parent_kind = stack.pop()
        if id(module) in seen:  # like named_modules(): a module registered twice counts once
            continue
        seen.add(id(module))
        # `module` *is* the base_layer of a tuner layer: the outer layer already stands for it
        inner = parent_kind == "tuner-base"
        if isinstance(module, ParamWrapper):
            walk = module
            while isinstance(walk, ParamWrapper) and not inner:  # nested wrappers, one per parameter
                parameters.setdefault(f"{original}.{walk.parameter_name}", None)
                walk = walk.base_layer
        elif isinstance(module, TrainableTokensLayer):
            tokens.setdefault(original, None)
        elif isinstance(module, BaseTunerLayer):
            if not inner:
                modules.setdefault(original, None)
                if isinstance(module, StandIn):
                    stand_ins.setdefault(original, None)
        elif isinstance(module, ModulesToSaveWrapper):
            saved.setdefault(original, None)
        elif isinstance(module, TrainableTokensWrapper):
            tokens.setdefault(original, None)
        children = []
        for child_name, child in module.named_children():
            if isinstance(module, BaseTunerLayer) and child_name == "base_layer":
                children.append((original, child, "tuner-base"))
            elif isinstance(module, AuxiliaryTrainingWrapper) and child_name in ("original_module", "token_adapter"):
                children.append((original, child, "wrapped"))
            elif isinstance(module, ModulesToSaveWrapper) and child_name == "modules_to_save":
                continue  # the per-adapter copies of the original module
            else:
                children.append((f"{original}.{child_name}" if original else child_name, child, None))
        stack.extend(reversed(children))

    def ordered(names, key=lambda n: n):
        names = [n for n in names if n]
        if order is None:
            return tuple(names)
        return tuple(sorted(names, key=lambda n: order.get(key(n), len(order))))

    return Adapted(
        modules=ordered(modules),
        parameters=ordered(parameters, key=lambda n: n.rpartition(".")[0]),
        saved=ordered(saved),
        tokens=ordered(tokens),
        stand_ins=ordered(stand_ins),
        targeted_module_names=_bookkeeping(peft_model, "targeted_module_names"),
        targeted_parameter_names=_bookkeeping(peft_model, "targeted_parameter_names"),
    )


def _base_model(peft_model) -> nn.Module:
    tuner = getattr(peft_model, "base_model", peft_model)
    return getattr(tuner, "model", tuner)


def _bookkeeping(peft_model, field: str) -> Optional[tuple[str, ...]]:
    tuner = getattr(peft_model, "base_model", peft_model)
    value = getattr(tuner, field, None)
    return None if value is None else tuple(value)


def check_bookkeeping(adapted: Adapted, peft_model) -> None:
    """The tree and PEFT's `targeted_*_names` must name the same targets (order aside)."""
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    problems = []
    if adapted.targeted_module_names is not None:
        # The TrainableTokens method replaces an embedding by a TrainableTokensLayer: PEFT books it
        # as a targeted module, the oracle reports it under `tokens`.
        base = _base_model(peft_model)
        standalone = {
            n for n in adapted.tokens
            if isinstance(_get(base, n), TrainableTokensLayer)
        }
        tree, booked = set(adapted.modules) | standalone, set(adapted.targeted_module_names)
        if tree != booked:
            problems.append(f"modules: in the tree only {sorted(tree - booked)}, booked only {sorted(booked - tree)}")
    if adapted.targeted_parameter_names is not None:
        tree, booked = set(adapted.parameters), set(adapted.targeted_parameter_names)
        if tree != booked:
            problems.append(f"parameters: in the tree only {sorted(tree - booked)}, booked only {sorted(booked - tree)}")
    if problems:
        raise OracleDisagreement("PEFT's tree and its targeted_*_names disagree — " + "; ".join(problems))


def _get(root: nn.Module, name: str):
    try:
        return root.get_submodule(name)
    except AttributeError:
        return None


# ---------------------------------------------------------------- save + reload


@dataclasses.dataclass(frozen=True)
class Roundtrip:
    """A save_pretrained + PeftModel.from_pretrained on a fresh model."""

    before: Adapted
    after: Adapted
    saved_keys: tuple[str, ...]
    missing: tuple[str, ...]      # adapter keys the reloaded model has but the file lacks
    unexpected: tuple[str, ...]   # keys in the file the reloaded model does not have
    not_loaded: tuple[str, ...]   # keys present in both whose reloaded value differs from the saved one
    error: Optional[str] = None   # saving or reloading raised

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and self.before.modules == self.after.modules
            and self.before.parameters == self.after.parameters
            and self.before.saved == self.after.saved
            and self.before.tokens == self.after.tokens
            and not (self.missing or self.unexpected or self.not_loaded)
        )

    def describe(self) -> str:
        if self.error:
            return f"roundtrip raised {self.error}"
        out = []
        if (self.before.modules, self.before.parameters) != (self.after.modules, self.after.parameters):
            out.append(f"adapted before: {self.before.describe()}; after reload: {self.after.describe()}")
        for label, keys in (("missing", self.missing), ("unexpected", self.unexpected), ("not loaded", self.not_loaded)):
            if keys:
                out.append(f"{label} {_short(keys, 4)}")
        return "; ".join(out) or "ok"


def roundtrip(make_model_cpu: Callable[[], nn.Module], config: Any, *, seed: int = 0) -> Roundtrip:
    """Adapt a fresh CPU model with real weights, save the adapter, reload it with
    `PeftModel.from_pretrained` onto another fresh model, and compare what both adapt and hold."""
    import torch
    from peft import PeftModel, get_peft_model
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        model = make_model_cpu()
        order = {name: i for i, (name, _) in enumerate(model.named_modules())}
        peft_model = get_peft_model(model, copy.deepcopy(config))
        before = structure(peft_model, order)
        check_bookkeeping(before, peft_model)
        with tempfile.TemporaryDirectory() as tmp:
            try:
                peft_model.save_pretrained(tmp)
                saved = load_file(f"{tmp}/adapter_model.safetensors")
                torch.manual_seed(seed + 1)  # a different init, so an unloaded tensor shows
                reloaded = PeftModel.from_pretrained(make_model_cpu(), tmp)
            except Exception as exc:
                return Roundtrip(before, Adapted(), (), (), (), (), error=f"{type(exc).__name__}: {exc}")
        after = structure(reloaded, order)
        check_bookkeeping(after, reloaded)
        state = get_peft_model_state_dict(reloaded)
    missing = tuple(k for k in state if k not in saved)
    unexpected = tuple(k for k in saved if k not in state)
    not_loaded = tuple(
        k for k in saved
        if k in state and (state[k].shape != saved[k].shape or not torch.equal(state[k].cpu(), saved[k]))
    )
    return Roundtrip(before, after, tuple(saved), missing, unexpected, not_loaded)
