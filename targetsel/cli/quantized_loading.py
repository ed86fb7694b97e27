"""The model a quantized checkpoint really loads as — its quantized layer classes — built without weights.

A checkpoint whose `config.json` carries a `quantization_config` (bitsandbytes, GPTQ, AWQ, FP8,
compressed-tensors, torchao, …) does not load as the float model its config class builds:
`from_pretrained` asks transformers' quantizer for the method (`AutoHfQuantizer`) to replace
layers before any weight is read (`HfQuantizer.preprocess_model`, e.g. `replace_with_bnb_linear`),
leaving in full precision what the config's skip list (`llm_int8_skip_modules`,
`modules_to_not_convert`) and the model (`_keep_in_fp32_modules`, the output head) keep. That
step only builds modules, so it runs here on the meta device, by transformers' own code: the
selection, the checks and `lora_params` then see `Linear4bit` where training will see it.

Where the quantizer cannot build its layers here — its package (gptqmodel, compressed-tensors,
torchao, …) is not installed, or transformers does not know the method — the float model is
shown and a note says so and why. `--no-quantize` (`load_model(..., quantize=False)`) builds the
float model without asking.
"""

from __future__ import annotations

import inspect
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from targetsel.errors import ModelLoadError


@dataclass(frozen=True)
class QuantizedBuild:
    """What `quantize_as_loaded` did to a model built from a config."""

    method: Optional[str] = None  # the config's quant_method (None: no quantization_config)
    quantized: bool = False  # the quantized classes were installed
    classes: dict[str, int] = field(default_factory=dict)  # quantized class name → modules
    full_precision: tuple[str, ...] = ()  # linear layers loading leaves in full precision
    note: str = ""  # one line for the user ('' when there is nothing to say)


def quantization_config_of(model) -> Any:
    """The `quantization_config` of a transformers model's config (or of its text config), or None."""
    config = getattr(model, "config", None)
    qc = getattr(config, "quantization_config", None)
    if qc is None and config is not None and hasattr(config, "get_text_config"):
        try:
            qc = getattr(config.get_text_config(decoder=True), "quantization_config", None)
        except Exception:  # noqa: BLE001 - an odd config simply has no text config
            qc = None
    return qc or None


def _method_of(qc: Any) -> str:
    get = qc.get if isinstance(qc, dict) else (lambda k, d=None: getattr(qc, k, d))
    method = get("quant_method") or "unknown"
    method = str(getattr(method, "value", method))
    if method == "bitsandbytes" or get("load_in_4bit") or get("load_in_8bit"):
        return "bitsandbytes 4-bit" if get("load_in_4bit") else "bitsandbytes 8-bit" if get("load_in_8bit") else "bitsandbytes"
    return method


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def quantize_as_loaded(model, source: str = "config.json") -> QuantizedBuild:
    """Install, in place on the meta-device `model`, the quantized layers loading its checkpoint would.

    Returns what was done. A missing quantizer package or a method transformers does not know leaves
    the model as it was (the build's `note` says why); a quantizer that fails half-way raises
    `ModelLoadError` (the model is then discarded, never shown half-converted).
    """
    qc = quantization_config_of(model)
    if qc is None:
        return QuantizedBuild()
    method = _method_of(qc)
    try:
        from transformers.quantizers.auto import AutoHfQuantizer

        with _quiet_transformers():
            quantizer = AutoHfQuantizer.from_config(qc, pre_quantized=True)
    except Exception as exc:  # noqa: BLE001 - a missing package, an unknown method: said in one line
        return QuantizedBuild(method, note=_float_note(source, method, exc))
    try:
        with _quiet_transformers():
            refused_here = _validate(quantizer)
    except ImportError as exc:  # the method's package is missing: its layers cannot be built
        return QuantizedBuild(method, note=_float_note(source, method, exc))
    except Exception as exc:  # noqa: BLE001 - a device check (no GPU): the layers still build on meta
        refused_here = f"refuses to load it on this machine ({_first_line(exc)})"
    before = [(name, type(m)) for name, m in model.named_modules()]
    try:
        with _quiet_transformers():
            _preprocess(quantizer, model)
    except ImportError as exc:  # a package its layers need (transformers 4.57's FP8 layers import triton)
        if [(name, type(m)) for name, m in model.named_modules()] == before:  # nothing replaced yet
            return QuantizedBuild(method, note=_float_note(source, method, exc))
        raise ModelLoadError(
            f"cannot build {source} as its {method} checkpoint loads: transformers' quantizer failed half-way "
            f"({type(exc).__name__}: {_first_line(exc)}); pass --no-quantize to see the float model"
        ) from None
    except Exception as exc:  # noqa: BLE001 - the quantizer's own code, reported in one line
        raise ModelLoadError(
            f"cannot build {source} as its {method} checkpoint loads: transformers' quantizer failed "
            f"({type(exc).__name__}: {_first_line(exc)}); pass --no-quantize to see the float model"
        ) from None
    build = _describe(model, method, source)
    if refused_here and build.quantized:
        build = replace(build, note=build.note + f" (transformers {refused_here}; a GPU load has the {method} "
                                                 "layers shown)")
    return build


