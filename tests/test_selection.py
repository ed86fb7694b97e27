"""Fluent filters, operators and terminals of `Selection`, as tables of cases."""

from __future__ import annotations

import re

import pytest
from torch import nn

import models
import targetsel as ts
from targetsel import select
from targetsel.demo import PLoRA


@pytest.fixture(scope="module")
def demo():
    return models.demo()


def _brute(model, predicate):
    """Reference: named_modules() filtered by a plain Python predicate."""
    return [n for n, m in model.named_modules() if n and predicate(n, m)]


# (id, fluent builder, reference predicate over (name, module)) on the demo model
DEMO_CASES = [
    ("all", lambda s: s, lambda n, m: True),
    ("type-Linear-isinstance", lambda s: s.type(nn.Linear), lambda n, m: isinstance(m, nn.Linear)),
    ("type-Linear-exact", lambda s: s.type(nn.Linear, exact=True), lambda n, m: type(m) is nn.Linear),
    ("type-by-name", lambda s: s.type("PLoRA"), lambda n, m: isinstance(m, PLoRA)),
    ("type-several", lambda s: s.type("LayerNorm", nn.Embedding), lambda n, m: isinstance(m, (nn.LayerNorm, nn.Embedding))),
    ("type-base-name", lambda s: s.type("Linear"), lambda n, m: isinstance(m, nn.Linear)),
    ("type-qualified", lambda s: s.type("torch.nn.modules.linear.Linear", exact=True), lambda n, m: type(m) is nn.Linear),
    ("name-search", lambda s: s.name(r"q_proj"), lambda n, m: "q_proj" in n),
    ("name-anchored", lambda s: s.name(r"^vision_tower\.layers\.0\."), lambda n, m: n.startswith("vision_tower.layers.0.")),
    ("glob-star", lambda s: s.glob("vision_tower.layers.*.mlp"), lambda n, m: re.fullmatch(r"vision_tower\.layers\.\d+\.mlp", n)),
    ("glob-doublestar", lambda s: s.glob("**.fc1"), lambda n, m: n.endswith("fc1")),
    ("glob-braces", lambda s: s.glob("language_model.layers.{0..2}.self_attn.{q,v}_proj"),
     lambda n, m: re.fullmatch(r"language_model\.layers\.[0-2]\.self_attn\.[qv]_proj", n)),
    ("under-full", lambda s: s.under("vision_tower"), lambda n, m: n.startswith("vision_tower.")),
    ("under-suffix", lambda s: s.under("self_attn"), lambda n, m: ".self_attn." in n or n.startswith("self_attn.")),
    ("leaf", lambda s: s.leaf(), lambda n, m: not any(True for _ in m.children())),
    ("linear-no-head", lambda s: s.linear(), lambda n, m: isinstance(m, nn.Linear) and n != "lm_head"),
    ("trainable", lambda s: s.trainable(), lambda n, m: any(True for _ in m.parameters()) and not n.startswith("vision_tower")),
    ("frozen", lambda s: s.frozen(), lambda n, m: n.startswith("vision_tower") and any(True for _ in m.parameters())),
    ("mixed", lambda s: s.mixed(), lambda n, m: False),
    ("and-chain", lambda s: s.linear().trainable().leaf(),
     lambda n, m: isinstance(m, nn.Linear) and n != "lm_head" and not n.startswith("vision_tower") and not list(m.children())),
    ("layers-int", lambda s: s.layers(1), lambda n, m: re.match(r"(vision_tower|language_model)\.layers\.1(\.|$)", n)),
    ("layers-negative", lambda s: s.layers(slice(-2, None)).glob("**.q_proj"),
     lambda n, m: re.fullmatch(r"(vision_tower\.layers\.[23]|language_model\.layers\.[45])\.self_attn\.q_proj", n)),
    ("layers-within", lambda s: s.layers("-2..", within="language_model.layers").glob("**.q_proj"),
     lambda n, m: re.fullmatch(r"language_model\.layers\.[45]\.self_attn\.q_proj", n)),
    ("layers-range", lambda s: s.layers(range(1, 3)).type("LayerNorm"),
     lambda n, m: isinstance(m, nn.LayerNorm) and re.match(r"\w+\.layers\.[12]\.", n)),
    ("where-callable", lambda s: s.where(lambda n, m: isinstance(m, nn.Linear) and m.out_features == 8),
     lambda n, m: isinstance(m, nn.Linear) and m.out_features == 8),
    ("or", lambda s: s.type("Embedding") | s.type("Conv2d"), lambda n, m: isinstance(m, (nn.Embedding, nn.Conv2d))),
    ("diff", lambda s: s.linear() - s.under("vision_tower"), lambda n, m: isinstance(m, nn.Linear) and n != "lm_head" and not n.startswith("vision_tower")),
    ("invert", lambda s: ~s.under("language_model"), lambda n, m: not n.startswith("language_model.")),
    ("and-op", lambda s: s.linear() & s.frozen(), lambda n, m: isinstance(m, nn.Linear) and n.startswith("vision_tower")),
    ("outermost", lambda s: s.type(nn.Linear).trainable().outermost(),
     lambda n, m: isinstance(m, nn.Linear) and not n.startswith("vision_tower") and "Plora" not in n),
    ("under-selection", lambda s: s.under(s.type("PLoRA")), lambda n, m: "Plora_" in n),
]


