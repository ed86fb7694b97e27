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


class _EqualByValue(nn.Module):
    """A module class with value equality: `named_modules()` skips one equal to a module already listed."""

    def __eq__(self, other):
        return type(other) is type(self)

    def __hash__(self):
        return 0


def _shared_block() -> nn.Module:
    m = nn.Module()
    block = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    m.first, m.second = block, block  # a module with a subtree at two places: its children get two names too
    return m


def _shared_inside_equal() -> nn.Module:
    m = nn.Module()
    shared = nn.Linear(2, 2)
    m.a, m.b = _EqualByValue(), _EqualByValue()  # b is skipped with its subtree, as named_modules() does
    m.a.x = nn.Linear(2, 2)
    m.b.x = shared
    m.c = shared
    return m


ALIAS_TREES = {"demo": models.demo, "twelve_blocks": models.twelve_blocks, "tied_and_shared": models.tied_and_shared,
               "shared_block": _shared_block, "shared_inside_equal": _shared_inside_equal, "hf-llama": lambda: models.cached_hf_model("llama")}


@pytest.mark.parametrize("tree, has_shared", [("demo", False), ("twelve_blocks", False), ("hf-llama", False),
                                              ("tied_and_shared", True), ("shared_block", True), ("shared_inside_equal", True)])
def test_aliases_equal_named_modules_without_deduplication(tree, has_shared):
    model = ALIAS_TREES[tree]()
    index = build_index(model)
    by_id: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        by_id.setdefault(id(module), []).append(name)
    expected = {pos: [n for n in by_id[id(m)] if n != index.names[pos]] for pos, m in enumerate(index.modules)
                if len(by_id[id(m)]) > 1}
    # Models where every registration leads to a new module skip the second walk; the answer is the same.
    assert index._met_listed is has_shared
    assert index.aliases() == expected
    assert bool(expected) is has_shared  # each shared tree does give a module a second name
