"""Grad state: trainable / frozen / mixed over every parameter a module uses."""

from __future__ import annotations

import pytest

import models
from targetsel import select


def _reference(model):
    """Per module: (#distinct params used, #requiring grad), walking with remove_duplicate=False."""
    out = {}
    for name, module in model.named_modules():
        if not name:
            continue
        params = {id(p): p for _, p in module.named_parameters(remove_duplicate=False)}
        out[name] = (len(params), sum(p.requires_grad for p in params.values()))
    return out


def _states(model):
    ref = _reference(model)
    return {
        "trainable": [n for n, (t, g) in ref.items() if t and g == t],
        "frozen": [n for n, (t, g) in ref.items() if t and g == 0],
        "mixed": [n for n, (t, g) in ref.items() if t and 0 < g < t],
    }


FREEZE_CASES = [
    ("nothing-frozen", lambda m: None),
    ("vision-frozen", lambda m: m.vision_tower.requires_grad_(False)),
    ("all-frozen", lambda m: m.requires_grad_(False)),
    ("bias-only-frozen", lambda m: [p.requires_grad_(False) for n, p in m.named_parameters() if n.endswith("bias")]),
    ("tied-embedding-frozen", lambda m: m.language_model.embed_tokens.requires_grad_(False)),
    ("one-plora-branch", lambda m: m.language_model.layers[0].self_attn.q_proj.Plora_A.requires_grad_(False)),
]


@pytest.mark.parametrize("case_id, freeze", FREEZE_CASES, ids=[c[0] for c in FREEZE_CASES])
def test_grad_state_matches_reference(case_id, freeze):
    model = models.demo(freeze_vision=False)
    freeze(model)
    want = _states(model)
    sel = select(model)
    assert sel.trainable().names() == want["trainable"]
    assert sel.frozen().names() == want["frozen"]
    assert sel.mixed().names() == want["mixed"]


def test_tied_head_counts_the_embedding_weight():
    # named_parameters() drops the tied lm_head.weight; the head still *uses* it.
    model = models.demo(freeze_vision=False)
    model.language_model.embed_tokens.requires_grad_(False)
    assert "lm_head" in select(model).frozen().names()
    assert "lm_head" not in select(model).trainable().names()


def test_shared_module_counts_for_every_parent():
    model = models.tied_and_shared()
    model.a.proj.requires_grad_(False)  # the same module is also model.b.proj
    sel = select(model)
    assert sel.frozen().names() == ["a", "a.proj"]
    assert sel.mixed().names() == ["b"]  # b uses the frozen shared proj and its own trainable 'other'
    assert sel.trainable().names() == ["emb", "b.other", "head"]


def test_modules_without_parameters_have_no_grad_state():
    model = models.demo()
    act = "multi_modal_projector.act"
    for state in ("trainable", "frozen", "mixed"):
        assert act not in getattr(select(model), state)().names()


def test_block_prefix_does_not_own_longer_indices():
    """Regression: 'layers.1' must not own 'layers.10.*' parameters (no string-prefix ownership)."""
    model = models.twelve_blocks()
    model.layers[10].requires_grad_(False)
    model.layers[11].requires_grad_(False)
    assert "layers.1" in select(model).trainable().names()
    assert "layers" in select(model).mixed().names()
    assert select(model).frozen().names()[0] == "layers.10"
