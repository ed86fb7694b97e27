"""Quantized linears: which classes they are, which PEFT version wraps them, and their logical sizes.

Recognised by class name and defining package (`bitsandbytes.…Linear4bit`), never by importing
the package: a model can only hold such layers if their package is installed, and targetsel must
not pay for importing them. Each family says which PEFT versions dispatch a dedicated LoRA layer
for it, read from the installed PEFT's `peft/tuners/lora/*.py` (`dispatch_*`) and from the
0.13–0.20 releases (their wheels' `dispatch_*` functions):

- PEFT's own `"all-linear"` takes `nn.Linear` and transformers' `Conv1D` subclasses only, so it
  takes bitsandbytes, FP8 and compressed-tensors linears (nn.Linear subclasses) and never GPTQ,
  AWQ, HQQ, EETQ, AQLM, INC or Transformer Engine layers.
- targetsel's `linear` adds the families that are not nn.Linear subclasses where the installed
  PEFT (`Family.wraps`) has a dispatcher for them.

The *logical* size of a quantized weight is its float shape: bitsandbytes packs two 4-bit values
per byte (a `Params4bit` of `out·in/2` bytes, its `quant_state.shape` the float shape), and GPTQ,
AWQ, HQQ and EETQ keep their packed weights in buffers, not parameters. Display and parameter
counts use the logical size (`logical_numel`, `buffer_weight_numel`), as transformers'
`num_parameters()` does for 4-bit weights.
"""

from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn

from targetsel.model.wrappers import global_numel, global_shape, is_dtensor


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text.split("+")[0])[:3])


@functools.lru_cache(maxsize=1)
def installed_peft() -> Optional[tuple[int, ...]]:
    """The installed PEFT's version as (major, minor, patch), read from its metadata (peft is not imported)."""
    from importlib import metadata

    try:
        return _version_tuple(metadata.version("peft"))
    except metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class Family:
    """A kind of quantized (or otherwise special) linear layer and what PEFT does with it."""

    key: str  # stable id: "bnb-4bit"
    label: str  # "bitsandbytes 4-bit"
    packages: tuple[str, ...]  # module prefixes of the defining package(s)
    classes: tuple[str, ...]  # class names, anywhere in the MRO
    wrapper: Optional[str]  # PEFT's LoRA layer for it; None: PEFT's default dispatch wraps it as a plain nn.Linear
    peft_since: tuple[int, ...] = (0, 13)  # first PEFT release with that wrapper (0.13: as far as targetsel tests)
    peft_until: Optional[tuple[int, ...]] = None  # first PEFT release without it
    quantized: bool = True  # the base weight is quantized (frozen by design); False: Transformer Engine
    condition: str = ""  # what else PEFT's dispatcher needs
    weight_in_buffers: bool = False  # the packed weight is a buffer, not a parameter
    predicate: Optional[Callable[[type], bool]] = None  # an extra test on the class (gptqmodel's AWQ layers)

    def matches(self, cls: type) -> bool:
        for c in cls.__mro__:
            if c.__name__ in self.classes and c.__module__.startswith(self.packages):
                return self.predicate is None or self.predicate(cls)
        return False

    def wraps(self, version: Optional[tuple[int, ...]] = None) -> bool:
        """Does PEFT `version` (default: the installed one) have a dedicated LoRA layer for this family?"""
        version = installed_peft() if version is None else version
        if self.wrapper is None or version is None:
            return False
        return version >= self.peft_since and (self.peft_until is None or version < self.peft_until)

    @property
    def nn_linear(self) -> bool:
        """Are its classes nn.Linear subclasses (so PEFT's all-linear and default dispatch take them)?"""
        return self.key in _NN_LINEAR_FAMILIES


def _supports_awq(cls: type) -> bool:
    # PEFT >= 0.20 (peft/utils/other.py, is_gptqmodel_awq_layer): a gptqmodel layer whose SUPPORTS_METHODS has awq
    return any(getattr(m, "value", m) == "awq" for m in getattr(cls, "SUPPORTS_METHODS", None) or ())


def _not_awq(cls: type) -> bool:
    return not _supports_awq(cls)


