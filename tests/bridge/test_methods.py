"""Every PEFT config class with `target_modules`: patch + verify + a real get_peft_model.

The expected list is explicit so that a class the installed peft adds (or drops) fails here instead
of being skipped silently; the table gives each method the arguments it needs on a small CPU model.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from peft import get_peft_model
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
from torch import nn

import models
import targetsel as ts
from targetsel import patch, select, verify

# class name → (constructor kwargs, what runs: "inject" = patch + verify + get_peft_model)
METHODS = {
    "LoraConfig": {}, "AdaLoraConfig": {"total_step": 10}, "BeftConfig": {}, "BOFTConfig": {},
    "C3AConfig": {"block_size": 16}, "DeftConfig": {}, "DeloraConfig": {}, "FourierFTConfig": {"n_frequency": 100},
    "FrodConfig": {}, "GloraConfig": {}, "GraloraConfig": {}, "HiraConfig": {}, "HRAConfig": {},
    "IA3Config": {"feedforward_modules": ["v"]}, "LilyConfig": {}, "LNTuningConfig": {}, "LoHaConfig": {},
    "LoKrConfig": {}, "MissConfig": {"r": 8}, "OFTConfig": {}, "ShiraConfig": {"r": 2}, "OSFConfig": {},
    "PeanutConfig": {}, "PolyConfig": {}, "PsoftConfig": {"r": 8}, "PveraConfig": {}, "RandLoraConfig": {},
    "RoadConfig": {"group_size": 16}, "SupertuningConfig": {}, "TinyLoraConfig": {}, "TrainableTokensConfig": {},
    "UniLoraConfig": {}, "VBLoRAConfig": {"vector_length": 16}, "VeraConfig": {}, "WaveFTConfig": {"n_frequency": 100},
    "ShadowConfig": {}, "AdamssConfig": {},
}
# ShadowConfig reads model.config, so it runs on a tiny transformers Llama; AdaMSS needs scikit-learn
# (in the test extra).
REFUSED = {"AdaptionPromptConfig": r"names the attention class to prepend prompts to"}


def with_target_modules():
    return sorted(cls.__name__ for cls in PEFT_TYPE_TO_CONFIG_MAPPING.values()
                  if "target_modules" in {f.name for f in dataclasses.fields(cls)})


def test_the_table_covers_every_installed_config_class():
    assert with_target_modules() == sorted([*METHODS, *REFUSED])


def tiny() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Module()
    m.layers = nn.ModuleList()
    for _ in range(2):
        b = nn.Module()
        b.q, b.v, b.fc = nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 64)
        b.norm = nn.LayerNorm(64)
        m.layers.append(b)
    m.emb = nn.Embedding(32, 64)
    return m


def tiny_llama() -> nn.Module:
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                                      num_key_value_heads=2, vocab_size=100)
    return transformers.LlamaForCausalLM(config)


CLASSES = {cls.__name__: cls for cls in PEFT_TYPE_TO_CONFIG_MAPPING.values()}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_patch_verify_and_inject(name):
    cls = CLASSES[name]
    model = tiny_llama() if name == "ShadowConfig" else tiny()
    query = "linear & glob:**.{q,v}_proj" if name == "ShadowConfig" else "linear & glob:layers.*.{q,v}"
    sel = select(model, query)
    names = sel.names()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = patch(cls(**METHODS[name]), sel)
        assert verify(model, config) == names
        peft_model = get_peft_model(model, config)
    assert models.wrapped_names(peft_model) == names


def test_ia3_feedforward_modules_stay_exact_and_a_subset():
    model = tiny()
    sel = select(model, "linear & glob:layers.*.{q,v,fc}")
    config = patch(CLASSES["IA3Config"](feedforward_modules=["fc"]), sel)
    assert set(config.feedforward_modules) <= set(config.target_modules)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = get_peft_model(model, config)
    ff = [n for n, m in peft_model.base_model.model.named_modules() if getattr(m, "is_feedforward", False)]
    assert ff == ["layers.0.fc", "layers.1.fc"]


def test_ia3_feedforward_outside_the_selection_is_refused():
    with pytest.raises(ts.ConfigError, match=r"feedforward_modules=\{'fc'\} names none of the 4 selected modules"):
        patch(CLASSES["IA3Config"](feedforward_modules=["fc"]), select(tiny(), "linear & glob:layers.*.{q,v}"))


@pytest.mark.parametrize("name, message", sorted(REFUSED.items()))
def test_configs_targetsel_cannot_make_exact_are_refused(name, message):
    with pytest.raises(ts.ConfigError, match=message):
        patch(CLASSES[name](), select(tiny(), "linear"))
