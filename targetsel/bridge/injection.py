"""What a real `get_peft_model` adapts — found by running it on a skeleton of the model.

The skeleton is a structural copy: every module is a new instance of the same class with the same
attributes, every parameter and buffer an empty tensor of the same shape on the meta device, tied
parameters and shared modules still shared, transformers configs deep-copied. PEFT's own
`get_peft_model(skeleton, config, low_cpu_mem_usage=True)` then runs every rule of the installed
version — its transformers-5 MoE conversion, the Mamba guard, `"all-linear"`, list condensation,
`layer_replication`, `ensure_weight_tying`, `trainable_token_indices`, `modules_to_save` and the
task-type defaults, `target_parameters` — and the result is read off the adapted skeleton. The
user's model is never touched: nothing PEFT does to the skeleton reaches it.

The reload check saves the config as PEFT saves it (`PeftConfig.save_pretrained`), reads it back
(`PeftConfig.from_pretrained`), injects it into a second skeleton as `PeftModel.from_pretrained`
does, and compares what is adapted and the adapter's state-dict keys.
"""

from __future__ import annotations

import collections
import copy
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from targetsel.model.hooks import throwaway_models
from targetsel.model.quantized import meta_parameter
from targetsel.model.wrappers import restore_originals, user_class


@dataclass(frozen=True)
class Injection:
    """What `get_peft_model(model, config)` adapts (names relative to the base model, model order).

    `modules`: modules wrapped by the method's tuner layers through `target_modules`;
    `parameters`: parameters adapted through `target_parameters` (`module.param`);
    `saved`: modules wrapped by `modules_to_save` (trained in full); `tokens`: modules given
    trainable-token layers (`mirrors`: those that only mirror another, a tied `lm_head`); `target_modules` / `target_parameters`: the config's targets as PEFT
    matched them, after its own rewriting; `error`: what `get_peft_model` raises (`"ValueError: …"`),
    None when it succeeds; `reloads`: after a save + reload of the adapter, the same modules and
    parameters are adapted and every saved key has a place (None when not checked); `how`:
    `"peft"` (a real injection into a skeleton) or `"fast"` (targetsel's O(N) path, proven equal).
    """

    modules: tuple[str, ...] = ()
    parameters: tuple[str, ...] = ()
    saved: tuple[str, ...] = ()
    tokens: tuple[str, ...] = ()
    mirrors: tuple[str, ...] = ()
    target_modules: Any = None
    target_parameters: tuple[str, ...] = ()
    error: Optional[str] = None
    reloads: Optional[bool] = None
    how: str = "peft"
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def same_outcome(self, other: "Injection") -> bool:
        """Same adapted modules, parameters, wrappers and the same raise-or-not (messages may differ)."""
        return (
            (self.error is None) == (other.error is None)
            and (self.error is not None or (
                self.modules == other.modules and self.parameters == other.parameters
                and self.saved == other.saved and self.tokens == other.tokens
            ))
        )


# ---------------------------------------------------------------------------- the skeleton


def _meta_tensor(t: torch.Tensor, memo: dict) -> torch.Tensor:
    hit = memo.get(id(t))
    if hit is None:
        if isinstance(t, nn.Parameter):  # subclasses (bitsandbytes' Params4bit) keep their class and attributes
            grad_ok = t.dtype.is_floating_point or t.dtype.is_complex
            hit = meta_parameter(t, bool(t.requires_grad and grad_ok))
        else:
            hit = torch.empty(tuple(t.shape), dtype=t.dtype, device="meta")
        memo[id(t)] = hit
    return hit


def _copy_value(value: Any, memo: dict) -> Any:
    if isinstance(value, nn.Module):
        return _copy_module(value, memo)
    if isinstance(value, torch.Tensor):
        return _meta_tensor(value, memo)
    # Hook tables, buffer-name sets and the like: a fresh container, so registering on the skeleton
    # never registers on the model.
    if type(value) in (dict, list, set, collections.OrderedDict):
        return copy.copy(value)
    if _is_transformers_config(value):  # PEFT writes into model.config (pretraining_tp, layer counts)
        hit = memo.get(id(value))
        if hit is None:
            hit = memo[id(value)] = copy.deepcopy(value)
        return hit
    return value


def _is_transformers_config(value: Any) -> bool:
    return any(c.__name__ == "PreTrainedConfig" or c.__name__ == "PretrainedConfig" for c in type(value).__mro__)


