"""The embedded demo model: a small vision-language model that shows both incidents.

- `vision_tower` is frozen and its attention uses the same leaf names (`q_proj`, `k_proj`, …)
  as the language model, so name-only targeting adapts it too (peft issue #2250).
- The language model's attention projections are `PLoRA` layers as in InternLM-XComposer2: an
  `nn.Linear` subclass with its own low-rank children (`Plora_A`, `Plora_B`) and a
  `forward(x, im_mask)`.
- `lm_head` shares its weight with `embed_tokens` (tied embeddings).

Built on the meta device by default: no memory for weights, no download.
"""

from __future__ import annotations

import torch
from torch import nn


class PLoRA(nn.Linear):
    """InternLM-XComposer2's partial LoRA: a Linear whose low-rank branch applies to image tokens only."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, lora_r: int = 8, **kwargs):
        super().__init__(in_features, out_features, bias=bias, **kwargs)
        self.Plora_A = nn.Linear(in_features, lora_r, bias=False, **kwargs)
        self.Plora_B = nn.Linear(lora_r, out_features, bias=False, **kwargs)

    def forward(self, x, im_mask=None):  # noqa: D401 - mirrors the original signature
        out = super().forward(x)
        if im_mask is not None and bool(im_mask.any()):
            out = out + self.Plora_B(self.Plora_A(x)) * im_mask.unsqueeze(-1)
        return out


class VisionAttention(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)


class VisionLayer(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(d)
        self.self_attn = VisionAttention(d)
        self.layer_norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential()
        self.mlp.add_module("fc1", nn.Linear(d, 4 * d))
        self.mlp.add_module("fc2", nn.Linear(4 * d, d))


class VisionTower(nn.Module):
    def __init__(self, d: int, n_layers: int):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, d, kernel_size=14, stride=14)
        self.layers = nn.ModuleList(VisionLayer(d) for _ in range(n_layers))
        self.post_layernorm = nn.LayerNorm(d)


class Projector(nn.Module):
    def __init__(self, d_vision: int, d_text: int):
        super().__init__()
        self.linear_1 = nn.Linear(d_vision, d_text)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(d_text, d_text)


class TextAttention(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.q_proj = PLoRA(d, d)
        self.k_proj = PLoRA(d, d)
        self.v_proj = PLoRA(d, d)
        self.o_proj = PLoRA(d, d)


class TextMLP(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.gate_proj = nn.Linear(d, 3 * d, bias=False)
        self.up_proj = nn.Linear(d, 3 * d, bias=False)
        self.down_proj = nn.Linear(3 * d, d, bias=False)


class TextLayer(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.input_layernorm = nn.LayerNorm(d)
        self.self_attn = TextAttention(d)
        self.post_attention_layernorm = nn.LayerNorm(d)
        self.mlp = TextMLP(d)


class LanguageModel(nn.Module):
    def __init__(self, vocab: int, d: int, n_layers: int):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(TextLayer(d) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d)


class DemoVLM(nn.Module):
    """vision_tower (frozen) → multi_modal_projector → language_model (PLoRA attention) → lm_head (tied)."""

    def __init__(self, vocab: int = 32000, d_vision: int = 256, d_text: int = 512, vision_layers: int = 4, text_layers: int = 6):
        super().__init__()
        self.vision_tower = VisionTower(d_vision, vision_layers)
        self.multi_modal_projector = Projector(d_vision, d_text)
        self.language_model = LanguageModel(vocab, d_text, text_layers)
        self.lm_head = nn.Linear(d_text, vocab, bias=False)
        self.lm_head.weight = self.language_model.embed_tokens.weight

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.embed_tokens

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head


def build_demo_model(device: str = "meta", freeze_vision: bool = True, **sizes) -> DemoVLM:
    """The demo VLM, on the meta device unless told otherwise, with its vision tower frozen."""
    with torch.device(device):
        model = DemoVLM(**sizes)
    if freeze_vision:
        model.vision_tower.requires_grad_(False)
    return model
