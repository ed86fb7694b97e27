"""The one-walk index equals torch's own walks, on built trees and real transformers models."""

from __future__ import annotations

import pytest

import models
from torch import nn

from targetsel import select
from targetsel.model.index import build_index

TREES = {
    "demo": models.demo,
    "twelve_blocks": models.twelve_blocks,
    "suffix_trap": models.suffix_trap,
    "tied_and_shared": models.tied_and_shared,
    "plora": models.plora_model,
    **{f"hf-{t}": (lambda t=t: models.cached_hf_model(t)) for t in models.HF_ARCHS},
}


@pytest.mark.parametrize("tree", list(TREES))
def test_index_matches_named_modules_and_parameters(tree):
    model = TREES[tree]()
    index = build_index(model)
    assert index.names == [n for n, _ in model.named_modules()]
    assert all(a is b for a, (_, b) in zip(index.modules, model.named_modules()))
    assert index.param_names == [n for n, _ in model.named_parameters()]
    counts = index.param_counts().tolist()
    for pos, (name, module) in enumerate(model.named_modules()):
        distinct = {id(p) for _, p in module.named_parameters(remove_duplicate=False)}
        assert counts[pos] == len(distinct), name
    numels = index.param_numels().tolist()
    assert numels[0] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("query, expected", [
    ("layers:0..", ["layers.0", "layers.1"]),
    ("layers:-1", ["layers.1"]),
    ("layers:1", ["layers.1"]),
])
def test_regression_non_ascii_digit_blocks(query, expected):
    """`'¹'.isdigit()` is True but `int('¹')` raised; `layers.٣` counted as block 3 beside `layers.3`."""
    m = nn.Module()
    m.layers = nn.ModuleDict({"0": nn.Linear(2, 2), "1": nn.Linear(2, 2), "¹": nn.Linear(2, 2), "٣": nn.Linear(2, 2)})
    assert select(m, query).names() == expected


def test_memo_computes_once_per_index_and_a_rebuilt_index_starts_fresh():
    from targetsel.model.index import get_index

    model = models.demo()
    index = get_index(model)
    calls = []
    assert index.memo("answer", lambda: calls.append(1) or 41) == 41
    assert index.memo("answer", lambda: calls.append(1) or 42) == 41
    model.extra = nn.Linear(2, 2)  # a registration: the next get_index rebuilds
    fresh = get_index(model)
    assert fresh is not index
    assert fresh.memo("answer", lambda: calls.append(1) or 42) == 42
    assert calls == [1, 1]


@pytest.mark.parametrize("query, before, after", [
    ("leaf", ["0"], ["0", "1"]),  # the leaf mask
    ("layers:-1", ["0"], ["1"]),  # the blocks
    ("linear", ["0"], ["0", "1"]),  # the linear family (memo of model/classes.py)
])
def test_structural_caches_follow_a_changed_model(query, before, after):
    model = nn.Sequential(nn.Linear(2, 2))
    assert select(model, query).names() == before
    model.append(nn.Linear(2, 2))
    assert select(model, query).names() == after


def test_aliases_are_the_other_names_of_a_module_listed_once():
    index = build_index(models.tied_and_shared())
    assert {index.names[p]: names for p, names in index.aliases().items()} == {"a.proj": ["b.proj"]}
    assert build_index(models.demo()).aliases() == {}
