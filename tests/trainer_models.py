"""Small models for the trainer exports and the Trainer callback: each one a trap some trainer falls into.

Everything is built from config classes on the meta device (no weights), except `tiny_llama_cpu`,
which has real weights for the Trainer runs.
"""

from __future__ import annotations

import types

import torch
import transformers
from torch import nn

import models


def llava(freeze_vision: bool = True) -> nn.Module:
    """A tiny LLaVA (CLIP tower + Llama): LLaMA-Factory's composite model, its tower frozen as trained."""
    config = transformers.LlavaConfig(
        vision_config=transformers.CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                                    num_attention_heads=2, image_size=28, patch_size=14),
        text_config=transformers.LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                             num_attention_heads=2, num_key_value_heads=1, vocab_size=64),
    )
    with torch.device("meta"):
        model = transformers.LlavaForConditionalGeneration(config)
    if freeze_vision:
        model.model.vision_tower.requires_grad_(False)
    return model


def llava_substring_trap() -> nn.Module:
    """LLaVA plus `…mlp.down_proj2` beside `…mlp.down_proj`: a name that is a substring of another's."""
    model = llava()
    with torch.device("meta"):
        model.model.language_model.layers[0].mlp.add_module("down_proj2", nn.Linear(32, 16, bias=False))
    return model


def qwen2_vl() -> nn.Module:
    """A tiny Qwen2-VL: LLaMA-Factory never adapts its `patch_embed` (a lora_conflict_key)."""
    config = transformers.Qwen2VLConfig(
        vision_config={"depth": 1, "embed_dim": 16, "hidden_size": 16, "num_heads": 2, "mlp_ratio": 2, "in_chans": 3,
                       "patch_size": 14, "temporal_patch_size": 2, "spatial_merge_size": 2},
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "num_key_value_heads": 1, "vocab_size": 64, "bos_token_id": 0, "eos_token_id": 1,
                     "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]}},
    )
    with torch.device("meta"):
        return transformers.Qwen2VLForConditionalGeneration(config)


def qwen3_moe() -> nn.Module:
    """A tiny Qwen3-MoE: fused expert parameters (`mlp.experts.gate_up_proj`) and PEFT's MoE conversion."""
    config = transformers.Qwen3MoeConfig(
        num_hidden_layers=2, hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_attention_heads=4,
        num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, vocab_size=64, head_dim=8,
    )
    with torch.device("meta"):
        return transformers.AutoModelForCausalLM.from_config(config)


def per_expert_moe() -> nn.Module:
    """An MoE whose experts are ModuleLists of Linears (gpt-oss bnb-4bit style), with a shared expert's
    `down_proj` beside them: unsloth adds `down_projs.<i>` for a bare `down_proj` target."""
    with torch.device("meta"):
        model = nn.Module()
        model.layers = nn.ModuleList()
        for _ in range(2):
            layer = nn.Module()
            layer.self_attn = nn.Module()
            layer.self_attn.q_proj = nn.Linear(8, 8)
            layer.mlp = nn.Module()
            layer.mlp.experts = nn.Module()
            layer.mlp.experts.gate_up_projs = nn.ModuleList(nn.Linear(8, 16) for _ in range(2))
            layer.mlp.experts.down_projs = nn.ModuleList(nn.Linear(16, 8) for _ in range(2))
            layer.mlp.shared = nn.Module()
            layer.mlp.shared.down_proj = nn.Linear(16, 8)
            model.layers.append(layer)
    model.config = types.SimpleNamespace(num_experts=2)  # what unsloth's is_moe_model reads
    return model


def embed_tokens_model() -> nn.Module:
    """A Llama whose selection holds `embed_tokens`: unsloth moves a bare `embed_tokens` to modules_to_save."""
    config = transformers.LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                      num_key_value_heads=1, vocab_size=64)
    with torch.device("meta"):
        return transformers.LlamaForCausalLM(config)


def attention_with_mha() -> nn.Module:
    """`nn.MultiheadAttention`, whose `out_proj` is a NonDynamicallyQuantizableLinear (ms-swift skips those)."""
    with torch.device("meta"):
        model = nn.Module()
        model.attn = nn.MultiheadAttention(8, 2)
        model.fc = nn.Linear(8, 8)
    return model


BUILDERS = {
    "demo": models.demo,
    "llava": llava,
    "llava_substring_trap": llava_substring_trap,
    "qwen2_vl": qwen2_vl,
    "qwen3_moe": qwen3_moe,
    "per_expert_moe": per_expert_moe,
    "suffix_trap": models.suffix_trap,
    "embed_tokens": embed_tokens_model,
    "mha": attention_with_mha,
}


def tiny_llama_cpu(seed: int = 0) -> nn.Module:
    """A Llama with real (random) weights on CPU, small enough for a two-step Trainer run."""
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, vocab_size=96, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(config)