# What loading installs where targetsel cannot build it, by quant_method (transformers' quantizers).
_LAYERS = {
    "gptq": "gptqmodel's QuantLinear layers (PEFT: GPTQLoraLinear)",
    "awq": "gptqmodel's AWQ QuantLinear layers (PEFT: AwqLoraLinear)",
    "compressed-tensors": "compressed-tensors' CompressedLinear or nn.Linear with packed weights",
    "torchao": "nn.Linear layers with torchao-quantized weights (PEFT: TorchaoLoraLinear)",
    "hqq": "HQQLinear layers (PEFT: HqqLoraLinear)",
    "eetq": "EetqLinear layers (PEFT: EetqLoraLinear)",
    "aqlm": "AQLM QuantizedLinear layers (PEFT: AqlmLoraLinear)",
}


def _float_note(source: str, method: str, exc: BaseException) -> str:
    why = _first_line(exc)
    if isinstance(exc, ImportError) or "pip install" in why:
        cause = f"building its layers needs a package that is not installed here ({why})"
    else:
        cause = f"transformers cannot set that method up here ({why})"
    layers = _LAYERS.get(method, f"{method}'s quantized layers")
    return (f"{source} is quantized with {method}, but {cause}: showing the float model, nn.Linear where the "
            f"checkpoint loads {layers}. Module names are the same, so queries and target_modules carry over; "
            "classes, grad state and sizes are the float model's. --no-quantize shows it without this note")


@contextmanager
def _quiet_transformers():
    """transformers logs what it would do while loading (FP8 without a GPU, …); the note says what matters."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def _validate(quantizer) -> str:
    """transformers' check that the method's packages are there, without its device decisions: a
    pre-quantized FP8 checkpoint on a machine without a GPU is dequantized when *loaded* here
    (transformers 5; 4.x refuses it), but the model people train (on a GPU) has the FP8 layers, so
    those are what targetsel shows. Returns what transformers would have done instead here, or ''."""
    config = quantizer.quantization_config
    had = getattr(config, "dequantize", None)
    try:
        quantizer.validate_environment(device_map={"": "cpu"}, weights_only=True)
    finally:
        if had is not None:
            now, config.dequantize = getattr(config, "dequantize", None), had
    return "would dequantize the weights on this machine, which has no GPU" if (
        had is not None and bool(now) and not bool(had)) else ""


def _preprocess(quantizer, model) -> None:
    import torch

    offered = {"model": model, "dtype": getattr(model, "dtype", None) or torch.bfloat16, "device_map": {"": "cpu"},
               "checkpoint_files": None, "use_kernels": False, "keep_in_fp32_modules": None}
    params = inspect.signature(quantizer.preprocess_model).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in offered.items() if k == "model" or takes_any or k in params}
    with torch.device("meta"):
        quantizer.preprocess_model(**kwargs)
    # What transformers sets once the weights are in (`_process_model_after_weight_loading`,
    # `postprocess_model`), and PEFT's dispatch reads: the loading flags and the parsed config.
    method = quantizer.quantization_config
    if getattr(method, "load_in_4bit", False):
        model.is_loaded_in_4bit = True
    if getattr(method, "load_in_8bit", False):
        model.is_loaded_in_8bit = True
    model.hf_quantizer = quantizer
    model.config.quantization_config = method
    # Loading gives every float parameter it reads requires_grad=True (the quantizer's new layers start
    # frozen): a float bias of a Linear4bit trains unless the user freezes it.
    from targetsel.model.quantized import trainable_storage

    for p in model.parameters():
        if not p.requires_grad and trainable_storage(p):
            p.requires_grad_(True)


def _describe(model, method: str, source: str) -> QuantizedBuild:
    from targetsel.model.classes import is_linear_class
    from targetsel.model.quantized import family_of
    from targetsel.text.grouping import summarize_names

    classes: Counter = Counter()
    full: list[str] = []
    for name, module in model.named_modules():
        if family_of(module) is not None:
            classes[type(module).__name__] += 1
        elif name and is_linear_class(type(module)):
            full.append(name)
    installed = ", ".join(f"{n} {c}" for c, n in classes.most_common())
    if not classes:
        return QuantizedBuild(method, note=f"{source} is quantized with {method}, but its quantizer replaced no layer: "
                                           "showing the float model")
    kept = f"; left in full precision: {summarize_names(full, limit=4)}" if full else ""
    return QuantizedBuild(
        method, True, dict(classes.most_common()), tuple(full),
        note=f"{source} is quantized with {method}: built as that checkpoint loads ({installed}{kept}); "
             "--no-quantize shows the float model",
    )


def apply(model, source: str, quantize: bool = True):
    """`load_model`'s hook: the model as its checkpoint loads (a note on stderr says what changed), or
    the float model with `quantize=False`."""
    if not quantize:
        return model
    build = quantize_as_loaded(model, source)
    if build.note:
        from targetsel.cli.terminal import note

        note(build.note)
    return model
