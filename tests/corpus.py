"""The architecture corpus (issue 4): 50 real transformers models from their default config
classes, shrunk to two layers, on the meta device — and the queries run against each.

Shared by tests/test_corpus.py and benchmarks/corpus_table.py (which prints the README summary).
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import nn

# (model_type, family) — decoder LLMs, vision-language, MoE (fused experts in transformers 5),
# encoder-decoder, speech, encoders.
ARCHS = [
    *[(t, "decoder") for t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi", "phi3",
                               "gpt2", "gpt_neox", "gptj", "falcon", "opt", "bloom", "olmo", "olmo2", "cohere",
                               "starcoder2", "stablelm", "granite", "jamba", "mamba")],
    *[(t, "vision-language") for t in ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "idefics3", "paligemma",
                                       "gemma3", "mllama", "smolvlm")],
    *[(t, "moe") for t in ("mixtral", "qwen2_moe", "qwen3_moe", "deepseek_v3", "olmoe", "granitemoe")],
    *[(t, "encoder-decoder") for t in ("t5", "bart", "mbart", "marian", "pegasus")],
    *[(t, "speech") for t in ("whisper", "wav2vec2", "hubert")],
    *[(t, "encoder") for t in ("bert", "roberta", "vit", "clip", "siglip")],
]

QUERIES = [
    "linear",
    "linear & layers:0",
    "linear & leaf & layers:-1..",
    "linear & name:/attn|attention/",
    "linear - component:vision - component:audio",
    "linear & glob:**.{q,k,v}_proj",
    "name:/embed|norm/ & leaf",
    "leaf & !linear & layers:0",
    "outermost & layers:1",
]
FROZEN_QUERY = "linear & trainable"  # run after freezing the vision/audio tower (or layer 0 where there is none)

_LAYER_KEYS = ("num_hidden_layers", "num_layers", "n_layer", "n_layers", "depth", "encoder_layers", "decoder_layers",
               "num_decoder_layers")


def _shrink(config, seen=None) -> None:
    import transformers

    seen = seen if seen is not None else set()
    if id(config) in seen:
        return
    seen.add(id(config))
    for key in _LAYER_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 2:
            try:
                setattr(config, key, 2)
            except Exception:  # some configs derive these fields
                pass
    for value in list(vars(config).values()):
        if isinstance(value, transformers.PretrainedConfig):
            _shrink(value, seen)


def build(model_type: str) -> nn.Module:
    """A fresh model of `model_type` on the meta device, as the task class users fine-tune."""
    import transformers

    config = transformers.AutoConfig.for_model(model_type)
    _shrink(config)
    autos = ["AutoModelForCausalLM", "AutoModelForCTC", "AutoModel"]
    if getattr(config, "vision_config", None) is not None:
        autos.insert(0, "AutoModelForImageTextToText")
    if getattr(config, "is_encoder_decoder", False):
        autos[:0] = ["AutoModelForSeq2SeqLM", "AutoModelForSpeechSeq2Seq"]
    last = None
    for auto in autos:
        try:
            with warnings.catch_warnings(), torch.device("meta"):
                warnings.simplefilter("ignore")
                return getattr(transformers, auto).from_config(config)
        except Exception as exc:  # the next auto class may know this config
            last = exc
    raise RuntimeError(f"cannot build {model_type}: {last}")


@functools.lru_cache(maxsize=None)
def cached(model_type: str) -> nn.Module:
    return build(model_type)


def freeze_a_tower(model: nn.Module) -> str:
    """Freeze the vision or audio tower (or layer 0 of the first block stack); returns what was frozen."""
    from targetsel import select

    for component in ("vision", "audio"):
        sel = select(model).component(component)
        if not sel.is_empty():
            for module in sel.modules().values():
                module.requires_grad_(False)
            return component
    first = select(model, "layers:0 & outermost").modules()
    for module in first.values():
        module.requires_grad_(False)
    return "layer 0"
