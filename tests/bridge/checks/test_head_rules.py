"""The `output-head` rule finds heads tied to an embedding from structure, with or without `get_input_embeddings()`."""

from __future__ import annotations

import re

import pytest
import torch
from peft import LoraConfig
from torch import nn

import models
from targetsel import check, select
from targetsel.bridge.checks.head_rules import embedding_ties as _embedding_ties
from targetsel.model.index import get_index


def _plain_tied() -> nn.Module:
    """No get_input_embeddings / get_output_embeddings: the head's weight *is* the embedding's."""
    with torch.device("meta"):
        m = nn.Module()
        m.emb = nn.Embedding(10, 4)
        m.body = nn.Linear(4, 4)
        m.head = nn.Linear(4, 10, bias=False)
        m.head.weight = m.emb.weight
    return m


def _plain_untied() -> nn.Module:
    with torch.device("meta"):
        m = nn.Module()
        m.emb = nn.Embedding(10, 4)
        m.body = nn.Linear(4, 4)
        m.head = nn.Linear(4, 10, bias=False)
    return m


class _Projection(nn.Module):
    """Holds the embedding matrix under its own parameter name."""

    def __init__(self, weight: nn.Parameter):
        super().__init__()
        self.vocab = weight


def _nested_tie_other_name() -> nn.Module:
    with torch.device("meta"):
        m = nn.Module()
        m.decoder = nn.Module()
        m.decoder.tokens = nn.Embedding(10, 4)
        m.decoder.fc = nn.Linear(4, 4)
        m.out = nn.Module()
        m.out.proj = _Projection(m.decoder.tokens.weight)
    return m


def _two_embeddings_one_weight() -> nn.Module:
    """An encoder's and a decoder's embedding share one matrix (T5 style): both are inputs, not heads."""
    with torch.device("meta"):
        m = nn.Module()
        m.enc = nn.Embedding(10, 4)
        m.dec = nn.Embedding(10, 4)
        m.dec.weight = m.enc.weight
        m.fc = nn.Linear(4, 4)
    return m


class _CustomEmbedding(nn.Module):
    """An input embedding that is not an nn.Embedding; only get_input_embeddings() names it."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(10, 4))


class _CustomEmbeddingModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.tokens = _CustomEmbedding()
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.tokens.weight

    def get_input_embeddings(self):
        return self.tokens


def _custom_embedding_model() -> nn.Module:
    with torch.device("meta"):
        return _CustomEmbeddingModel()


def _llama(tied: bool):
    return lambda: models.hf_model("llama", tie_word_embeddings=tied)


def _t5():
    """encoder.embed_tokens and decoder.embed_tokens are Embeddings of their own sharing `shared.weight`."""
    return models.hf_model("t5")


# (id, model factory, target(model), expected modules (None: no finding), message regex)
CASES = [
    ("transformers-tied-head", _llama(True), lambda m: select(m, "glob:lm_head"), ("lm_head",),
     r"^The output head lm_head is selected \(its weight is tied to model\.embed_tokens\.weight\): an adapter there "
     r"re-learns the vocabulary projection rather than the model's behaviour\. LoRA at r=8 adds 8×\(4096\+32000\) = "
     r"288,768 parameters there\. Because the weight is shared, merging the adapter changes the input embeddings too\. "
     r"Leave it out \(- glob:lm_head; \.linear\(\) never selects the head\), unless you mean to adapt the output layer\.$"),
    ("transformers-untied-head", _llama(False), lambda m: select(m, "glob:lm_head"), ("lm_head",),
     r"^The output head lm_head is selected: an adapter there re-learns the vocabulary projection rather than the "
     r"model's behaviour\. LoRA at r=8 adds .* parameters there\. Leave it out \(- glob:lm_head; \.linear\(\) never"),
    ("transformers-excludes-head", _llama(True), lambda m: select(m, "linear"), None, None),
    ("transformers-shared-embeddings-are-no-head", _t5, lambda m: select(m, "type:Embedding"), None, None),
    ("transformers-t5-tied-head", _t5, lambda m: select(m, "glob:lm_head"), ("lm_head",),
     r"^The output head lm_head is selected \(its weight is tied to shared\.weight\)"),
    ("plain-structural-tie", _plain_tied, lambda m: select(m, "type:Linear"), ("head",),
     r"^A module holding an embedding's weight is selected: head \(its weight is tied to emb\.weight\): an adapter "
     r"there re-learns the vocabulary projection rather than the model's behaviour\. LoRA at r=8 adds 8×\(4\+10\) = 112 "
     r"parameters there\. Because the weight is shared, merging the adapter changes the input embeddings too\. "
     r"Leave it out \(- glob:head\), unless you mean to adapt the output layer\.$"),
    ("plain-structural-tie-from-config", _plain_tied, lambda m: LoraConfig(target_modules=["head", "body"]), ("head",),
     r"\(its weight is tied to emb\.weight\).*Leave it out of target_modules \(exclude_modules=\['head'\]\)"),
    ("plain-structural-tie-linear", _plain_tied, lambda m: select(m, "linear"), ("head",), r"^A module holding"),
    ("plain-no-tie", _plain_untied, lambda m: select(m, "type:Linear"), None, None),
    ("plain-tie-head-left-out", _plain_tied, lambda m: select(m, "type:Linear - glob:head"), None, None),
    ("plain-tie-embedding-itself", _plain_tied, lambda m: select(m, "type:Embedding"), None, None),
    ("nested-tie-other-param-name", _nested_tie_other_name, lambda m: select(m, "glob:**.proj"), ("out.proj",),
     r"^A module holding an embedding's weight is selected: out\.proj \(its vocab is tied to decoder\.tokens\.weight\)"),
    ("shared-embedding-weight-is-no-head", _two_embeddings_one_weight, lambda m: select(m, "type:Embedding | linear"),
     None, None),
    ("tie-to-custom-input-embedding", _custom_embedding_model, lambda m: select(m, "glob:head"), ("head",),
     r"^A module holding an embedding's weight is selected: head \(its weight is tied to tokens\.weight\)"),
]


@pytest.mark.parametrize("make, target, modules, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_output_head(make, target, modules, message):
    model = make()
    found = [f for f in check(model, target(model)) if f.code == "output-head"]
    if modules is None:
        assert found == []
        return
    [finding] = found
    assert finding.severity == "warning"
    assert finding.modules == modules
    assert re.search(message, finding.message, re.S), finding.message


def test_ties_are_read_from_the_index_once():
    model = _plain_tied()
    index = get_index(model)
    ties = _embedding_ties(index)
    assert ties == {index.position("head"): (index.position("emb"), "weight")}
    check(model, "type:Linear")
    assert _embedding_ties(get_index(model)) is ties  # cached with the index: no new walk per check


def test_tying_after_a_check_is_seen():
    model = _plain_untied()
    assert [f for f in check(model, "glob:head") if f.code == "output-head"] == []
    model.head.weight = model.emb.weight  # a parameter registration: the index is rebuilt
    [finding] = [f for f in check(model, "glob:head") if f.code == "output-head"]
    assert finding.modules == ("head",)
