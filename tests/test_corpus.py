"""50 real transformers architectures × a table of queries (issue 4): every compiled form of every
non-empty selection makes the installed PEFT target exactly `names()`, and targetsel's O(N) list rule
agrees with PEFT's own `check_target_module_exists` on every model."""

from __future__ import annotations

import pytest
from peft import LoraConfig
from peft.tuners.tuners_utils import check_target_module_exists

import corpus
import targetsel as ts
from targetsel import select, verify
from targetsel.compile import list_matches
from targetsel.verify import prepare_config

FORMS = ("list", "suffixes", "regex", "auto")


def rewritten_by_peft(model, value) -> bool:
    """Does PEFT rewrite these targets before matching (its transformers-5 MoE conversion)?"""
    before = value if isinstance(value, str) else set(value)
    after = prepare_config(model, LoraConfig(target_modules=value)).target_modules
    return (after != before) if isinstance(after, str) or isinstance(before, str) else set(after) != before


def exact_forms(model, sel) -> dict:
    """form → True (PEFT selects exactly names()), None (targetsel refused the form as inexact), or
    "rewritten" (PEFT's MoE conversion rewrote the targets: patch() then picks another form or refuses)."""
    names = sel.names()
    out = {}
    for form in FORMS:
        try:
            value = sel.to_peft(form)
        except ts.SelectionError:
            assert form in ("list", "suffixes")  # regex and auto are always available
            out[form] = None
            continue
        exact = verify(model, LoraConfig(target_modules=value)) == names
        out[form] = True if exact else ("rewritten" if rewritten_by_peft(model, value) else False)
    return out


@pytest.mark.parametrize("model_type, family", corpus.ARCHS, ids=[t for t, _ in corpus.ARCHS])
def test_every_query_compiles_exactly(model_type, family):
    model = corpus.cached(model_type)
    non_empty = 0
    for query in corpus.QUERIES:
        sel = select(model, query)
        if sel.is_empty():
            continue
        non_empty += 1
        results = exact_forms(model, sel)
        assert all(ok in (True, None, "rewritten") for ok in results.values()), (query, results)
        if family != "moe":
            assert "rewritten" not in results.values(), (query, results)
    assert non_empty >= 5, f"{model_type}: only {non_empty} of {len(corpus.QUERIES)} queries select anything"


@pytest.mark.parametrize("model_type, family", corpus.ARCHS, ids=[t for t, _ in corpus.ARCHS])
def test_frozen_tower_selection_is_exact(model_type, family):
    model = corpus.build(model_type)
    frozen = corpus.freeze_a_tower(model)
    sel = select(model, corpus.FROZEN_QUERY)
    assert not sel.is_empty()
    assert all(ok in (True, None, "rewritten") for ok in exact_forms(model, sel).values())
    if frozen in ("vision", "audio"):
        assert not set(sel.names()) & set(select(model).component(frozen).names())


@pytest.mark.parametrize("model_type, family", corpus.ARCHS, ids=[t for t, _ in corpus.ARCHS])
def test_o_n_list_rule_agrees_with_peft(model_type, family):
    model = corpus.cached(model_type)
    names = [n for n, _ in model.named_modules()]
    leaves = [n.rsplit(".", 1)[-1] for n in names if n]
    lists = [
        ["q_proj", "v_proj", "fc1", "dense", "c_attn", "query", "value"],
        sorted(set(leaves))[:25],
        [n for n in names if n][:3] + [".".join(n.split(".")[-2:]) for n in names if n.count(".") >= 2][:5],
    ]
    for entries in lists:
        config = LoraConfig(target_modules=entries)
        peft_says = [bool(n) and bool(check_target_module_exists(config, n)) for n in names]
        ours = [bool(n) and m for n, m in zip(names, list_matches(entries, names))]
        assert ours == peft_says, entries


def test_regression_moe_conversion_regex_loses_the_layer_restriction():
    """Found by the corpus: peft 0.21 resolves a regex target to bare leaf names on transformers-5 MoE
    models, so `^model\.layers\.0\...$` adapts every layer. patch() falls back to a form PEFT keeps."""
    import warnings

    from peft import get_peft_model

    import models

    model = corpus.build("mixtral")
    sel = select(model, "linear & layers:0")
    names = sel.names()
    assert rewritten_by_peft(model, sel.to_peft("regex"))
    config = ts.patch(LoraConfig(), sel)
    assert verify(model, config) == names
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert models.wrapped_names(get_peft_model(model, config)) == names


def test_regression_deepseek_dense_mlp_cannot_be_targeted_exactly():
    """Found by the corpus: peft 0.21 maps every *_proj MLP target of DeepSeek-V3 to fused expert
    parameters, so the dense MLP layers cannot be adapted through target_modules; patch() says so."""
    model = corpus.build("deepseek_v3")
    with pytest.raises(ts.ConfigError, match=r"rewrites target_modules for 'deepseek_v3' models .* 6 selected module\(s\) would not be targeted: model\.layers\.\{0,1\}\.mlp\.\{gate,up,down\}_proj"):
        ts.patch(LoraConfig(), select(model, "linear & glob:**.mlp.*_proj"))


def test_the_corpus_is_varied():
    families = {}
    for model_type, family in corpus.ARCHS:
        families.setdefault(family, []).append(model_type)
    assert len(corpus.ARCHS) >= 40
    assert {f: len(v) >= 3 for f, v in families.items()} == {f: True for f in families}
