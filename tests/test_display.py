"""Display (issue 6): grouped rows, ten lines for tens of thousands of modules, HTML, rich, lora_params."""

from __future__ import annotations

import io
import re

import pytest
import torch
from torch import nn

import models
import targetsel as ts
from targetsel import select
from targetsel.display import human, lora_layer_params, render_html, render_rich, render_text, summarize


def per_expert_moe(layers=48, experts=64):
    """A synthetic per-expert MoE: layers × experts × 3 Linears, on the meta device."""
    with torch.device("meta"):
        m = nn.Module()
        m.layers = nn.ModuleList()
        for _ in range(layers):
            block = nn.Module()
            block.attn = nn.Module()
            for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
                block.attn.add_module(p, nn.Linear(64, 64, bias=False))
            block.experts = nn.ModuleList()
            for _ in range(experts):
                e = nn.Module()
                e.gate_proj, e.up_proj, e.down_proj = nn.Linear(64, 32, bias=False), nn.Linear(64, 32, bias=False), nn.Linear(32, 64, bias=False)
                block.experts.append(e)
            m.layers.append(block)
    return m


def test_tens_of_thousands_of_modules_in_about_ten_lines():
    model = per_expert_moe()
    sel = select(model, "linear")
    text = render_text(sel)
    lines = text.splitlines()
    assert len(sel) == 48 * (4 + 64 * 3)
    assert len(lines) <= 6
    assert lines[0] == f"Selection('linear') — {len(sel)} of {len(list(model.named_modules())) - 1} modules of Module"
    assert "layers.{0..47}.experts.{0..63}.{gate,up}_proj  6144 × Linear(64→32)" in text
    assert "layers.{0..47}.attn.{q,k,v,o}_proj" in text


# (query, expected rows as (pattern, count, class, shape, state)) on the demo
DEMO_ROWS = [
    ("linear & trainable - type:PLoRA - under:(type:PLoRA)", [
        ("multi_modal_projector.linear_1", 1, "Linear", "256→512", "trainable"),
        ("multi_modal_projector.linear_2", 1, "Linear", "512→512", "trainable"),
        ("language_model.layers.{0..5}.mlp.{gate,up}_proj", 12, "Linear", "512→1536", "trainable"),
        ("language_model.layers.{0..5}.mlp.down_proj", 6, "Linear", "1536→512", "trainable"),
    ]),
    ("type:PLoRA & layers:0", [("language_model.layers.0.self_attn.{q,k,v,o}_proj", 4, "PLoRA", "512→512", "trainable")]),
    ("frozen & glob:vision_tower.layers.*.mlp.fc1", [("vision_tower.layers.{0..3}.mlp.fc1", 4, "Linear", "256→1024", "frozen")]),
    ("glob:language_model.layers.0", [("language_model.layers.0", 1, "TextLayer", "", "trainable")]),
]


@pytest.mark.parametrize("query, rows", DEMO_ROWS, ids=[c[0] for c in DEMO_ROWS])
def test_demo_rows(query, rows):
    summary = summarize(select(models.demo(), query))
    assert [(r.pattern, r.count, r.cls, r.shape, r.state) for r in summary.rows] == rows


def test_rows_split_by_shape_and_grad_state():
    model = models.demo()
    model.vision_tower.layers[0].mlp.fc1.requires_grad_(True)
    rows = summarize(select(model, "glob:vision_tower.layers.*.mlp.*")).rows
    assert [(r.pattern, r.count, r.shape, r.state) for r in rows] == [
        ("vision_tower.layers.0.mlp.fc1", 1, "256→1024", "trainable"),
        ("vision_tower.layers.{0..3}.mlp.fc2", 4, "1024→256", "frozen"),  # rows follow their first module
        ("vision_tower.layers.{1..3}.mlp.fc1", 3, "256→1024", "frozen"),
    ]


def test_row_params_and_totals_are_exact():
    model = models.demo()
    sel = select(model, "linear & trainable - type:PLoRA - under:(type:PLoRA)")
    summary = summarize(sel)
    assert [r.params for r in summary.rows] == [
        sum(p.numel() for n in sel.names() if re.fullmatch(pattern_re, n) for p in model.get_submodule(n).parameters())
        for pattern_re in (r"multi_modal_projector\.linear_1", r"multi_modal_projector\.linear_2",
                           r"language_model\.layers\.\d\.mlp\.(gate|up)_proj", r"language_model\.layers\.\d\.mlp\.down_proj")
    ]
    assert summary.params == sum(p.numel() for m in sel.modules().values() for p in m.parameters())
    assert summary.model_params == sum(p.numel() for p in model.parameters())


