"""Wrapped and sharded models, seen as the user built them: FSDP1, FSDP2, activation checkpointing, ZeRO-3.

What each wrapper changes, and what the index (model/index.py) makes of it:

- **FSDP1** (`FullyShardedDataParallel`) and **activation checkpointing** (`checkpoint_wrapper`,
  `apply_activation_checkpointing`) put a module above each wrapped one, so names gain a
  `_fsdp_wrapped_module.` / `_checkpoint_wrapped_module.` segment. `unwrap()` (model/unwrap.py) drops the wrapper
  modules and their segments: names, blocks, queries and locks are the user's, and a query written
  for the plain model works unchanged. `peft_view()` keeps the names PEFT sees on the wrapped model
  (`named_modules()` there), for the bridge to match configs against both.
- **FSDP1 flat parameters.** FSDP1 flattens each wrapped unit's parameters into one `FlatParameter`.
  With `use_orig_params=False` the originals are no longer parameters of their modules and the
  flat parameter sits on the wrapped module: `unwrap()` registers one `FlatEntry` per original
  parameter where it was registered (shape from the flat parameter's metadata; `requires_grad`
  that of the flat parameter, read live — FSDP1 requires one value per flat parameter there).
  With `use_orig_params=True` the originals stay, as 1-D views of this rank's shard (often
  empty): their full shapes are recorded from the flat parameter (`global_shape`).
- **FSDP2** (`fully_shard`) swaps each sharded module's class for a dynamic `FSDP<Class>` subclass
  and its parameters for DTensors. A DTensor's `shape` and `numel()` are global already; the index
  records the user's class (`user_class`), so displays and `type:=` see `LlamaDecoderLayer`.
- **DeepSpeed ZeRO-3** partitions every parameter: the local tensor is empty (`numel() == 0`) and
  the real size is in `ds_shape` / `ds_numel` (deepspeed/runtime/zero/partition_parameters.py,
  `_convert_to_deepspeed_param`), which PEFT reads too (peft 0.21.2, tuners_utils.py
  `_get_in_out_features`, peft_model.py `get_nb_trainable_parameters`). `global_shape` /
  `global_numel` read them first.

Classes are recognised by name and defining module, so torch.distributed is never imported here.
"""

from __future__ import annotations

import functools
import math
import weakref
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

SEGMENTS = ("_fsdp_wrapped_module", "_checkpoint_wrapped_module")


# ---------------------------------------------------------------------------- classes


def _has_base(cls: type, name: str, package: str) -> bool:
    return any(c.__name__ == name and c.__module__.startswith(package) for c in cls.__mro__)


@functools.lru_cache(maxsize=None)
def wrapper_segment(cls: type) -> Optional[str]:
    """The child name under which a wrapper class holds the wrapped module, or None for other classes."""
    if _has_base(cls, "FullyShardedDataParallel", "torch.distributed.fsdp"):
        return "_fsdp_wrapped_module"
    if _has_base(cls, "ActivationWrapper", "torch.distributed.algorithms._checkpoint"):
        return "_checkpoint_wrapped_module"
    return None


def _is_fsdp2_base(cls: type) -> bool:
    return cls.__name__ == "FSDPModule" and cls.__module__.startswith("torch.distributed")


@functools.lru_cache(maxsize=None)
def user_class(cls: type) -> type:
    """The class the user built: FSDP2's dynamic `FSDP<Class>(FSDPModule, Class)` → `Class`."""
    if any(_is_fsdp2_base(b) for b in cls.__bases__):
        rest = [b for b in cls.__bases__ if not _is_fsdp2_base(b)]
        if len(rest) == 1:
            return user_class(rest[0])
    return cls


def user_name(name: str) -> str:
    """A module or parameter name with the wrappers' segments removed (the name on the plain model)."""
    if "_wrapped_module" not in name:
        return name
    return ".".join(part for part in name.split(".") if part not in SEGMENTS)


def unwrapped(module: nn.Module) -> nn.Module:
    """The module inside any FSDP1 / checkpoint wrappers around `module` (itself when not wrapped)."""
    while True:
        segment = wrapper_segment(type(module))
        inner = module._modules.get(segment) if segment else None
        if inner is None:
            return module
        module = inner


