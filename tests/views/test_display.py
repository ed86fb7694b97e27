"""Display: grouped rows, ten lines for tens of thousands of modules, HTML, rich, lora_params."""

from __future__ import annotations

import io
import re
import time
import warnings

import pytest
import torch
from torch import nn

import models
import targetsel as ts
from targetsel import select
from targetsel.views.display import (
    COLUMNS,
    human,
    lora_layer_params,
    render_html,
    render_rich,
    render_text,
    summarize,
    summary_rows,
)

ANSI = re.compile(r"\x1b\[")
COLOUR = re.compile(r"\x1b\[[0-9;]*(3[0-7]|9[0-7])[;m]")


def per_expert_moe(layers=48, experts=64):
    """A synthetic per-expert MoE: layers × experts × 3 Linears (+ 4 attention Linears), on the meta device."""
    with torch.device("meta"):
        m = nn.Module()
        m.layers = nn.ModuleList()
        for _ in range(layers):
            block = nn.Module()
            block.attn = nn.Module()
            for p in ("q_proj", "k_proj", "v_proj", "o_proj"):
                block.attn.add_module(p, nn.Linear(64, 64, bias=False))
            block.norm = nn.LayerNorm(64)
            block.experts = nn.ModuleList()
            for _ in range(experts):
                e = nn.Module()
                e.gate_proj, e.up_proj, e.down_proj = nn.Linear(64, 32, bias=False), nn.Linear(64, 32, bias=False), nn.Linear(32, 64, bias=False)
                block.experts.append(e)
            m.layers.append(block)
    return m


@pytest.fixture(scope="module")
def moe():
    return per_expert_moe()


# ---------------------------------------------------------------------------- many modules, few lines


def test_tens_of_thousands_of_modules_in_about_ten_lines(moe):
    sel = select(moe, "linear")
    lines = render_text(sel.resolution()).splitlines()
    assert len(sel) == 48 * (4 + 64 * 3)
    linear_params = 192 * 64 * 64 + 9216 * 64 * 32  # 19.66M; the 48 LayerNorms add 6144
    assert lines == [
        f"Selection('linear') — 9408 of {len(list(moe.named_modules())) - 1} modules of Module",
        "  layers.{0..47}.attn.{q,k,v,o}_proj             192 × Linear(64→64)   trainable    786K params",
        "  layers.{0..47}.experts.{0..63}.{gate,up}_proj  6144 × Linear(64→32)  trainable   12.6M params",
        "  layers.{0..47}.experts.{0..63}.down_proj       3072 × Linear(32→64)  trainable   6.29M params",
        "  layers: layers " + "▮" * 48 + " 48/48",
        f"9408 modules · 19.7M parameters ({linear_params / (linear_params + 6144):.1%} of 19.7M)"
        f" · LoRA r=16 adds {human(16 * (192 * 128 + 9216 * 96))}",
    ]


@pytest.mark.parametrize("query", ["all", "leaf", "!linear", "layers:0..3 | type:LayerNorm"])
def test_any_selection_of_a_big_model_fits_in_fourteen_lines(moe, query):
    sel = select(moe, query)
    text = render_text(sel.resolution())
    assert len(text.splitlines()) <= 14
    rows = summarize(sel.resolution()).rows
    assert sum(r.count for r in rows) == len(sel)  # every module in exactly one row


def test_many_groups_are_cut_to_fourteen_lines():
    with torch.device("meta"):
        m = nn.Sequential(*[nn.Linear(8, k) for k in range(1, 31)])  # 30 shapes: 30 one-module rows
    sel = select(m, "linear")
    lines = render_text(sel.resolution()).splitlines()
    assert len(lines) == 14
    assert lines[1].startswith("  0  ") and lines[11].startswith("  10  ")  # 11 rows, then the cut
    assert lines[12] == "  … 19 more groups (19 modules)"
    assert lines[13].startswith("30 modules · ")
    assert len(render_text(sel.resolution(), max_rows=30).splitlines()) == 32
    table = render_rich(sel.resolution())
    assert table.row_count == 12 and table.columns[0]._cells[-1] == "… 19 more groups"


def test_render_is_fast_on_a_big_model(moe):
    sel = select(moe, "all")
    len(sel)  # the index is built before the clock starts: this measures the display alone
    start = time.perf_counter()
    render_text(sel.resolution())
    render_html(sel.resolution())
    # ~0.1 s each here on an idle core; the bound only catches per-module Python work gone quadratic
    assert time.perf_counter() - start < 4.0


# ---------------------------------------------------------------------------- rows


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
    ("glob:language_model.embed_tokens", [("language_model.embed_tokens", 1, "Embedding", "32000×512", "trainable")]),
    ("glob:vision_tower.layers.{0,1}.layer_norm*", [
        ("vision_tower.layers.{0,1}.layer_norm{1,2}", 4, "LayerNorm", "256", "frozen")]),
]


