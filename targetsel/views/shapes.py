"""What one module measures: its shape as shown, and the parameters LoRA adds to it per unit of rank.

Shared by the display (rows, totals) and the reasons (`a Linear(256→1024)`); quantized, sharded
(DTensor / ZeRO-3) and fused layers report their logical sizes, not their local storage.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from targetsel.model.quantized import family_of_class, lora_in_out
from targetsel.model.resolution import Resolution
from targetsel.model.wrappers import global_shape


def _embedding(m) -> tuple[str, int]:
    return f"{m.num_embeddings}×{m.embedding_dim}", m.num_embeddings + m.embedding_dim


def _conv(m) -> tuple[str, int]:
    # PEFT: lora_A = Conv(in, r, kernel) without groups, lora_B = Conv(r, out, 1, groups=groups).
    kernel = 1
    for k in m.kernel_size:
        kernel *= k
    shape = f"{m.in_channels}→{m.out_channels}, {'×'.join(str(k) for k in m.kernel_size)}"
    return shape, m.in_channels * kernel + m.out_channels // m.groups


def _multihead(m) -> tuple[str, int]:
    # PEFT wraps in_proj (E → 3E) and out_proj (E → E): r·4E + r·2E.
    return f"{m.embed_dim}, {m.num_heads} heads", 6 * m.embed_dim


def _transformers_conv1d(m) -> tuple[str, int]:
    nx, nf = global_shape(m.weight)  # GPT-2's Conv1D stores weight as (in, out); PEFT reads it so (ZeRO-3: ds_shape)
    return f"{nx}→{nf}", nx + nf


def _generic(m) -> tuple[str, int]:
    in_f, out_f = getattr(m, "in_features", None), getattr(m, "out_features", None)
    if isinstance(in_f, int) and isinstance(out_f, int):  # nn.Linear and its subclasses, quantized linears
        return f"{in_f}→{out_f}", in_f + out_f
    normalized = getattr(m, "normalized_shape", None)
    if isinstance(normalized, tuple):
        return "×".join(str(d) for d in normalized), 0
    return "", 0


def _quantized(m) -> tuple[str, int]:
    # GPTQ, AWQ, HQQ, EETQ, AQLM, Transformer Engine: the sizes PEFT's LoRA layer is built from
    sizes = lora_in_out(m)
    if sizes is None:
        return "", 0
    return f"{sizes[0]}→{sizes[1]}", sizes[0] + sizes[1]


def _measure_for(cls: type) -> Callable[[nn.Module], tuple[str, int]]:
    family = family_of_class(cls)
    if family is not None and not issubclass(cls, nn.Linear):
        return _quantized if family.wraps() else _no_lora(_quantized)
    if issubclass(cls, nn.Embedding):
        return _embedding
    if issubclass(cls, nn.modules.conv._ConvNd):
        return _conv
    if issubclass(cls, nn.MultiheadAttention):
        return _multihead
    if cls.__name__ == "Conv1D" and not issubclass(cls, nn.Linear):
        return _transformers_conv1d
    return _generic


def _no_lora(measure: Callable[[nn.Module], tuple[str, int]]) -> Callable[[nn.Module], tuple[str, int]]:
    """The shape of a layer the installed PEFT has no LoRA layer for, and 0 LoRA parameters."""
    return lambda m: (measure(m)[0], 0)


def _measure(module: nn.Module) -> tuple[str, int]:
    try:
        return _measure_for(type(module))(module)
    except (AttributeError, TypeError, ValueError):  # a look-alike class without the expected attributes
        return "", 0


def shape_of(module: nn.Module) -> str:
    """'4096→4096' (Linear, Conv1D), '32000×4096' (Embedding), '3→64, 14×14' (Conv2d), '4096' (LayerNorm)."""
    return _measure(module)[0]


def lora_layer_params(module: nn.Module, r: int) -> int:
    """Parameters plain LoRA at rank r adds to one layer (no bias, no DoRA), as PEFT builds them.

    Linear-like layers (integer in_features/out_features: nn.Linear, its subclasses, quantized
    linears) and transformers' Conv1D (weight shape (in, out)): r·(in + out). Embedding:
    r·(num_embeddings + embedding_dim). ConvNd: r·in·k + r·out/groups (k = kernel elements).
    MultiheadAttention: r·6·embed_dim (in_proj and out_proj). Anything else — containers, norms,
    activations — gets no LoRA weights from PEFT (its dispatch refuses them): 0.
    """
    return r * _measure(module)[1]


def _check_rank(r) -> None:
    from targetsel.errors import TargetselError

    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise TargetselError(f"lora_params(r): r is a positive integer rank, got {r!r}")


def lora_params(res: Resolution, r: int) -> int:
    """The parameters LoRA at rank `r` adds to the selected modules (see `lora_layer_params`)."""
    _check_rank(r)
    modules = res.index.modules
    return r * sum(_measure(modules[i])[1] for i in res.positions)


# --------------------------------------------------------------------- the summary