def _copy_module(module: nn.Module, memo: dict) -> nn.Module:
    hit = memo.get(id(module))
    if hit is not None:
        return hit
    cls = user_class(module.__class__)  # FSDP2's FSDP<Class>.__new__ would re-run Class.__init__()
    new = cls.__new__(cls)
    memo[id(module)] = new
    state = {}
    for key, value in module.__dict__.items():
        if key == "_modules":
            state[key] = {k: (None if v is None else _copy_module(v, memo)) for k, v in value.items()}
        elif key in ("_parameters", "_buffers"):
            state[key] = {k: (None if v is None else _meta_tensor(v, memo)) for k, v in value.items()}
        else:
            state[key] = _copy_value(value, memo)
    # FSDP1 use_orig_params=False: the parameters it flattened away, back as the plain model has them
    restore_originals(module, state, lambda e: memo.setdefault(id(e), meta_parameter(e, e.requires_grad)))
    object.__setattr__(new, "__dict__", state)
    return new


def skeleton(model: nn.Module) -> nn.Module:
    """A structural copy of `model` on the meta device that shares nothing PEFT can change."""
    return _copy_module(model, {})


# ---------------------------------------------------------------------------- running PEFT


def _inject(model: nn.Module, config: Any):
    """`get_peft_model` on a skeleton: (peft_model or None, "Type: message" or None, warnings)."""
    from peft import get_peft_model

    with warnings.catch_warnings(record=True) as caught, throwaway_models():  # a skeleton: no user model changes
        warnings.simplefilter("always")
        try:
            peft_model = get_peft_model(skeleton(model), copy.deepcopy(config), low_cpu_mem_usage=True)
        except Exception as exc:  # whatever PEFT raises is the answer, not a failure of ours
            return None, f"{type(exc).__name__}: {exc}", _texts(caught)
    return peft_model, None, _texts(caught)


def _texts(caught) -> tuple[str, ...]:
    return tuple(dict.fromkeys(str(w.message) for w in caught))


def _base(peft_model) -> nn.Module:
    return peft_model.base_model.model


def read_adapted(base: nn.Module) -> dict[str, tuple[str, ...]]:
    """modules / parameters / saved / tokens / mirrors of an adapted model, read from its structure.

    Names are those of the model before injection: a layer inside a `modules_to_save` wrapper is
    named as it was (not `….original_module.…`) and the trained copy under `modules_to_save.<adapter>`
    is not counted twice; what sits inside a tuner layer (its `base_layer`, adapter weights) is skipped. `mirrors`: trainable-token layers that only
    mirror another one (a tied `lm_head`)."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import ModulesToSaveWrapper, TrainableTokensWrapper

    out: dict[str, list[str]] = {"modules": [], "parameters": [], "saved": [], "tokens": [], "mirrors": []}
    skipped: list[str] = []  # raw-name prefixes whose subtrees are adapter internals or copies
    renamed: list[tuple[str, str]] = []  # (raw prefix, original prefix) inside modules_to_save wrappers
    for raw, module in base.named_modules():
        if any(raw == p or raw.startswith(p + ".") for p in skipped):
            continue
        name = _original_name(raw, renamed)
        if isinstance(module, ModulesToSaveWrapper):
            out["saved"].append(name)
            skipped.append(raw + ".modules_to_save")  # the trained copy: counted once, as the original
            renamed.append((raw + ".original_module", name))
        elif isinstance(module, TrainableTokensWrapper):
            out["tokens"].append(name)
            skipped.append(raw)
        elif isinstance(module, BaseTunerLayer):
            kind = type(module).__name__
            if kind == "ParamWrapper":
                # The wrapped module's own children can be targets too (`gate.base_layer.proj`):
                # walk on through base_layer under the original name, skip only the adapter weights.
                if not any(raw == inner for inner, _ in renamed):  # the outermost link lists the chain
                    out["parameters"] += _wrapped_parameters(name, module)
                skipped += [f"{raw}.{child}" for child in module._modules if child != "base_layer"]
                renamed.append((raw + ".base_layer", name))
                continue
            skipped.append(raw)  # its base_layer and adapter weights
            if kind == "TrainableTokensLayer":
                out["tokens"].append(name)
                if getattr(module, "_tied_adapter", None):
                    out["mirrors"].append(name)
            else:
                out["modules"].append(name)
    return {key: tuple(dict.fromkeys(values)) for key, values in out.items()}


def _original_name(raw: str, renamed: list[tuple[str, str]]) -> str:
    """The name before injection: PEFT's `original_module` / `base_layer` links dropped."""
    for inserted, original in reversed(renamed):  # innermost first
        if raw == inserted or raw.startswith(inserted + "."):
            return _original_name(original + raw[len(inserted):], renamed)
    return raw


