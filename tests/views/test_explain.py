"""Selection.explain(name): each clause, kept or dropped, and why."""

from __future__ import annotations

import pytest

import models
import targetsel as ts
from targetsel import select

Q = "linear & trainable & !under:vision_tower & layers:0..3"

# (query, module, selected?, the explanation's lines after the first)
CASES = [
    (Q, "vision_tower.layers.0.mlp.fc1", False, [
        "  ✓ linear — a Linear(256→1024)",
        "  ✗ trainable — 0 of 2 parameters require grad (inside the frozen vision_tower)",
        "  ✗ !under:vision_tower — the clause below holds",
        "    ✓ under:vision_tower — inside vision_tower",
        "  ✓ layers:0..3 — block 0 of vision_tower.layers (4 blocks)",
    ]),
    (Q, "language_model.layers.4.mlp.up_proj", False, [
        "  ✓ linear — a Linear(512→1536)",
        "  ✓ trainable — 1 of 1 parameters require grad",
        "  ✓ !under:vision_tower — the clause below does not hold",
        "    ✗ under:vision_tower — not inside any module named 'vision_tower'",
        "  ✗ layers:0..3 — block 4 of language_model.layers (6 blocks), outside 0..3",
    ]),
    (Q, "lm_head", False, [
        "  ✗ linear — the output head (get_output_embeddings()), which linear never selects",
        "  ✓ trainable — 1 of 1 parameters require grad",
        "  ✓ !under:vision_tower — the clause below does not hold",
        "    ✗ under:vision_tower — not inside any module named 'vision_tower'",
        "  ✗ layers:0..3 — not inside a numbered block",
    ]),
    ("type:Linear & leaf", "language_model.layers.0.self_attn.q_proj", False, [
        "  ✓ type:Linear — PLoRA is a subclass of Linear",
        "  ✗ leaf — 2 child module(s)",
    ]),
    ("(type:PLoRA | glob:**.fc1) - frozen", "vision_tower.layers.1.mlp.fc1", False, [
        "  ✗ (type:PLoRA | glob:**.fc1) - frozen — in the right part",
        "    ✓ type:PLoRA | glob:**.fc1 — any of:",
        "      ✗ type:PLoRA — a Linear, not a PLoRA",
        "      ✓ glob:**.fc1 — the name matches the glob",
        "    ✓ frozen — 0 of 2 parameters require grad (inside the frozen vision_tower)",
    ]),
    ("component:vision & type:=LayerNorm", "vision_tower.layers.0.layer_norm1", True, [
        "  ✓ component:vision — inside the vision component (vision_tower)",
        "  ✓ type:=LayerNorm — a LayerNorm",
    ]),
    ("name:/mlp/ & under:(type:PLoRA)", "language_model.layers.0.self_attn.q_proj.Plora_A", False, [
        "  ✗ name:/mlp/ — the name does not match the regex",
        "  ✓ under:(type:PLoRA) — inside a module the sub-query selects",
    ]),
    ("mixed | outermost", "language_model", True, [
        "  ✓ mixed | outermost — any of:",
        "    ✗ mixed — 117 of 117 parameters require grad",
        "    ✓ outermost — no selected ancestor in its group",
    ]),
]


@pytest.mark.parametrize("query, name, selected, lines", CASES, ids=[f"{q}@{n}" for q, n, *_ in CASES])
def test_explain(query, name, selected, lines):
    explanation = select(models.demo(), query).explain(name)
    assert explanation.selected is selected and bool(explanation) is selected
    text = str(explanation).splitlines()
    assert text[0] == f"{name}: {'selected' if selected else 'not selected'} by {query!r}"
    assert text[1:] == lines


def test_explain_agrees_with_names_for_every_module():
    model = models.demo()
    sel = select(model, "(linear | type:LayerNorm) & !frozen - layers:-1..")
    chosen = set(sel.names())
    for name, _ in list(model.named_modules())[1:]:
        assert sel.explain(name).selected == (name in chosen)


def test_where_callables_are_explained_by_their_result():
    def is_q(name, module):
        return name.endswith("q_proj")

    text = str(select(models.demo()).linear().where(is_q).explain("language_model.layers.0.self_attn.k_proj"))
    assert "is_q(name, module) returned False" in text


@pytest.mark.parametrize("name, message", [
    ("vision_tower.layer.0", r"has no module named 'vision_tower\.layer\.0'; did you mean 'vision_tower\.layers\.0'"),
    ("", r"the root module is never selected"),
    (3, r"has no module named 3"),
])
def test_explain_unknown_names(name, message):
    with pytest.raises(ts.UnknownNameError, match=message):
        select(models.demo(), "linear").explain(name)