@pytest.mark.parametrize("query, rows", DEMO_ROWS, ids=[c[0] for c in DEMO_ROWS])
def test_demo_rows(query, rows):
    summary = summarize(select(models.demo(), query).resolution())
    assert [(r.pattern, r.count, r.cls, r.shape, r.state) for r in summary.rows] == rows


def test_group_patterns_paste_back_as_globs():
    model = models.demo()
    for row in summarize(select(model, "all").resolution()).rows:
        same = select(model, "all").glob(row.pattern)
        assert len(same) >= row.count, row.pattern  # the glob finds at least the row's modules


def test_rows_split_by_shape_and_grad_state():
    model = models.demo()
    model.vision_tower.layers[0].mlp.fc1.requires_grad_(True)
    model.vision_tower.layers[1].mlp.fc2.bias.requires_grad_(True)
    rows = summarize(select(model, "glob:vision_tower.layers.*.mlp | glob:vision_tower.layers.*.mlp.*").resolution()).rows
    assert [(r.pattern, r.count, r.cls, r.shape, r.state) for r in rows] == [
        ("vision_tower.layers.{0,1}.mlp", 2, "Sequential", "", "mixed"),
        ("vision_tower.layers.0.mlp.fc1", 1, "Linear", "256→1024", "trainable"),
        ("vision_tower.layers.{0,2,3}.mlp.fc2", 3, "Linear", "1024→256", "frozen"),  # rows follow their first module
        ("vision_tower.layers.{1..3}.mlp.fc1", 3, "Linear", "256→1024", "frozen"),
        ("vision_tower.layers.1.mlp.fc2", 1, "Linear", "1024→256", "mixed"),
        ("vision_tower.layers.{2,3}.mlp", 2, "Sequential", "", "frozen"),
    ]


def test_parameterless_modules_show_a_dash():
    with torch.device("meta"):
        m = nn.Sequential(nn.Linear(2, 2), nn.GELU(), nn.Linear(2, 2), nn.GELU())
    rows = summarize(select(m, "all").resolution()).rows
    assert [(r.pattern, r.count, r.cls, r.state, r.params) for r in rows] == [
        ("{0,2}", 2, "Linear", "trainable", 12), ("{1,3}", 2, "GELU", "—", 0)]


def test_row_params_and_totals_are_exact():
    model = models.demo()
    sel = select(model, "linear & trainable - type:PLoRA - under:(type:PLoRA)")
    summary = summarize(sel.resolution())
    assert [r.params for r in summary.rows] == [
        sum(p.numel() for n in sel.names() if re.fullmatch(pattern_re, n) for p in model.get_submodule(n).parameters())
        for pattern_re in (r"multi_modal_projector\.linear_1", r"multi_modal_projector\.linear_2",
                           r"language_model\.layers\.\d\.mlp\.(gate|up)_proj", r"language_model\.layers\.\d\.mlp\.down_proj")
    ]
    assert summary.params == sum(p.numel() for m in sel.modules().values() for p in m.parameters())
    assert summary.model_params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("query", ["glob:{emb,head}", "glob:head", "glob:blocks.0 | glob:blocks.0.*", "all"])
def test_tied_and_shared_parameters_count_once_in_totals(query):
    model = models.tied_and_shared()
    sel = select(model, query)
    distinct = {id(p): p.numel() for m in sel.modules().values() for p in m.parameters()}
    assert summarize(sel.resolution()).params == sum(distinct.values())


def test_summary_rows_are_plain_data():
    rows = summary_rows(select(models.demo(), "type:PLoRA & layers:0").resolution())
    assert rows == [{"pattern": "language_model.layers.0.self_attn.{q,k,v,o}_proj", "count": 4, "class": "PLoRA",
                     "shape": "512→512", "grad_state": "trainable", "params": 4 * (512 * 512 + 8 * 512 * 2)}]


# ---------------------------------------------------------------------------- LoRA parameters


class LinearSubclass(nn.Linear):
    pass


def _conv1d_gpt2():
    from transformers.pytorch_utils import Conv1D

    return Conv1D(24, 16)  # nf=24 outputs, nx=16 inputs: weight (16, 24)