# ---------------------------------------------------------------------------- sizes


class FlatEntry:
    """One original parameter inside an FSDP1 `FlatParameter` (use_orig_params=False), where the
    model no longer holds it as a parameter: what the index needs of it, nothing else."""

    __slots__ = ("flat", "shape", "__weakref__")

    def __init__(self, flat: torch.Tensor, shape):
        self.flat = flat
        self.shape = torch.Size(shape)

    @property
    def requires_grad(self) -> bool:
        return self.flat.requires_grad

    @property
    def dtype(self) -> torch.dtype:
        return self.flat.dtype

    def numel(self) -> int:
        return math.prod(self.shape)

    def dim(self) -> int:
        return len(self.shape)

    def is_floating_point(self) -> bool:
        return self.flat.is_floating_point()

    def is_complex(self) -> bool:
        return self.flat.is_complex()

    def element_size(self) -> int:
        return self.flat.element_size()

    def __repr__(self) -> str:
        return f"FlatEntry(shape={tuple(self.shape)}, requires_grad={self.requires_grad})"


# id(parameter) → (weak reference, full shape) for FSDP1 use_orig_params=True parameters, whose
# local tensor is a 1-D view of this rank's shard. Filled by unwrap(); checked by identity.
_FULL_SHAPES: dict[int, tuple["weakref.ref", torch.Size]] = {}


def record_full_shapes(params, shapes) -> None:
    for p, shape in zip(params, shapes):
        _FULL_SHAPES[id(p)] = (weakref.ref(p), torch.Size(shape))
    for key in [k for k, (ref, _) in _FULL_SHAPES.items() if ref() is None]:
        del _FULL_SHAPES[key]


def global_shape(t) -> tuple[int, ...]:
    """The full shape of a parameter on any rank: ZeRO-3's `ds_shape`, an FSDP1 original's recorded
    shape, else its own (a DTensor's shape is global)."""
    ds = getattr(t, "ds_shape", None)
    if ds is not None:
        return tuple(int(d) for d in ds)
    known = _FULL_SHAPES.get(id(t))
    if known is not None and known[0]() is t:
        return tuple(known[1])
    return tuple(t.shape)


def global_numel(t) -> int:
    """Elements of the full parameter on any rank (ZeRO-3: `ds_numel`, as PEFT counts it)."""
    ds = getattr(t, "ds_numel", None)
    if isinstance(ds, int) and not isinstance(ds, bool):
        return ds
    known = _FULL_SHAPES.get(id(t))
    if known is not None and known[0]() is t:
        return math.prod(known[1])
    return t.numel()


# id(module) → (weak reference, {parameter name: FlatEntry}) for modules whose parameters FSDP1 flattened
# away (use_orig_params=False): what a meta copy of the module puts back (bridge/injection.py).
_ORIGINALS: dict[int, tuple["weakref.ref", dict[str, FlatEntry]]] = {}


def record_original(module: nn.Module, name: str, entry: FlatEntry) -> None:
    known = _ORIGINALS.get(id(module))
    if known is None or known[0]() is not module:
        for key in [k for k, (ref, _) in _ORIGINALS.items() if ref() is None]:
            del _ORIGINALS[key]
        known = _ORIGINALS[id(module)] = (weakref.ref(module), {})
    known[1][name] = entry


def flat_originals(module: nn.Module) -> dict[str, FlatEntry]:
    """The parameters FSDP1 flattened away from `module` (use_orig_params=False), by name; {} otherwise."""
    known = _ORIGINALS.get(id(module))
    return dict(known[1]) if known is not None and known[0]() is module else {}


def restore_originals(module: nn.Module, state: dict, make) -> None:
    """In `state`, the `__dict__` of a copy of `module`: FSDP1's flat parameter replaced by the module's own
    parameters, `make(entry)` each, as the plain model holds them (the plain-tensor views FSDP1 sets as
    attributes are dropped, so the parameters are what `module.weight` finds)."""
    originals = flat_originals(module)
    if not originals:
        return
    params = {k: v for k, v in state.get("_parameters", {}).items() if k != "_flat_param"}
    for name, entry in originals.items():
        params[name] = make(entry)
        state.pop(name, None)
    state["_parameters"] = params