def _wrapped_parameters(name: str, wrapper) -> list[str]:
    """`name.param` for every ParamWrapper in the chain (PEFT stacks one per parameter through base_layer)."""
    out = []
    layer = wrapper
    while type(layer).__name__ == "ParamWrapper":
        out.append(f"{name}.{layer.parameter_name}")
        layer = layer.base_layer
    return out


def _in_model_order(model: nn.Module, adapted: dict) -> dict:
    """Parameters in the order the model registers them (PEFT wraps them in sorted order)."""
    order: dict[str, int] = {}
    for name, module in model.named_modules():
        for pname in module._parameters:
            order.setdefault(f"{name}.{pname}", len(order))
    params = sorted(adapted["parameters"], key=lambda p: (order.get(p, len(order)), p))
    return {**adapted, "parameters": tuple(params)}


def _prepared_targets(peft_model) -> tuple[Any, tuple[str, ...]]:
    cfg = peft_model.peft_config["default"]
    targets = cfg.target_modules
    if isinstance(targets, set):
        targets = sorted(targets)
    return targets, tuple(sorted(getattr(cfg, "target_parameters", None) or ()))


def real_injection(model: nn.Module, config: Any, *, reload: bool = True) -> Injection:
    """Run the installed PEFT's `get_peft_model` on a skeleton of `model` and read what it adapted."""
    peft_model, error, caught = _inject(model, config)
    if peft_model is None:
        return Injection(error=error, how="peft", warnings=caught)
    adapted = _in_model_order(model, read_adapted(_base(peft_model)))
    targets, target_parameters = _prepared_targets(peft_model)
    reloads = _reloads(model, peft_model, adapted) if reload else None
    return Injection(
        **adapted, target_modules=targets, target_parameters=target_parameters, reloads=reloads, how="peft",
        warnings=caught,
    )


def _reloads(model: nn.Module, peft_model, adapted: dict) -> bool:
    """Does the adapter, saved and loaded back as PEFT does it, land on the same modules and keys?"""
    from peft import MODEL_TYPE_TO_PEFT_MODEL_MAPPING, PeftConfig, PeftModel
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    # save_embedding_layers=False: the adapter's own keys, without PEFT's hub look-up for resized vocabularies
    def keys(m) -> set:
        return set(get_peft_model_state_dict(m, save_embedding_layers=False))

    try:
        saved_keys = keys(peft_model)
    except Exception:  # PEFT cannot even collect the adapter's weights
        return False
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings(), throwaway_models():
        warnings.simplefilter("ignore")
        try:
            peft_model.peft_config["default"].save_pretrained(folder)
            loaded = PeftConfig.from_pretrained(folder)
            loaded.inference_mode = True  # what PeftModel.from_pretrained(is_trainable=False) sets
            # the class PeftModel.from_pretrained picks (peft/peft_model.py, PeftModel.from_pretrained)
            cls = MODEL_TYPE_TO_PEFT_MODEL_MAPPING.get(loaded.task_type, PeftModel)
            again = cls(skeleton(model), loaded, "default", low_cpu_mem_usage=True)
        except Exception:
            return False
        if _in_model_order(model, read_adapted(_base(again))) != adapted:
            return False
        try:  # the weights go where PeftModel.load_adapter puts them
            if keys(again) != saved_keys:
                return False
            result = set_peft_model_state_dict(
                again, get_peft_model_state_dict(peft_model, save_embedding_layers=False), adapter_name="default",
                low_cpu_mem_usage=True,
            )
        except Exception:
            return False
        prefix = _adapter_prefix(loaded)
        missing = [k for k in getattr(result, "missing_keys", []) if prefix and prefix in k]
        return not getattr(result, "unexpected_keys", None) and not missing


def _adapter_prefix(config) -> str:
    try:
        from peft.utils.constants import PEFT_TYPE_TO_PREFIX_MAPPING
    except ImportError:  # pragma: no cover - older peft
        return ""
    return PEFT_TYPE_TO_PREFIX_MAPPING.get(config.peft_type, "") or ""
