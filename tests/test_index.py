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
