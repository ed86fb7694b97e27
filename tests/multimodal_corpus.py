"""Every vision-language, audio-language and omni architecture of the installed transformers,
discovered from its auto mappings (not a hand-picked list) and built from its default config class,
shrunk to two layers (tests/corpus.py), on the meta device.

Shared by tests/test_components_all.py and benchmarks/components_table.py.
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import nn

import corpus

# The auto mappings whose models take images, audio or both next to text: image-text-to-text
# (every VLM and the omni thinkers), multimodal LM (the audio-LMs and full omni models) and
# speech-to-text (Whisper-style encoder-decoders and speech LLMs).
MAPPINGS = ("MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES", "MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES",
            "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES")

# Default configs that do not build as shipped (a size or table left as None, a head count that
# does not divide the width): the smallest fix, as dotted attribute paths set after the config is
# made. Each was found by building the default config and reading the error.
CONFIG_FIXES = {
    "aya_vision": {"vision_config.num_attention_heads": 16},  # 1152 is not divisible by 14
    "chameleon": {"vocabulary_map": {"<image>": 8711}},
    "emu3": {"vocabulary_map": {"<image>": 8711, "<|extra_200|>": 8712}},
    "cohere_compass": {"text_config.rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e4}}},
    "deepseek_ocr2": {"text_config.mlp_layer_types": ["dense", "sparse"]},
    "diffusion_gemma": {"text_config.num_experts": 4, "text_config.top_k_experts": 2,
                        "text_config.moe_intermediate_size": 64},
    "granite4_vision": {"deepstack_layer_map": [[0, 0]], "downsample_rate": "1/4"},
    "hunyuan_vl": {"text_config.head_dim": 128},
    "moonshine_streaming": {"num_key_value_heads": 8},
    # widths a tower hands the language model, under a field of another name (see LM_WIDTH_FIELDS)
    "qwen2_vl": {"vision_config.hidden_size": 8192},  # Qwen2-VL's merger writes `hidden_size`
    "ovis2": {"hidden_size": 4096},  # Ovis2 sizes its visual embedding table from the top-level width
    "qwen3_omni_moe": {"talker_config.text_config.shared_expert_intermediate_size": 768,
                       "talker_config.spatial_merge_size": 2},
}

# Values for optional sub-configs beyond their defaults (Nemotron-H-Omni's audio projector sizes).
SUB_CONFIG_OVERRIDES = {
    "nemotron_h_omni": {"audio_config": {"projection_hidden_size": 4096, "projection_bias": False}},
}

# Architectures that cannot be built here, and why. test_components_all checks that each still
# fails (so one that starts to build joins the tested set) and that nothing else does.
_TIMM = "the vision tower is a timm model (TimmWrapperModel needs timm and Pillow, not installed)"
UNBUILDABLE = {"fast_vlm": _TIMM, "gemma3n": _TIMM, "perception_lm": _TIMM}


@functools.lru_cache(maxsize=None)
def universe() -> dict[str, str]:
    """model_type → the class its first mapping names, sorted by model type."""
    import transformers.models.auto.modeling_auto as auto

    found: dict[str, str] = {}
    for mapping in MAPPINGS:
        for model_type, class_name in getattr(auto, mapping).items():
            found.setdefault(model_type, class_name)
    return dict(sorted(found.items()))


# Many default configs pair a tower of one checkpoint with a text model of another (Qwen2-VL: a
# 3584-wide merger in front of an 8192-wide LM), which no checkpoint does and no forward pass
# survives. In every config holding a text_config, these fields of its vision/audio/adapter
# sub-configs — the width they hand the language model — are set to the text model's width, as
# in every real checkpoint. (Not `encoder_config`: Granite-Speech's `output_dim` is its CTC vocabulary.)
LM_WIDTH_FIELDS = ("out_hidden_size", "output_dim", "projection_dim", "text_hidden_size", "image_token_embed_dim")
LM_WIDTH_SUB_CONFIGS = ("vision_config", "audio_config", "adapter_config", "vq_config")


def _optional_sub_configs(model_type: str) -> dict:
    """Sub-configs the config class marks optional and leaves out by default (Gemma4's vision and
    audio): asked for with their defaults, so the towers and their embedders are built."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    specs = getattr(CONFIG_MAPPING[model_type], "sub_configs_defaults", None) or {}
    return {name: {} for name, spec in specs.items() if getattr(spec, "optional", False)}


def _match_lm_width(config, seen=None) -> None:
    seen = seen if seen is not None else set()
    if id(config) in seen:
        return
    seen.add(id(config))
    text = getattr(config, "text_config", None)
    width = next((w for w in (getattr(text, "hidden_size", None), getattr(text, "d_model", None)) if isinstance(w, int)), None)
    for name, value in list(vars(config).items()):
        if not (hasattr(value, "to_dict") and hasattr(value, "model_type")):
            continue
        if width is not None and name in LM_WIDTH_SUB_CONFIGS:
            for key in LM_WIDTH_FIELDS:
                if isinstance(getattr(value, key, None), int):
                    setattr(value, key, width)
        _match_lm_width(value, seen)


def config_for(model_type: str):
    overrides = {**_optional_sub_configs(model_type), **SUB_CONFIG_OVERRIDES.get(model_type, {})}
    config = corpus.config_for(model_type, **overrides)
    for path, value in CONFIG_FIXES.get(model_type, {}).items():
        *parents, leaf = path.split(".")
        setattr(functools.reduce(getattr, parents, config), leaf, value)
    _match_lm_width(config)
    return config


def build(model_type: str) -> nn.Module:
    """A fresh `model_type` on the meta device, as the class its mapping names."""
    import transformers

    config = config_for(model_type)
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        return getattr(transformers, universe()[model_type])._from_config(config)


@functools.lru_cache(maxsize=None)
def cached(model_type: str):
    """(model, None) or (None, the error as text): built once per process."""
    try:
        return build(model_type), None
    except Exception as exc:  # an architecture that does not build here is reported, not fatal
        return None, f"{type(exc).__name__}: {exc}"


def buildable() -> list[str]:
    """The model types of `universe()` that are not known to be unbuildable here."""
    return [t for t in universe() if t not in UNBUILDABLE]
