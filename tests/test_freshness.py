"""Freshness: terminals reflect the model when they run, never a stale index."""

from __future__ import annotations

import torch
from torch import nn

import models
from targetsel import select
from targetsel.model.index import get_index


def test_requires_grad_change_is_seen_by_an_existing_selection():
    model = models.demo(freeze_vision=False)
    trainable = select(model).linear().trainable()
    before = trainable.names()
    model.vision_tower.requires_grad_(False)
    after = trainable.names()
    assert len(after) < len(before)
    assert not any(n.startswith("vision_tower") for n in after)


def test_replaced_submodule_is_seen():
    model = models.demo()
    sel = select(model).type("LayerNorm")
    n = len(sel)
    with torch.device("meta"):
        model.language_model.norm = nn.RMSNorm(512)
    assert len(sel) == n - 1
    assert "language_model.norm" in select(model).type("RMSNorm").names()


def test_added_and_removed_submodules_are_seen():
    model = models.twelve_blocks()
    sel = select(model).glob("layers.*.attn.q_proj")
    assert len(sel) == 12
    with torch.device("meta"):
        model.layers.append(models.Block())
    assert len(sel) == 13
    del model.layers[12]
    # `del` fires no registration hook: the container check catches it.
    assert len(sel) == 12


def test_tying_a_parameter_is_seen():
    model = models.twelve_blocks()
    model.layers[0].mlp.requires_grad_(False)
    assert "layers.1.mlp" in select(model).trainable().names()
    model.layers[1].mlp.weight = model.layers[0].mlp.weight  # tie: now layers.1.mlp uses a frozen weight
    assert "layers.1.mlp" in select(model).mixed().names()


def test_unchanged_model_reuses_its_index():
    model = models.demo()
    a = get_index(model)
    select(model).linear().names()
    with torch.device("meta"):
        nn.Linear(2, 2)  # unrelated module construction bumps the global counter...
    assert get_index(model) is a  # ...but the structure check finds the model unchanged


def test_peft_injection_invalidates_the_index():
    from peft import LoraConfig, get_peft_model

    model = models.twelve_blocks()
    before = get_index(model)
    get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    after = get_index(model)
    assert after is not before
    assert any(".base_layer" in n for n in after.names)