# In PEFT's dispatch order (peft/tuners/lora/model.py, `_create_new_module`): the first match wins.
FAMILIES: tuple[Family, ...] = (
    Family("bnb-8bit", "bitsandbytes 8-bit", ("bitsandbytes.",), ("Linear8bitLt",), "peft.tuners.lora.bnb.Linear8bitLt",
           condition="model.is_loaded_in_8bit (transformers sets it when it loads the model 8-bit)"),
    Family("bnb-4bit", "bitsandbytes 4-bit", ("bitsandbytes.",), ("Linear4bit",), "peft.tuners.lora.bnb.Linear4bit",
           condition="model.is_loaded_in_4bit (transformers sets it when it loads the model 4-bit)"),
    Family("eetq", "EETQ int8", ("eetq.",), ("EetqLinear",), "peft.tuners.lora.eetq.EetqLoraLinear",
           weight_in_buffers=True),
    Family("eetq-transformers", "EETQ int8 (transformers' layer)", ("transformers.integrations.eetq",), ("EetqLinear",),
           "peft.tuners.lora.eetq.EetqLoraLinear", peft_since=(0, 20), condition="the eetq package installed",
           weight_in_buffers=True),
    Family("aqlm", "AQLM", ("aqlm.",), ("QuantizedLinear",), "peft.tuners.lora.aqlm.AqlmLoraLinear"),
    Family("awq-gptqmodel", "AWQ (gptqmodel)", ("gptqmodel.",), ("BaseQuantLinear",), "peft.tuners.lora.awq.AwqLoraLinear",
           peft_since=(0, 19), predicate=_supports_awq, weight_in_buffers=True),
    Family("awq-autoawq", "AWQ (autoawq)", ("awq.",), ("WQLinear_GEMM",), "peft.tuners.lora.awq.AwqLoraLinear",
           peft_until=(0, 19), weight_in_buffers=True),
    Family("gptq-gptqmodel", "GPTQ (gptqmodel)", ("gptqmodel.",), ("BaseQuantLinear",),
           "peft.tuners.lora.gptq.GPTQLoraLinear", peft_since=(0, 15), predicate=_not_awq, weight_in_buffers=True),
    Family("gptq-autogptq", "GPTQ (auto-gptq)", ("auto_gptq.",), ("QuantLinear",), "peft.tuners.lora.gptq.GPTQLoraLinear",
           peft_until=(0, 19), condition="model.config.quantization_config (gptq)", weight_in_buffers=True),
    Family("hqq", "HQQ", ("hqq.",), ("HQQLinear",), "peft.tuners.lora.hqq.HqqLoraLinear"),
    Family("inc", "Intel Neural Compressor FP8", ("neural_compressor.",), ("PatchedLinear",),
           "peft.tuners.lora.inc.IncLoraLinear", peft_since=(0, 16)),
    Family("te", "Transformer Engine", ("transformer_engine.",), ("Linear", "LayerNormLinear", "LayerNormMLP"),
           "peft.tuners.lora.te.TeLinear", peft_since=(0, 19), quantized=False),
    Family("fp8", "FP8 (transformers)", ("transformers.integrations.finegrained_fp8",
                                         "transformers.integrations.fbgemm_fp8"), ("FP8Linear", "FbgemmFp8Linear"), None),
    Family("compressed-tensors", "compressed-tensors", ("compressed_tensors.",), ("CompressedLinear",), None),
    Family("quanto", "optimum-quanto", ("optimum.quanto.",), ("QLinear",), None),
)
# torchao quantizes in place: the module stays an nn.Linear and its weight becomes a tensor subclass.
TORCHAO = Family("torchao", "torchao", ("torchao.",), ("TorchAOBaseTensor", "AffineQuantizedTensor",
                                                      "LinearActivationQuantizedTensor"),
                 "peft.tuners.lora.torchao.TorchaoLoraLinear", peft_since=(0, 14))
_NN_LINEAR_FAMILIES = frozenset({"bnb-8bit", "bnb-4bit", "fp8", "compressed-tensors", "quanto", "torchao"})


@functools.lru_cache(maxsize=None)
def family_of_class(cls: type) -> Optional[Family]:
    """The family `cls` belongs to (PEFT's dispatch order), or None."""
    return next((f for f in FAMILIES if f.matches(cls)), None)


def family_of(module: nn.Module) -> Optional[Family]:
    """The family of a module: its class's, or torchao's when its weight is a torchao tensor subclass."""
    family = family_of_class(type(module))
    if family is not None:
        return family
    weight = module.__dict__.get("_parameters", {}).get("weight")
    if weight is not None and TORCHAO.matches(type(weight)):
        return TORCHAO
    return None


def is_peft_linear_class(cls: type) -> bool:
    """A class outside nn.Linear/Conv1D that the installed PEFT wraps with a dedicated LoRA layer."""
    family = family_of_class(cls)
    return family is not None and not family.nn_linear and family.wraps()


def quantized_mask(index) -> torch.Tensor:
    """Modules whose base weight is quantized (every family but Transformer Engine), once per index."""
    return index.memo("quantized", lambda: _quantized_mask(index))


def _quantized_mask(index) -> torch.Tensor:
    mask = index.class_mask(lambda c: (f := family_of_class(c)) is not None and f.quantized)
    if "torchao" not in sys.modules:  # no torchao tensor subclass can exist: skip the per-Linear look at weights
        return mask
    candidates = index.class_mask(lambda c: issubclass(c, nn.Linear) and family_of_class(c) is None)
    for i in candidates.nonzero().flatten().tolist():
        if family_of(index.modules[i]) is TORCHAO:
            mask[i] = True
    return mask


