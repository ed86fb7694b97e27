"""Small models built to break naive targeting, plus real transformers models on the meta device."""

from __future__ import annotations

import functools

import torch
from torch import nn

from targetsel.demo import PLoRA, build_demo_model


def demo(**kw) -> nn.Module:
    """The embedded demo VLM: frozen vision tower sharing leaf names, PLoRA attention, tied head."""
    return build_demo_model(**kw)


class Block(nn.Module):
    def __init__(self, d=4):
        super().__init__()
        self.attn = nn.Module()
        self.attn.q_proj = nn.Linear(d, d)
        self.attn.v_proj = nn.Linear(d, d)
        self.mlp = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)


def twelve_blocks() -> nn.Module:
    """Block indices 1 vs 10 vs 11: 'layers.1' is a string prefix of 'layers.10' but not its ancestor."""
    with torch.device("meta"):
        m = nn.Module()
        m.layers = nn.ModuleList(Block() for _ in range(12))
        m.head = nn.Linear(4, 4)
    return m


def suffix_trap() -> nn.Module:
    """One module's full name is a dotted suffix of another's: `attn.q_proj` vs `block.attn.q_proj`.

    A list holding the full name 'attn.q_proj' makes PEFT target both.
    """
    with torch.device("meta"):
        m = nn.Module()
        m.attn = nn.Module()
        m.attn.q_proj = nn.Linear(4, 4)
        m.block = nn.Module()
        m.block.attn = nn.Module()
        m.block.attn.q_proj = nn.Linear(4, 4)
        m.block.out = nn.Linear(4, 4)
    return m


def tied_and_shared() -> nn.Module:
    """Tied parameters (head.weight is emb.weight) and one module registered at two places."""
    with torch.device("meta"):
        m = nn.Module()
        m.emb = nn.Embedding(10, 4)
        shared = nn.Linear(4, 4)
        m.a = nn.Module()
        m.a.proj = shared
        m.b = nn.Module()
        m.b.proj = shared
        m.b.other = nn.Linear(4, 4)
        m.head = nn.Linear(4, 10, bias=False)
        m.head.weight = m.emb.weight
    return m


def plora_model() -> nn.Module:
    """A Linear subclass with its own low-rank child Linears, next to plain Linears."""
    with torch.device("meta"):
        m = nn.Module()
        m.layers = nn.ModuleList()
        for _ in range(3):
            layer = nn.Module()
            layer.wqkv = PLoRA(8, 24)
            layer.wo = PLoRA(8, 8)
            layer.w1 = nn.Linear(8, 16)
            m.layers.append(layer)
    return m


# Real transformers architectures: (model_type, auto class name, config overrides).
HF_ARCHS = {
    "llama": ("AutoModelForCausalLM", dict(num_hidden_layers=2)),
    "gpt2": ("AutoModelForCausalLM", dict(n_layer=2)),
    "llava": ("AutoModelForImageTextToText", {}),
    "mixtral": ("AutoModelForCausalLM", dict(num_hidden_layers=2)),
    "t5": ("AutoModelForSeq2SeqLM", dict(num_layers=2, num_decoder_layers=2)),
    "whisper": ("AutoModelForSpeechSeq2Seq", {}),
    "qwen2_vl": ("AutoModelForImageTextToText", {}),
}


def hf_model(model_type: str, auto: str | None = None, **overrides) -> nn.Module:
    """A real transformers model built from its config class on the meta device (no weights, no network)."""
    import transformers

    default_auto, default_overrides = HF_ARCHS.get(model_type, ("AutoModelForCausalLM", {}))
    config = transformers.AutoConfig.for_model(model_type, **{**default_overrides, **overrides})
    with torch.device("meta"):
        return getattr(transformers, auto or default_auto).from_config(config)


@functools.lru_cache(maxsize=None)
def cached_hf_model(model_type: str) -> nn.Module:
    """Shared read-only instance; tests that mutate (freeze, get_peft_model) must build their own."""
    return hf_model(model_type)


def wrapped_names(peft_model) -> list[str]:
    """Module names (relative to the base model) that PEFT replaced with adapter layers, in order."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    base = peft_model.base_model.model
    return [n for n, m in base.named_modules() if isinstance(m, BaseTunerLayer)]