# (name, layer factory, r, expected by hand) — and PEFT builds exactly that many lora_ parameters
LORA = [
    ("Linear", lambda: nn.Linear(48, 80), 16, 16 * (48 + 80)),
    ("Linear subclass", lambda: LinearSubclass(32, 8), 4, 4 * (32 + 8)),
    ("Embedding", lambda: nn.Embedding(300, 24), 8, 8 * (300 + 24)),
    ("Conv2d", lambda: nn.Conv2d(3, 64, kernel_size=14), 4, 4 * 3 * 14 * 14 + 4 * 64),
    ("Conv1d groups=2", lambda: nn.Conv1d(8, 16, kernel_size=3, groups=2), 2, 2 * 8 * 3 + 2 * 16 // 2),
    ("Conv3d", lambda: nn.Conv3d(2, 6, kernel_size=(1, 2, 3)), 3, 3 * 2 * 6 + 3 * 6),
    ("MultiheadAttention", lambda: nn.MultiheadAttention(32, 4), 8, 8 * (32 + 3 * 32) + 8 * (32 + 32)),
    ("transformers Conv1D", _conv1d_gpt2, 8, 8 * (16 + 24)),
]


@pytest.mark.parametrize("make, r, expected", [c[1:] for c in LORA], ids=[c[0] for c in LORA])
def test_lora_layer_params_match_hand_count_and_peft(make, r, expected):
    from peft import LoraConfig, get_peft_model

    layer = make()
    assert lora_layer_params(layer, r) == expected
    model = nn.Module()
    model.target = layer
    assert select(model, "glob:target").lora_params(r) == expected
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = get_peft_model(model, LoraConfig(r=r, target_modules=["target"]))
    built = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    assert built == expected


@pytest.mark.parametrize("layer", [nn.LayerNorm(8), nn.GELU(), nn.Sequential(nn.Linear(2, 2)), nn.Dropout()])
def test_layers_lora_does_not_wrap_add_nothing(layer):
    assert lora_layer_params(layer, 16) == 0


def test_lora_params_of_the_demo_match_peft():
    from peft import LoraConfig, get_peft_model

    model = models.demo()
    sel = select(model, "linear & trainable - type:PLoRA - under:(type:PLoRA)")
    expected = sel.lora_params(16)
    assert expected == 16 * ((256 + 512) + (512 + 512) + 12 * (512 + 1536) + 6 * (1536 + 512))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = get_peft_model(model, ts.patch(LoraConfig(r=16), sel))
    assert expected == sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n and "Plora" not in n)


# (model_type, query, a row the text must show) on real transformers models (meta device)
HF_CASES = [
    ("llama", "linear", "model.layers.{0,1}.self_attn.{q,k,v,o}_proj  8 × Linear(4096→4096)   trainable    134M params"),
    ("gpt2", "linear", "transformer.h.{0,1}.attn.c_attn  2 × Conv1D(768→2304)  trainable   3.54M params"),
    ("t5", "linear", "{encoder,decoder}.block.{0,1}.layer.0.SelfAttention.{q,k,v,o}  16 × Linear(512→512)  trainable   4.19M params"),
    ("mixtral", "linear & glob:**.{gate,self_attn}.**", "model.layers.{0,1}.self_attn.{k,v}_proj  4 × Linear(4096→1024)  trainable   16.8M params"),
]


@pytest.mark.parametrize("model_type, query, row", HF_CASES, ids=[c[0] for c in HF_CASES])
def test_real_transformers_models(model_type, query, row):
    model = models.cached_hf_model(model_type)
    sel = select(model, query)
    text = render_text(sel.resolution())
    assert row in text
    summary = summarize(sel.resolution())
    assert sum(r.count for r in summary.rows) == len(sel)
    assert summary.model_params == sum(p.numel() for p in model.parameters())
    # LoRA by hand from the weight shapes: Linear stores (out, in), GPT-2's Conv1D (in, out)
    by_hand = sum(8 * sum(m.weight.shape) for m in sel.modules().values())
    assert sel.lora_params(8) == by_hand
    assert f"LoRA r=8 adds {human(by_hand)}" in render_text(sel.resolution(), r=8)


def test_real_transformers_lora_params_match_peft():
    from peft import LoraConfig, get_peft_model

    model = models.hf_model("gpt2")
    sel = select(model, "linear & layers:0")
    expected = sel.lora_params(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = get_peft_model(model, ts.patch(LoraConfig(r=4), sel))
    assert expected == sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)


@pytest.mark.parametrize("r", [0, -1, 1.5, True, "8"])
def test_lora_params_rejects_bad_ranks(r):
    with pytest.raises(ts.TargetselError, match=r"r is a positive integer rank"):
        select(models.demo(), "linear").lora_params(r)


@pytest.mark.parametrize("render", [render_text, render_html, render_rich])
def test_renderers_reject_bad_ranks(render):
    with pytest.raises(ts.TargetselError, match=r"r is a positive integer rank, got -2"):
        render(select(models.demo(), "linear"), r=-2)


def test_no_rank_no_lora_line():
    sel = select(models.demo(), "linear")
    assert "adds" not in render_text(sel.resolution(), r=None).splitlines()[-1]
    assert render_text(sel.resolution(), r=4).splitlines()[-1].endswith(f"LoRA r=4 adds {human(sel.lora_params(4))}")