def quantized_positions(index, positions) -> list[int]:
    """Those of `positions` that hold a quantized layer."""
    mask = quantized_mask(index)
    if not index.memo("any_quantized", lambda: bool(mask.any())):  # the common case: no quantized layer at all
        return []
    at = torch.as_tensor(positions, dtype=torch.long)
    return at[mask[at]].tolist() if len(at) else []


def trainable_storage(p: torch.Tensor) -> bool:
    """Could this parameter train — a float tensor that is not quantized storage (bitsandbytes'
    Params4bit/Int8Params, whatever their storage dtype, or float8 weights)?"""
    if type(p).__name__ in ("Params4bit", "Int8Params"):
        return False
    return (p.is_floating_point() or p.is_complex()) and p.element_size() > 1


# ---------------------------------------------------------------------------- logical sizes


def logical_numel(p: torch.Tensor) -> int:
    """Elements of the float tensor a parameter stands for: a packed bitsandbytes 4-bit weight counts
    its `quant_state.shape` (two values per byte of `quant_storage`), everything else its own numel."""
    if type(p).__name__ == "Params4bit" and getattr(p, "bnb_quantized", False):
        state = getattr(p, "quant_state", None)
        shape = getattr(state, "shape", None)
        if shape is not None:
            n = 1
            for d in shape:
                n *= int(d)
            return n
        return p.numel() * 2 * p.element_size()
    return global_numel(p)  # ZeRO-3 / FSDP1 shards: the full size (model/wrappers.py)


def lora_in_out(module: nn.Module) -> Optional[tuple[int, int]]:
    """(in, out) of the LoRA layer PEFT builds on a quantized or Transformer Engine layer, by PEFT's
    `_get_in_out_features` (peft/tuners/tuners_utils.py); None when the module has no such sizes."""
    cls_name = type(module).__name__
    if cls_name == "LayerNormMLP":  # PEFT: in = out = the layer norm's size
        size = int(module.layer_norm_weight.shape[0])
        return size, size
    for a, b in (("in_features", "out_features"), ("infeatures", "outfeatures"), ("input_size", "output_size")):
        i, o = getattr(module, a, None), getattr(module, b, None)
        if isinstance(i, int) and isinstance(o, int):
            return i, o
    weight = getattr(module, "weight", None)
    if cls_name == "EetqLinear" and weight is not None and weight.dim() == 2:  # transformers' layer: (in, out)
        return int(weight.shape[0]), int(weight.shape[1])
    return None


def buffer_weight_numel(module: nn.Module) -> int:
    """The logical weight elements of a layer that keeps its packed weight in buffers (GPTQ, AWQ, EETQ), else 0."""
    family = family_of_class(type(module))
    if family is None or not family.weight_in_buffers:
        return 0
    if isinstance(module.__dict__.get("_parameters", {}).get("weight"), nn.Parameter):
        return 0
    sizes = lora_in_out(module)
    return sizes[0] * sizes[1] if sizes else 0


def buffer_weight_numels(index) -> torch.Tensor:
    """Per position, the buffer-held logical weight elements of the module itself (float64; usually all 0)."""
    def compute() -> torch.Tensor:
        has = index.class_mask(lambda c: (f := family_of_class(c)) is not None and f.weight_in_buffers)
        out = torch.zeros(index.size, dtype=torch.float64)
        for i in has.nonzero().flatten().tolist():
            out[i] = float(buffer_weight_numel(index.modules[i]))
        return out

    return index.memo("buffer_weight_numels", compute)


def buffer_weight_subtree(index) -> torch.Tensor:
    """Per position, the buffer-held logical weight elements of its whole subtree (float64)."""
    def compute() -> torch.Tensor:
        own = buffer_weight_numels(index)
        prefix = torch.cat([torch.zeros(1, dtype=torch.float64), own.cumsum(0)])
        return prefix[index.ends_tensor()] - prefix[: index.size]

    return index.memo("buffer_weight_subtree", compute)


def meta_parameter(p: torch.Tensor, requires_grad: bool) -> nn.Parameter:
    """An empty meta-device parameter like `p`, of its class and with its attributes when `p` is a
    parameter subclass (bitsandbytes' `Params4bit` carries `quant_type`, `compress_statistics`, …
    that PEFT's dispatch reads). The attributes are shared, never copied: nothing is mutated on them."""
    empty = torch.empty(global_shape(p), dtype=p.dtype, device="meta")  # a shard's full shape
    cls = type(p)
    if cls is nn.Parameter or not isinstance(p, nn.Parameter) or is_dtensor(p):
        return nn.Parameter(empty, requires_grad=requires_grad)
    try:
        new = torch.Tensor._make_subclass(cls, empty, requires_grad)
        new.__dict__.update({k: v for k, v in p.__dict__.items() if k != "module"})
        if "module" in p.__dict__:
            new.__dict__["module"] = None
        return new
    except Exception:  # noqa: BLE001 - a subclass that cannot be re-made: the plain parameter PEFT's default path sees
        return nn.Parameter(empty, requires_grad=requires_grad)