def test_tied_parameters_count_once_in_totals():
    model = models.tied_and_shared()
    summary = summarize(select(model, "glob:{emb,head}"))
    assert summary.params == model.emb.weight.numel()  # head.weight is emb.weight


# (layer, r, expected) — LoRA parameters computed from the layer shapes by hand
LORA = [
    (nn.Linear(512, 1536), 16, 16 * (512 + 1536)),
    (nn.Embedding(32000, 512), 8, 8 * (32000 + 512)),
    (nn.Conv2d(3, 64, kernel_size=14), 4, 4 * (3 * 14 * 14 + 64)),
    (nn.Conv1d(8, 16, kernel_size=3, groups=2), 2, 2 * (8 * 3 // 2 + 16)),
    (nn.LayerNorm(512), 16, 0),
]


@pytest.mark.parametrize("layer, r, expected", LORA, ids=[type(l).__name__ for l, *_ in LORA])
def test_lora_layer_params(layer, r, expected):
    assert lora_layer_params(layer, r) == expected


def test_lora_params_matches_peft():
    import warnings

    from peft import LoraConfig, get_peft_model

    model = models.demo()
    sel = select(model, "linear & trainable - type:PLoRA - under:(type:PLoRA)")
    expected = sel.lora_params(16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = get_peft_model(model, ts.patch(LoraConfig(r=16), sel))
    assert expected == sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n and "Plora" not in n)


def test_transformers_conv1d_lora_params():
    model = models.cached_hf_model("gpt2")
    sel = select(model, "linear & glob:**.c_attn")
    c_attn = model.transformer.h[0].attn.c_attn
    nx, nf = c_attn.weight.shape
    assert sel.lora_params(8) == len(sel) * 8 * (nx + nf)
    assert "Conv1D(768→2304)" in render_text(sel)


@pytest.mark.parametrize("r", [0, -1, 1.5, True, "8"])
def test_lora_params_rejects_bad_ranks(r):
    with pytest.raises(ts.TargetselError, match=r"r is a positive integer rank"):
        select(models.demo(), "linear").lora_params(r)


def test_html_is_a_real_escaped_table():
    with torch.device("meta"):
        m = nn.Module()
        m.add_module("a<b>&c", nn.Linear(2, 2))
    out = render_html(select(m, "linear"))
    assert out.startswith("<table") and "<thead><tr><th>group</th><th>count</th><th>class</th><th>shape</th><th>grad state</th><th>parameters</th></tr></thead>" in out
    assert "a&lt;b&gt;&amp;c" in out and "a<b>" not in out
    assert "<code>linear</code>" in out


def test_empty_selection_says_why_in_every_form():
    sel = select(models.demo(), "linear & glob:nothing.*")
    for text in (render_text(sel), render_html(sel)):
        assert "is empty" in text and "glob:nothing.*" in text


def test_rich_table_and_no_color():
    from rich.console import Console

    sel = select(models.demo(), "linear & trainable")
    buffer = io.StringIO()
    Console(file=buffer, width=160, no_color=True, force_terminal=True).print(sel)
    out = buffer.getvalue()
    assert "linear & trainable" in out and "language_model.layers.{0..5}.mlp.{gate,up}_proj" in out
    assert not re.search(r"\x1b\[(3[0-7]|9[0-7])m", out)  # no colour codes under no_color
    table = render_rich(sel)
    assert [c.header for c in table.columns] == ["group", "count", "class", "shape", "grad state", "parameters"]


@pytest.mark.parametrize("n, text", [(512, "512"), (4200, "4.2K"), (12_600_000, "12.6M"), (2_150_000_000, "2.15B"), (132_000, "132K")])
def test_human(n, text):
    assert human(n) == text


def test_repr_and_display_forms_agree():
    sel = select(models.demo(), "linear & trainable")
    assert repr(sel) == render_text(sel)
    assert sel._repr_html_() == render_html(sel)