# ---------------------------------------------------------------------------- the three forms


def odd_model():
    with torch.device("meta"):
        m = nn.Module()
        m.add_module("a<b>&c", nn.Linear(2, 2))
        m.add_module("[bold]x[/bold]", nn.Linear(3, 3))  # other shapes: three rows, no alternation
        m.add_module("q\"uote'", type("Odd<Class>", (nn.Linear,), {})(4, 4))
    return m


def test_html_is_a_real_escaped_table():
    out = render_html(select(odd_model(), "linear").resolution())
    assert out.startswith("<table") and out.endswith("</table>")
    right = ("count", "parameters")
    assert "<thead><tr>" + "".join(f"<th style='text-align:right'>{c}</th>" if c in right else f"<th>{c}</th>"
                                   for c in COLUMNS) + "</tr></thead>" in out
    assert "<code>a&lt;b&gt;&amp;c</code>" in out and "a<b>" not in out
    assert "<td>Odd&lt;Class&gt;</td>" in out and "q&quot;uote&#x27;" in out
    assert "<caption style='text-align:left'><code>linear</code>" in out


def test_html_escapes_the_query_in_the_caption():
    out = render_html(select(odd_model(), 'glob:"a<b>&c"').resolution())
    assert "<code>glob:&quot;a&lt;b&gt;&amp;c&quot;</code>" in out


def test_html_caps_rows_and_says_how_many_more(moe):
    out = render_html(select(moe, "all").resolution(), max_rows=3)
    assert out.count("<tr><td style='text-align:left'><code>") == 2
    assert re.search(r"<tr><td colspan='6'>… \d+ more groups \(\d+ modules\)</td></tr>", out)


def test_text_has_no_ansi_and_aligned_columns():
    text = render_text(select(models.demo(), "linear & trainable").resolution())
    assert not ANSI.search(text)
    rows = text.splitlines()[1:-2]  # the per-layer strip and the totals follow the rows
    assert text.splitlines()[-2] == "  layers: language_model.layers ▮▮▮▮▮▮ 6/6"
    assert len({row.index(" × ") - len(row.split()[1]) for row in rows}) == 1  # counts right-aligned before "×"
    assert len({row.index("trainable") for row in rows}) == 1


def test_rich_table_escapes_markup_in_names():
    from rich.console import Console

    buffer = io.StringIO()
    Console(file=buffer, width=200, force_terminal=False).print(select(odd_model(), "linear"))
    out = buffer.getvalue()
    assert "[bold]x[/bold]" in out and "Odd<Class>" in out


@pytest.mark.parametrize("no_color, coloured", [("1", False), (None, True)])
def test_rich_respects_no_color(monkeypatch, no_color, coloured):
    from rich.console import Console

    if no_color is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", no_color)
    sel = select(models.demo(), "linear & trainable")
    buffer = io.StringIO()
    Console(file=buffer, width=160, force_terminal=True, color_system="standard").print(sel)
    out = buffer.getvalue()
    assert "linear & trainable" in out and "language_model.layers.{0..5}.mlp.{gate,up}_proj" in out
    assert bool(COLOUR.search(out)) is coloured


def test_rich_table_columns_and_caption():
    table = render_rich(select(models.demo(), "linear & trainable").resolution())
    assert [c.header for c in table.columns] == list(COLUMNS)
    assert "Selection('linear & trainable')" in str(table.title)
    strip, totals = str(table.caption).splitlines()
    assert strip == "layers: language_model.layers ▮▮▮▮▮▮ 6/6" and re.match(r"92 modules · [\d.]+M parameters", totals)


def test_empty_selection_says_why_in_every_form():
    from rich.console import Console

    sel = select(models.demo(), "linear & glob:nothing.*")
    buffer = io.StringIO()
    Console(file=buffer, width=300).print(render_rich(sel.resolution()))
    for text in (render_text(sel.resolution()), render_html(sel.resolution()), buffer.getvalue()):
        assert "is empty" in text and "glob:nothing.*" in text
    assert render_text(sel.resolution()).splitlines()[0] == "Selection('linear & glob:nothing.*') — 0 of 177 modules of DemoVLM"


@pytest.mark.parametrize("n, text", [(0, "0"), (512, "512"), (4200, "4.2K"), (12_600_000, "12.6M"),
                                     (2_150_000_000, "2.15B"), (132_000, "132K"), (999_424, "999K")])
def test_human(n, text):
    assert human(n) == text


def test_selection_hooks_use_the_renderers():
    from rich.table import Table

    sel = select(models.demo(), "linear & trainable")
    assert repr(sel) == render_text(sel.resolution())
    assert sel._repr_html_() == render_html(sel.resolution())
    assert isinstance(sel.__rich__(), Table)