def needs_plain_copy(module: nn.Module) -> bool:
    """Does a copy of `module` need rebuilding as the plain model's (FSDP2 classes or DTensors, FSDP1
    flattened parameters, anywhere inside)? `copy.deepcopy` cannot make one."""
    for m in module.modules():
        if user_class(type(m)) is not type(m) or id(m) in _ORIGINALS or any(
                p is not None and is_dtensor(p) for p in m._parameters.values()):
            return True
    return False


def is_flat_parameter(p) -> bool:
    return bool(getattr(p, "_is_flat_param", False)) and hasattr(p, "_param_infos")


# ---------------------------------------------------------------------------- the wrapped model's names


@dataclass(frozen=True)
class PeftView:
    """The module names PEFT sees on a wrapped model (`named_modules()` there, wrappers included) and,
    for each, its position in the index (-1 for a wrapper, which the index leaves out)."""

    names: list[str]
    positions: list[int]


def peft_view(index) -> Optional[PeftView]:
    """The wrapped model's own names, when they differ from the index's (None for unwrapped models)."""
    return index._cached.get("peft_view")


def peft_names(index) -> list[str]:
    """The names PEFT matches on this model: the wrapped model's own when it has wrappers."""
    view = peft_view(index)
    return index.names if view is None else view.names


def is_dtensor(t) -> bool:
    """An FSDP2 (or tensor-parallel) DTensor parameter: a meta copy of it is a plain parameter."""
    return any(c.__name__ == "DTensor" and c.__module__.startswith("torch.distributed") for c in type(t).__mro__)


def peft_matched(index, match) -> Optional[list[int]]:
    """Index positions of the modules `match(names)` (PEFT's matcher over a list of names → the matched
    offsets) picks on the model as PEFT sees it — a wrapped model's own names. None when it would pick
    a wrapper itself (FSDP1's or a checkpoint wrapper), which only a real injection can judge."""
    view = peft_view(index)
    if view is None:
        return match(index.names)
    positions = [view.positions[j] for j in match(view.names)]
    return None if any(p < 0 for p in positions) else positions


def target_names(index, mask: torch.Tensor) -> Optional[tuple[list[str], list[str], list[bool]]]:
    """For a wrapped model, what an exact `target_modules` value must get right: every name of the plain
    model and of the wrapped one (wrappers included, never selected), the selected ones among them and
    a mask over them — so one value adapts the same modules whether the config is applied before or
    after wrapping. None for models without wrappers. A name selected in one naming and unselected in
    the other (a selected module directly under an FSDP1 or checkpoint wrapper has the wrapper's name on
    the wrapped model) leaves no exact value: `ConfigError`, select before wrapping."""
    from targetsel.errors import ConfigError

    view = peft_view(index)
    if view is None:
        return None
    flags = mask.tolist()
    merged: dict[str, bool] = {}
    clashes: list[str] = []
    pairs = zip(index.names[1:] + view.names[1:], flags[1:] + [p >= 0 and flags[p] for p in view.positions[1:]])
    for name, flag in pairs:
        if merged.setdefault(name, flag) != flag:
            clashes.append(name)
    if clashes:
        raise ConfigError(
            f"{len(clashes)} selected module(s) of this wrapped model have, on the plain model, the name of a "
            f"wrapper or of an unselected module of the wrapped one (e.g. {clashes[0]!r}, the name of its FSDP or "
            "checkpoint wrapper), so no target_modules value adapts the same modules before and after wrapping. "
            "Select and patch on the model before wrapping it (on the meta device is enough), apply the config "
            "there, then wrap."
        )
    names = [""] + list(merged)
    return [n for n, f in merged.items() if f], names, [False] + list(merged.values())


def class_name(module: nn.Module) -> str:
    """The name of the class the user built, for messages: not FSDP1's or a checkpoint wrapper around
    it, not FSDP2's dynamic `FSDP<Class>`."""
    return user_class(type(unwrapped(module))).__name__
