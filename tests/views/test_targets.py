"""The integer-key fast path of `views/targets.py` (`suffix_keys`) against the string functions it
replaces: PEFT's list rule and the minimal suffix lists, on models built to trap suffix matching."""

from __future__ import annotations

import pytest

import models
import trainer_models
from targetsel import select
from targetsel.model.index import get_index
from targetsel.views.targets import _build_suffix_keys, _dotted_suffixes, list_matches, minimal_suffixes, suffix_keys

MODELS = {
    "demo": models.demo,
    "twelve_blocks": models.twelve_blocks,
    "suffix_trap": models.suffix_trap,
    "tied_and_shared": models.tied_and_shared,
    "plora": models.plora_model,
    "per_expert_moe": trainer_models.per_expert_moe,
    "llava": trainer_models.llava,
}
QUERIES = ["linear", "glob:**.q_proj", "linear - glob:**.q_proj", "leaf", "layers:0..1", "frozen | glob:**.mlp*",
           "glob:**.attn.q_proj", "all"]


@pytest.fixture(scope="module")
def built():
    return {name: build() for name, build in MODELS.items()}


def _entries(names: list[str]) -> list[str]:
    """Every name, every dotted suffix of one in three, and entries no name has."""
    found = list(names[1:])
    for name in names[1::3]:
        found.extend(_dotted_suffixes(name))
    return found + ["", "nothing", "q_proj.extra", ".q_proj", "layers.99.attn"]


@pytest.mark.parametrize("model_name", MODELS)
def test_keys_follow_peft_s_list_rule(built, model_name):
    index = get_index(built[model_name])
    keys = suffix_keys(index)
    assert keys is not None
    entries = _entries(index.names)
    for chunk in (entries, entries[:1], entries[-5:], entries[::7]):
        # the root ("") is left to the string functions (candidate_forms never asks the keys about it)
        assert keys.list_matches(chunk)[1:] == list_matches(chunk, index.names)[1:]
        assert keys.list_matches(chunk)[0] is False


@pytest.mark.parametrize("model_name", MODELS)
def test_keys_give_the_same_minimal_suffixes(built, model_name):
    compared = 0
    for query in QUERIES:
        res = select(built[model_name], query).resolution()
        if not res.names or bool(res.mask[0]):
            continue  # empty, or the root selected: candidate_forms uses the string functions there
        names, mask = res.index.names, res.mask.tolist()
        by_strings = minimal_suffixes(res.names, names, mask)
        assert suffix_keys(res.index).minimal_suffixes(names, res.mask) == by_strings, query
        if by_strings is not None:  # and the list is exact under PEFT's rule
            assert list_matches(by_strings, names)[1:] == mask[1:], query
        compared += 1
    assert compared >= 4


@pytest.mark.parametrize("names, parents", [
    (["", "a.b"], [-1, 0]),                 # a dotted prefix that is no module name (a wrapper dropped a segment)
    (["", "a", "x.b"], [-1, 0, 1]),         # a name that is not its parent's name and a leaf
    (["", "a", "a.b", ""], [-1, 0, 1, 0]),  # a second empty name
    (["", "a", "b"], [-1, 0, 1]),           # no dot, yet not a child of the root
    (["", ".b"], [-1, 0]),                  # an empty first segment
    (["", "a", "a."], [-1, 0, 1]),          # an empty leaf
    (["", "a.b", "a"], [-1, 2, 0]),         # a prefix listed after its extension
])
def test_names_the_keys_cannot_describe_fall_back_to_strings(names, parents):
    assert _build_suffix_keys(names, parents) is None


def test_names_the_keys_can_describe_are_keyed():
    keys = _build_suffix_keys(["", "a", "a.b", "c"], [-1, 0, 1, 0])
    assert keys is not None and keys.depth.tolist() == [0, 1, 2, 1]
    assert keys.list_matches(["b"]) == [False, False, True, False]
