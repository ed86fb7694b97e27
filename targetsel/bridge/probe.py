"""What a PEFT method can wrap, asked from PEFT itself on a meta copy of one module.

Each class is injected, on a meta-device copy of one of its modules inside a one-module model, with
PEFT's own `inject_adapter_in_model` — the model is never touched — so the answer is the installed
PEFT's dispatch, quantized backends and custom module mappings included. `check()` reads it for
its wrap rules and `dry_run()`'s fast path for the dispatch.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import warnings
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from targetsel.model.hooks import throwaway_models
from targetsel.model.classes import is_linear_class
from targetsel.model.quantized import meta_parameter
from targetsel.model.wrappers import needs_plain_copy

# The name the probe gives the module under test inside its one-module model.
_PROBE = "targetsel_probe"
# What PEFT's dispatch reads from the model rather than the layer (peft/tuners/lora/model.py,
# `_create_new_module` kwargs): without them a bitsandbytes layer is wrapped as a plain Linear.
_MODEL_FLAGS = ("is_loaded_in_8bit", "is_loaded_in_4bit")


@dataclass(frozen=True)
class Probe:
    supported: bool
    wrapper: Optional[type] = None  # the PEFT layer class it becomes, when known
    reason: str = ""  # PEFT's words when it cannot wrap it
    frozen: tuple[str, ...] = ()  # the module's own parameters get_peft_model freezes
    kept: tuple[str, ...] = ()  # … and those it leaves trainable
    internals: Optional[tuple[str, ...]] = None  # names PEFT adds under the wrapped module (base_layer, lora_A.default, …)


_DATA_DEPENDENT_INIT = ("pissa", "olora", "loftq", "eva", "corda", "orthogonal")


def probe_config(config, target_modules):
    """A copy of `config` that targets only `target_modules` and changes nothing PEFT's dispatch reads."""
    fields = {f.name for f in dataclasses.fields(config)}
    changes: dict[str, Any] = {"target_modules": target_modules}
    neutral = {
        "exclude_modules": None,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "target_parameters": None,
        "trainable_token_indices": None,
        "layer_replication": None,
        "ensure_weight_tying": False,
        "feedforward_modules": [],
        "inference_mode": False,
    }
    changes.update({k: v for k, v in neutral.items() if k in fields})
    for name in ("init_lora_weights", "init_weights"):  # meta tensors have no data to decompose
        value = getattr(config, name, None)
        if name in fields and isinstance(value, str) and value.lower().startswith(_DATA_DEPENDENT_INIT):
            changes[name] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return dataclasses.replace(copy.deepcopy(config), **changes)


def meta_copy(module: nn.Module) -> nn.Module:
    """A structural copy of `module` whose parameters and buffers live on the meta device (no data
    copied); parameter subclasses (bitsandbytes' Params4bit, …) keep their class and attributes."""
    if needs_plain_copy(module):  # sharded or flattened by FSDP: deepcopy cannot give the plain module
        from targetsel.bridge.injection import skeleton

        return skeleton(module)
    memo: dict[int, Any] = {}
    for p in module.parameters():
        trainable = p.dtype.is_floating_point or p.dtype.is_complex
        memo[id(p)] = meta_parameter(p, trainable)
    for b in module.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(module, memo)


_UNSUPPORTED_WORDS = re.compile(r"not supported|unsupported", re.I)
_PEFT_LIST = re.compile(r"(currently,? only .*)", re.I | re.S)


def _peft_words(text: str) -> str:
    """PEFT's list of what it supports, without the module repr it puts in front."""
    m = _PEFT_LIST.search(text)
    words = m.group(1) if m else text
    words = " ".join(words.split()).rstrip(". ")
    return words[:1].upper() + words[1:]


def _static_supported(cls: type) -> bool:
    """The layer families PEFT's default LoRA dispatch checks with isinstance (used when the probe itself breaks)."""
    return is_linear_class(cls) or issubclass(cls, (nn.Embedding, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MultiheadAttention))


def probe(module: nn.Module, config, model: Optional[nn.Module] = None) -> Probe:
    """Ask PEFT whether `config`'s method can wrap `module`, on a meta copy inside a one-module model
    that carries `model`'s loading flags (`is_loaded_in_4bit`, …), as PEFT's dispatch reads them."""
    cls = type(module)
    with throwaway_models():  # the holder and its copy are ours alone: no index needs to look again
        return _probe(module, config, model, cls)


def _probe(module: nn.Module, config, model: Optional[nn.Module], cls: type) -> Probe:
    from peft import inject_adapter_in_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    try:
        holder = nn.Module()
        for flag in _MODEL_FLAGS:
            if getattr(model, flag, False) is True:
                setattr(holder, flag, True)
        holder.add_module(_PROBE, meta_copy(module))
        cfg = probe_config(config, f"^{_PROBE}$")
    except Exception:  # an attribute deepcopy cannot copy: fall back to the families PEFT dispatches on
        return Probe(_static_supported(cls), reason="" if _static_supported(cls) else "it is not a layer type PEFT wraps")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            inject_adapter_in_model(cfg, holder)
    except Exception as exc:
        text = str(exc)
        if _UNSUPPORTED_WORDS.search(text):
            return Probe(False, reason=_peft_words(text))
        if _static_supported(cls):  # a probe artefact (meta weights), not PEFT's answer
            return Probe(True)
        return Probe(False, reason=f"get_peft_model fails on it with {type(exc).__name__}" + (f": {_peft_words(text)}" if text else ""))
    wrapped = getattr(holder, _PROBE)
    if not isinstance(wrapped, BaseTunerLayer):
        return Probe(True, wrapper=type(wrapped))
    base = wrapped.get_base_layer()
    own = list(base.named_parameters())
    return Probe(
        True,
        wrapper=type(wrapped),
        frozen=tuple(n for n, p in own if not p.requires_grad),
        kept=tuple(n for n, p in own if p.requires_grad),
        internals=tuple(n for n, _ in wrapped.named_modules(remove_duplicate=False) if n),
    )
