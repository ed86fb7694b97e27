"""The architecture corpus: real transformers models from their default config classes,
shrunk to two layers, on the meta device — and the queries run against each.

Shared by tests/test_corpus.py (judged by a real `get_peft_model`, tests/oracle.py) and
tests/corpus_table.py (which prints the README summary).
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import nn

# (model_type, family). MoE models are listed by the transformers-5 conversion PEFT applies to
# them (peft/utils/transformers_weight_conversion.py: `_MODEL_TO_CONVERSION_PATTERN`), since that
# conversion rewrites target_modules before matching; `conversion()` reads it from the installed PEFT.
ARCHS = [
    *[(t, "decoder") for t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi", "phi3",
                               "gpt2", "gpt_neox", "gptj", "falcon", "opt", "bloom", "olmo", "olmo2", "cohere",
                               "starcoder2", "stablelm", "granite")],
    # Mamba and Mamba hybrids: PEFT refuses some of their Linears by name (out_proj, conv1d).
    *[(t, "mamba") for t in ("mamba", "mamba2", "falcon_mamba", "falcon_h1", "nemotron_h", "jamba", "bamba")],
    *[(t, "vision-language") for t in ("llava", "llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl", "qwen3_vl",
                                       "idefics2", "idefics3", "paligemma", "gemma3", "mllama", "smolvlm", "glm4v",
                                       "internvl", "mistral3")],
    *[(t, "audio-language") for t in ("qwen2_5_omni_thinker", "qwen2_audio", "voxtral")],
    # no conversion in PEFT
    *[(t, "moe") for t in ("qwen2_moe", "granitemoe")],
    # PEFT's "mixtral" conversion (w1/w3/w2 → gate_up_proj/down_proj)
    *[(t, "moe") for t in ("mixtral", "minimax", "minimax_m2")],
    # PEFT's "qwen2_moe" conversion (gate_proj/up_proj/down_proj → gate_up_proj/down_proj)
    *[(t, "moe") for t in ("qwen3_moe", "olmoe", "deepseek_v2", "deepseek_v3", "deepseek_v32", "dots1",
                           "ernie4_5_moe", "glm4_moe", "glm4_moe_lite", "glm_moe_dsa", "glm4v_moe", "longcat_flash",
                           "solar_open", "mellum", "beam", "qwen3_next", "qwen3_omni_moe_thinker", "hunyuan_v1_moe",
                           "flex_olmo", "exaone_moe", "cohere2_moe", "afmoe")],
    *[(t, "encoder-decoder") for t in ("t5", "bart", "mbart", "marian", "pegasus")],
    *[(t, "speech") for t in ("whisper", "wav2vec2", "hubert")],
    *[(t, "encoder") for t in ("bert", "roberta", "vit", "clip", "siglip")],
]

# Default configs that do not build as shipped (a required size left as None): the smallest fix.
_CONFIG_FIXES = {
    "hunyuan_v1_moe": dict(head_dim=128),
    "dots1": dict(n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1),
}
# Model types no auto class builds: the task class to use.
_CLASSES = {
    "qwen2_5_omni_thinker": "Qwen2_5OmniThinkerForConditionalGeneration",
    "qwen3_omni_moe_thinker": "Qwen3OmniMoeThinkerForConditionalGeneration",
}

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


def config_for(model_type: str, **overrides):
    import transformers

    config = transformers.AutoConfig.for_model(model_type, **{**_CONFIG_FIXES.get(model_type, {}), **overrides})
    _shrink(config)
    return config


def build(model_type: str, *, device: str = "meta", config=None) -> nn.Module:
    """A fresh model of `model_type` (on the meta device unless told), as the task class users fine-tune."""
    import transformers

    config = config if config is not None else config_for(model_type)
    autos = ["AutoModelForCausalLM", "AutoModelForCTC", "AutoModel"]
    if getattr(config, "vision_config", None) is not None:
        autos.insert(0, "AutoModelForImageTextToText")
    if getattr(config, "is_encoder_decoder", False):
        autos[:0] = ["AutoModelForSeq2SeqLM", "AutoModelForSpeechSeq2Seq"]
    last = None
    with warnings.catch_warnings(), torch.device(device):
        warnings.simplefilter("ignore")
        if model_type in _CLASSES:
            return getattr(transformers, _CLASSES[model_type])._from_config(config)
        for auto in autos:
            try:
                return getattr(transformers, auto).from_config(config)
            except Exception as exc:  # the next auto class may know this config
                last = exc
    raise RuntimeError(f"cannot build {model_type}: {last}")


@functools.lru_cache(maxsize=None)
def cached(model_type: str) -> nn.Module:
    return build(model_type)


def freeze_a_tower(model: nn.Module) -> str:
    """Freeze the vision or audio tower, or else the first block of the first block stack (the first
    ModuleList with two or more entries); returns what was frozen."""
    from targetsel import select

    for component in ("vision", "audio"):
        sel = select(model).component(component)
        if not sel.is_empty():
            for module in sel.modules().values():
                module.requires_grad_(False)
            return component
    name, stack = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) >= 2)
    stack[0].requires_grad_(False)
    return f"{name}.0"


def frozen_model(model_type: str) -> tuple[nn.Module, str]:
    """A fresh model with its vision/audio tower (or layer 0) frozen, and what was frozen."""
    model = build(model_type)
    return model, freeze_a_tower(model)


def maker(model_type: str, frozen: bool = False):
    """A zero-argument builder of fresh models, as the oracle wants (it never reuses a model)."""
    if frozen:
        return lambda: frozen_model(model_type)[0]
    return functools.partial(build, model_type)


def conversion(model_type: str):
    """The transformers-5 MoE conversion the installed PEFT applies to LoRA configs for this model
    type ("mixtral", "qwen2_moe"), or None."""
    try:
        from peft.utils.transformers_weight_conversion import _MODEL_TO_CONVERSION_PATTERN, _MOE_TARGET_MODULE_MAPPING
    except ImportError:  # older peft, or transformers < 5
        return None
    pattern = _MODEL_TO_CONVERSION_PATTERN.get(model_type)
    return pattern if pattern in _MOE_TARGET_MODULE_MAPPING else None


# ---------------------------------------------------------------- tiny CPU models (save + reload)
# Real weights are needed to save and reload an adapter; default sizes are far too big for that.
_TINY = dict(
    hidden_size=32, intermediate_size=64, moe_intermediate_size=32, shared_expert_intermediate_size=32,
    num_attention_heads=4, num_key_value_heads=2, head_dim=8, vocab_size=128, max_position_embeddings=64,
    num_local_experts=4, num_experts=4, n_routed_experts=4, num_experts_per_tok=2,
    n_embd=32, n_head=4, n_inner=64, n_positions=64,                       # gpt2
    d_model=32, d_ff=64, d_kv=8, num_heads=4,                              # t5
)
ROUNDTRIP_ARCHS = ("llama", "gpt2", "t5", "mixtral", "qwen3_moe")


def build_tiny(model_type: str) -> nn.Module:
    """A fresh, tiny `model_type` on the CPU with real (seeded by the caller) weights."""
    import transformers

    defaults = transformers.AutoConfig.for_model(model_type)
    overrides = {k: v for k, v in _TINY.items() if hasattr(defaults, k)}
    return build(model_type, device="cpu", config=config_for(model_type, **overrides))
