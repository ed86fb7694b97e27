"""Facts about module classes: what a type name matches, and PEFT's linear family.

Classes are compared by name where their packages are optional (quantized linears, transformers'
`Conv1D`, PEFT's `BaseTunerLayer`), so none of those packages is imported here. The quantized
families, and which PEFT version wraps each, are in `quantized.py`.
"""

from __future__ import annotations

import sys

import torch

from targetsel.model.quantized import is_peft_linear_class


def class_matches(cls: type, name: str, exact: bool) -> bool:
    """Does `cls` (exact) or a class in its MRO carry `name` (short name or dotted module.QualName)?"""
    candidates = (cls,) if exact else cls.__mro__
    for c in candidates:
        if c.__name__ == name or f"{c.__module__}.{c.__qualname__}" == name:
            return True
    return False


def is_linear_class(cls: type) -> bool:
    """What `linear` selects: PEFT's "all-linear" family (nn.Linear and transformers' Conv1D, subclasses
    included — bitsandbytes, FP8 and compressed-tensors linears among them), plus the quantized and
    Transformer Engine layers that are not nn.Linear subclasses but that the installed PEFT wraps with
    a dedicated LoRA layer (GPTQ, AWQ, HQQ, EETQ, AQLM, INC, TE: see `quantized.FAMILIES`)."""
    for c in cls.__mro__:
        if c is torch.nn.Linear:
            return True
        if c.__name__ == "Conv1D" and c.__module__.startswith("transformers"):
            return True
    return is_peft_linear_class(cls)


def is_tuner_class(cls: type) -> bool:
    """A PEFT adapter layer (`BaseTunerLayer` subclass)? peft is never imported for this: a model can
    only hold tuner layers once peft (and so its tuners_utils) has been imported by someone else."""
    base = getattr(sys.modules.get("peft.tuners.tuners_utils"), "BaseTunerLayer", None)
    return base is not None and issubclass(cls, base)


def linear_mask(index) -> torch.Tensor:
    """The modules "linear" selects on `index` (a `ModelIndex`): the linear family, minus adapter
    internals and the output head (once per index)."""
    return index.memo("linear", lambda: _linear_mask(index))


def _linear_mask(index) -> torch.Tensor:
    mask = index.class_mask(is_linear_class)
    # Adapter internals (lora_A, …) are never candidates, as in PEFT's all-linear expansion.
    tuner = index.class_mask(lambda c: any(b.__name__ == "BaseTunerLayer" for b in c.__mro__))
    if bool(tuner.any()):
        mask = mask & ~index.ancestors_mask(tuner)
    head = index.output_head_position()
    if head is not None:
        mask = mask.clone()
        mask[head] = False
    mask[0] = False
    return mask