@pytest.mark.parametrize("case_id, build, reference", DEMO_CASES, ids=[c[0] for c in DEMO_CASES])
def test_filter_matches_reference(demo, case_id, build, reference):
    got = build(select(demo)).names()
    want = _brute(demo, reference)
    assert got == want
    assert len(build(select(demo))) == len(want)


def test_outermost_is_ordered_against_later_filters(demo):
    # (Linear & outermost) & frozen differs from outermost of (Linear & frozen) when an outer module is dropped
    base = select(demo).type(nn.Linear)
    s1 = base.outermost().name("Plora_A")  # PLoRA parents are outermost, so their children are dropped first
    s2 = base.name("Plora_A").outermost()
    assert s1.names() == []
    assert s2.names() == [n for n in _brute(demo, lambda n, m: n.endswith("Plora_A"))]
    assert str(s1.selector) == "(type:Linear & outermost) & name:/Plora_A/"
    assert str(s2.selector) == "type:Linear & name:/Plora_A/ & outermost"


def test_terminals(demo):
    sel = select(demo).glob("vision_tower.layers.0.mlp.fc*")
    assert sel.names() == ["vision_tower.layers.0.mlp.fc1", "vision_tower.layers.0.mlp.fc2"]
    mods = sel.modules()
    assert list(mods) == sel.names() and all(isinstance(m, nn.Linear) for m in mods.values())
    assert mods["vision_tower.layers.0.mlp.fc1"] is demo.vision_tower.layers[0].mlp.fc1
    assert len(sel) == 2 and sel.count() == 2 and not sel.is_empty()
    assert list(sel) == sel.names()
    assert "vision_tower.layers.0.mlp.fc1" in sel and "lm_head" not in sel and 3 not in sel
    assert sel.assert_count_is(2) is sel
    empty = sel.trainable()
    assert empty.names() == [] and empty.is_empty() and len(empty) == 0 and empty.modules() == {}


def test_regex_is_anchored_and_exact(demo):
    sel = select(demo).linear().trainable().leaf()
    pattern = sel.regex()
    assert pattern.startswith("^") and pattern.endswith("$")
    names = [n for n, _ in demo.named_modules() if n]
    assert [n for n in names if re.fullmatch(pattern, n)] == sel.names()
    assert [n for n in names if re.match(pattern, n)] == sel.names()


def test_selection_is_immutable(demo):
    base = select(demo).linear()
    before = base.names()
    narrowed = base.frozen()
    assert base.names() == before and narrowed.names() != before
    assert str(base.selector) == "linear" and str(narrowed.selector) == "linear & frozen"
    with pytest.raises(AttributeError):
        base.foo = 1


def test_selection_equality_and_query(demo):
    assert select(demo).linear().trainable() == select(demo).linear() & select(demo).trainable()
    assert select(demo).linear() != select(demo).leaf()
    assert select(demo).linear().trainable().query == "linear & trainable"
    assert select(demo).query == "all"


