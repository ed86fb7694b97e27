"""Property tests against PEFT: random module trees × random selectors.

Trees mix numbered blocks, the same leaf name at several depths, names that are dotted suffixes of
other names, tied parameters, frozen and partly frozen subtrees and Linear subclasses. Selectors
are built with the fluent chain and, when serialisable, re-built from their query string. For every
pair: each compiled form of `to_peft()` makes PEFT's own `check_target_module_exists` select
exactly `names()`; and for the wrappable part (`& linear & leaf`), `patch()` + a real
`get_peft_model` wraps exactly those modules.

Profiles (tests/conftest.py): "ci" runs 40 examples per property; TARGETSEL_PROFILE=slow runs
10,000 (the README reports that run).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import assume, given, note, settings
from hypothesis import strategies as st
from peft import LoraConfig, get_peft_model
from peft.tuners.tuners_utils import check_target_module_exists
from torch import nn

import models
import targetsel as ts
from targetsel import parse, patch, select, verify


class SubLinear(nn.Linear):
    """A Linear subclass that adds nothing: PEFT wraps it like a Linear."""


WORDS = ["q_proj", "k_proj", "attn", "mlp", "block", "fc", "a", "layers", "proj", "out"]
LEAF_KINDS = ["linear", "linear", "linear", "sub", "norm", "emb"]


def _leaf(kind: str) -> nn.Module:
    if kind == "linear":
        return nn.Linear(4, 4)
    if kind == "sub":
        return SubLinear(4, 4)
    if kind == "norm":
        return nn.LayerNorm(4)
    return nn.Embedding(5, 4)


leaves = st.sampled_from(LEAF_KINDS).map(lambda k: ("leaf", k))
trees = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.dictionaries(st.sampled_from(WORDS), inner, min_size=1, max_size=4).map(lambda d: ("module", d)),
        st.lists(inner, min_size=1, max_size=4).map(lambda xs: ("list", xs)),
    ),
    max_leaves=14,
)


def build(spec) -> nn.Module:
    kind, body = spec
    if kind == "leaf":
        return _leaf(body)
    if kind == "list":
        return nn.ModuleList(build(s) for s in body)
    m = nn.Module()
    for name, child in body.items():
        m.add_module(name, build(child))
    return m


@st.composite
def models_(draw):
    spec = draw(st.dictionaries(st.sampled_from(WORDS), trees, min_size=1, max_size=4))
    with torch.device("meta"):
        model = build(("module", spec))
    named = [(n, m) for n, m in model.named_modules() if n]
    # frozen and partly frozen subtrees
    for i in draw(st.lists(st.integers(0, len(named) - 1), max_size=3)):
        named[i][1].requires_grad_(False)
    # a tied parameter: one Linear's weight is another's
    linears = [m for _, m in named if type(m) in (nn.Linear, SubLinear)]
    if len(linears) >= 2 and draw(st.booleans()):
        a, b = draw(st.permutations(linears))[:2]
        b.weight = a.weight
    return model


def selectors(model):
    names = [n for n, _ in model.named_modules() if n]
    atoms = st.sampled_from([
        lambda s: s.trainable(), lambda s: s.frozen(), lambda s: s.mixed(), lambda s: s.linear(),
        lambda s: s.leaf(), lambda s: s.outermost(), lambda s: s.type(nn.Linear),
        lambda s: s.type("SubLinear"), lambda s: s.type(nn.Linear, exact=True),
    ]) | st.sampled_from(WORDS).map(lambda w: (lambda s: s.name(w))) \
       | st.sampled_from(WORDS).map(lambda w: (lambda s: s.glob(f"**.{w}"))) \
       | st.sampled_from(names).map(lambda n: (lambda s: s.under(n) if s.model.get_submodule(n)._modules else s.glob(n))) \
       | st.integers(-3, 3).map(lambda i: (lambda s: s.layers(i)))
    return st.recursive(
        atoms,
        lambda inner: st.one_of(
            st.tuples(inner, inner).map(lambda p: (lambda s: p[0](s) & p[1](s))),
            st.tuples(inner, inner).map(lambda p: (lambda s: p[0](s) | p[1](s))),
            st.tuples(inner, inner).map(lambda p: (lambda s: p[0](s) - p[1](s))),
            inner.map(lambda f: (lambda s: ~f(s))),
        ),
        max_leaves=5,
    )


def _safe_build(model, build_sel):
    try:
        return build_sel(select(model))
    except ts.UnknownNameError:  # e.g. type:SubLinear on a tree without one: a correct refusal
        return None


def _peft_selects(model, target_modules) -> list[str]:
    config = LoraConfig(target_modules=target_modules)
    return [n for n, _ in model.named_modules() if n and check_target_module_exists(config, n)]


@given(st.data())
def test_every_compiled_form_selects_exactly_under_peft(data):
    model = data.draw(models_())
    sel = _safe_build(model, data.draw(selectors(model)))
    if sel is None:
        return
    names = sel.names()
    note(f"query={sel.query!r} names={names}")
    # the query string builds the same selection
    assert select(model, str(sel.selector)).names() == names
    assert parse(str(sel.selector)) == sel.selector
    if not names:
        return
    for form in ("suffixes", "regex", "auto"):
        try:
            value = sel.to_peft(form)
        except ts.SelectionError:  # 'suffixes' legitimately has no exact answer on suffix traps
            assert form == "suffixes"
            continue
        assert _peft_selects(model, value) == names, form
    try:
        value = sel.to_peft("list")
    except ts.SelectionError:
        assert _peft_selects(model, names) != names  # refused only when a full-name list over-matches
    else:
        assert _peft_selects(model, value) == names


@given(st.data())
def test_patch_then_get_peft_model_wraps_exactly_the_selection(data):
    model = data.draw(models_())
    sel = _safe_build(model, data.draw(selectors(model)))
    if sel is None:
        return
    wrappable = sel.linear().leaf()
    names = wrappable.names()
    note(f"query={wrappable.query!r} names={names}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not names:
            try:
                patch(LoraConfig(r=2), wrappable)
            except ts.EmptySelectionError:
                return
            raise AssertionError("an empty selection was patched")
        config = patch(LoraConfig(r=2), wrappable)
        assert verify(model, config) == names
        peft_model = get_peft_model(model, config)
    assert models.wrapped_names(peft_model) == names


# ---------------------------------------------------------------- globs
# A glob is drawn as pieces, each rendered twice: as glob text and as text of a name it matches.
PIECE_TEXT = st.text(alphabet="qkv_proj01", max_size=4)
pieces = st.one_of(
    st.text(alphabet="qkv_proj01", min_size=1, max_size=5).map(lambda s: (s, st.just(s))),
    st.just(("*", PIECE_TEXT)),
    st.just(("?", st.sampled_from("qk_0"))),
    st.just(("[qk]", st.sampled_from("qk"))),
    st.just(("{q,k_v}", st.sampled_from(["q", "k_v"]))),
    st.tuples(st.integers(0, 12), st.integers(0, 12)).map(sorted).map(
        lambda r: (f"{{{r[0]}..{r[1]}}}", st.integers(r[0], r[1]).map(str))),
)
SEGMENT = st.text(alphabet="qkv_proj01", min_size=1, max_size=4)


@st.composite
def globs_with_a_match(draw):
    glob_segments, name_segments = [], []
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.integers(0, 4)) == 0:
            glob_segments.append("**")
            name_segments += draw(st.lists(SEGMENT, max_size=2))
            continue
        drawn = draw(st.lists(pieces, min_size=1, max_size=3))
        assume("**" not in "".join(g for g, _ in drawn))  # '**' is only valid as a whole segment
        glob_segments.append("".join(g for g, _ in drawn))
        name_segments.append("".join(draw(text) for _, text in drawn))
    glob = ".".join(glob_segments)
    name = ".".join(name_segments)
    return glob, name


@given(globs_with_a_match(), st.lists(st.lists(SEGMENT, min_size=1, max_size=4).map(".".join), max_size=8))
def test_glob_literal_prefilter_never_drops_a_match(glob_and_name, others):
    from targetsel.query.globs import compile_glob, glob_literal

    glob, name = glob_and_name
    full = compile_glob(glob).fullmatch
    literal = glob_literal(glob)
    # empty segments ('**' matching nothing, '*' matching '') make some drawn names invalid
    if name and "" not in name.split("."):
        assert full(name), (glob, name)
    for candidate in [name, *others]:
        if full(candidate):
            assert literal in candidate, (glob, literal, candidate)


@pytest.mark.parametrize("glob, names", [
    ("**.**", ["fc1", "a.fc1", "a.b.c"]),
    ("**.**.fc1", ["fc1", "a.fc1", "a.b.fc1"]),
    ("a.**.**.fc1", ["a.fc1", "a.b.fc1", "a.b.c.fc1"]),
    ("**.**.**", ["fc1", "a.b.c.d"]),
])
def test_regression_repeated_doublestar_glob(glob, names):
    """Found by test_glob_literal_prefilter_never_drops_a_match: `**.**` used to match no name."""
    model = nn.Module()
    for name in names:
        parent = model
        *path, leaf = name.split(".")
        for part in path:
            if not hasattr(parent, part):
                parent.add_module(part, nn.Module())
            parent = getattr(parent, part)
        parent.add_module(leaf, nn.Linear(2, 2, device="meta"))
    single = glob.replace("**.**.", "**.").replace("**.**", "**").replace("**.**", "**")
    assert select(model).glob(glob).names() == select(model).glob(single).names()
    assert set(names) <= set(select(model).glob(glob).names())


# ---------------------------------------------------------------- judged by real injection
# tests/oracle.py runs a real get_peft_model on a fresh copy of the drawn model and reads what was
# adapted off the tree. Each `to_peft` form is judged on matching (`wrap_any`: norms, embeddings'
# neighbours and containers get stand-in layers), against the ideal target — the alternation of
# the selected full names — which fails only when the selection itself cannot be injected
# (a LoRA-wrappable module with a selected descendant: PEFT crashes reaching the inner one).


def _ideal(names: list[str]) -> str:
    import re

    return "^(?:" + "|".join(re.escape(n) for n in names) + ")$"


# A few real injections per example: fewer examples by default, the profile's count under -m slow.
ORACLE_EXAMPLES = min(settings.default.max_examples, 15)
ORACLE_EXAMPLES_SLOW = max(settings.default.max_examples, 1000)


@settings(max_examples=ORACLE_EXAMPLES)
@given(st.data())
def test_every_compiled_form_is_exact_under_real_injection(data):
    _judge_by_real_injection(data)


@pytest.mark.slow
@settings(max_examples=ORACLE_EXAMPLES_SLOW)
@given(st.data())
def test_every_compiled_form_is_exact_under_real_injection_slow(data):
    _judge_by_real_injection(data)


def _judge_by_real_injection(data):
    import copy

    import oracle

    model = data.draw(models_())
    sel = _safe_build(model, data.draw(selectors(model)))
    if sel is None or not sel.names():
        return
    names = sel.names()
    note(f"query={sel.query!r} names={names}")
    fresh = lambda: copy.deepcopy(model)  # noqa: E731 - the drawn model itself is never injected into
    ideal = oracle.peft_adapts(fresh, LoraConfig(target_modules=_ideal(names)), wrap_any=True)
    for form in ("list", "suffixes", "regex", "auto"):
        try:
            value = sel.to_peft(form)
        except ts.TargetselError as exc:
            assert form in ("list", "suffixes"), (form, exc)
            continue
        adapted = oracle.peft_adapts(fresh, LoraConfig(target_modules=value), wrap_any=True)
        note(f"{form}: {value!r} → {adapted.describe()}")
        if ideal.error:  # not injectable as a whole: the form must fail the same way
            assert adapted.error_type == ideal.error_type, (form, adapted.error, ideal.error)
            continue
        assert adapted.error is None, (form, adapted.error)
        assert list(adapted.modules) == names and adapted.parameters == (), form
    wrappable = sel.linear().leaf()
    if not wrappable.names():
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = patch(LoraConfig(r=2), wrappable)
    adapted = oracle.peft_adapts(fresh, config)
    assert adapted.error is None, adapted.error
    assert list(adapted.modules) == wrappable.names() and adapted.parameters == ()