@pytest.mark.parametrize(
    "build, error, message",
    [
        (lambda s: s.type("Lineer"), ts.UnknownNameError, r"no module of DemoVLM \(\d+ modules\) is a 'Lineer'; did you mean `Linear`"),
        (lambda s: s.type("Linear", exact=True).type("PLoRAX"), ts.UnknownNameError, r"is a 'PLoRAX'; did you mean `PLoRA`"),
        (lambda s: s.type(), ts.TargetselError, r"type\(\) needs at least one class"),
        (lambda s: s.type(3), ts.TargetselError, r"type\(\) takes classes or class names, got int 3"),
        (lambda s: s.name("[unclosed"), ts.PatternError, r"invalid regex /\[unclosed/: unterminated character set"),
        (lambda s: s.name(5), ts.PatternError, r"a name pattern must be a string, got int"),
        (lambda s: s.glob("a..b"), ts.PatternError, r"empty segment"),
        (lambda s: s.glob("a.x**.b"), ts.PatternError, r"'\*\*' must be a whole segment"),
        (lambda s: s.glob("a.{3..1}"), ts.PatternError, r"bad numeric range '3..1'"),
        (lambda s: s.glob("a.[bc"), ts.PatternError, r"'\[' at 0 is never closed"),
        (lambda s: s.glob("a.{b,c"), ts.PatternError, r"'\{' is never closed"),
        (lambda s: s.glob("a.b}"), ts.PatternError, r"unmatched '\}'"),
        (lambda s: s.glob(""), ts.PatternError, r"a glob must be a non-empty string"),
        (lambda s: s.under("vison_tower"), ts.UnknownNameError, r"has no module named 'vison_tower'.*did you mean 'vision_tower'"),
        (lambda s: s.under(""), ts.TargetselError, r"under\(\) takes a module name or a Selection"),
        (lambda s: s.under(3), ts.TargetselError, r"under\(\) takes a module name or a Selection"),
        (lambda s: s.layers("5..2"), ts.LayerSpecError, r"the layer range 5..2 is empty; write 2..5"),
        (lambda s: s.layers("x"), ts.LayerSpecError, r"bad layer range 'x'"),
        (lambda s: s.layers(2.5), ts.LayerSpecError, r"cannot read 2.5 as a layer spec"),
        (lambda s: s.layers(True), ts.LayerSpecError, r"cannot be a bool"),
        (lambda s: s.layers(range(0)), ts.LayerSpecError, r"range\(0, 0\) is empty"),
        (lambda s: s.layers(slice(0, 8, 2)), ts.LayerSpecError, r"slices with a step are not supported"),
        (lambda s: s.layers(slice(0, 0)), ts.LayerSpecError, r"selects no block"),
        (lambda s: s.layers(slice("a", None)), ts.LayerSpecError, r"slice bounds must be integers"),
        (lambda s: s.layers(1, within=""), ts.TargetselError, r"layers\(within=...\) names a block container"),
        (lambda s: s.component("visoin"), ts.UnknownNameError, r"unknown component 'visoin'.*did you mean `vision`"),
        (lambda s: s.where(42), ts.TargetselError, r"cannot use int 42 as a selector"),
        (lambda s: s.where(lambda n, m: 1 / 0).names(), ts.TargetselError, r"where\(.*\) raised ZeroDivisionError: division by zero on module 'vision_tower'"),
        (lambda s: s.assert_count_is(3), ts.SelectionError, r"expected 3 selected modules but there are \d+ for 'all'"),
        (lambda s: s.trainable().frozen().regex(), ts.EmptySelectionError, r"the selection 'trainable & frozen' is empty: frozen\(\) kept 0 of \d+ modules"),
        (lambda s: s.to_peft("yaml"), ts.TargetselError, r"unknown form 'yaml'; choose one of auto, list, suffixes, regex"),
    ],
)
def test_bad_input_raises_targetsel_errors(demo, build, error, message):
    with pytest.raises(error, match=message):
        build(select(demo))


@pytest.mark.parametrize("not_a_model", [None, "meta-llama/Llama-3-8B", {"a": 1}, 3, nn.Linear])
def test_select_refuses_non_modules(not_a_model):
    with pytest.raises(ts.NotAModuleError, match=r"select\(\) needs a torch.nn.Module, got"):
        select(not_a_model)


@pytest.mark.parametrize("op", ["&", "|", "-"])
def test_combining_two_models_raises(op):
    a, b = select(models.demo()), select(models.demo())
    with pytest.raises(ts.ModelMismatchError, match=rf"cannot combine selections of two different models with '{re.escape(op)}'"):
        {"&": lambda: a & b, "|": lambda: a | b, "-": lambda: a - b}[op]()
    with pytest.raises(ts.ModelMismatchError):
        a.under(b)


def test_selector_is_model_independent():
    m1, m2 = models.demo(), models.demo()
    s1 = select(m1).linear().trainable()
    assert select(m2, s1.selector).names() == s1.names()
    assert hash(s1.selector) == hash(select(m2).linear().trainable().selector)


def test_where_selector_says_it_cannot_be_serialised(demo):
    def big(name, module):
        return isinstance(module, nn.Linear) and module.out_features > 1000

    sel = select(demo).linear().where(big)
    assert "not serialisable" in str(sel.selector) and "big" in str(sel.selector)
    assert not sel.selector.serialisable
    with pytest.raises(ts.NotSerialisableError, match=r"holds a Python callable \(.*big\) from .where\(fn\)"):
        sel.selector.model_dump_json()
    with pytest.raises(ts.NotSerialisableError):
        sel.selector.to_query()
