"""The component rules one at a time, on small models built to isolate each (issue 18, part 1).

Every model is a plain `nn.Module` on the meta device: a vision tower (found by its name, as for any
model without a transformers config) of width 8 with a stack of two blocks, a language model of
width 16 whose input embedding `get_input_embeddings()` returns, and the parts under test.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from targetsel.model import towers as T
from targetsel.model.components import component_roots
from targetsel.model.index import get_index

W, TW = 16, 8  # the language model's width, the tower's width


class Block(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.attn = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)


class Tower(nn.Module):
    def __init__(self, d, front=(), tail=()):
        super().__init__()
        for name, module in front:
            setattr(self, name, module)
        self.layers = nn.ModuleList(Block(d) for _ in range(2))
        for name, module in tail:
            setattr(self, name, module)


class LM(nn.Module):
    def __init__(self, d, vocab=100):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(Block(d) for _ in range(2))
        self.norm = nn.LayerNorm(d)


class Toy(nn.Module):
    def __init__(self, parts=(), front=(), tail=(), tower_width=TW, embedding=True):
        super().__init__()
        self.vision_tower = Tower(tower_width, front, tail)
        for name, module in parts:
            setattr(self, name, module)
        self.language_model = LM(W)
        self.lm_head = nn.Linear(W, 100, bias=False)
        self._embedding = embedding

    def get_input_embeddings(self):
        return self.language_model.embed_tokens if self._embedding else None

    def get_output_embeddings(self):
        return self.lm_head if self._embedding else None


class Matrix(nn.Module):
    """A bare projection matrix used as x @ weight (Gemma3's multi_modal_projector)."""

    def __init__(self, a, b):
        super().__init__()
        self.mm_input_projection_weight = nn.Parameter(torch.empty(a, b))
        self.norm = nn.LayerNorm(a)


def L(a, b):
    return nn.Linear(a, b)


CASES = [
    # rule 1: maps the tower's width into the LM's
    ("maps-into", dict(parts=[("mm_projector", L(TW, W))]), ["mm_projector"]),
    ("any-name-maps-into", dict(parts=[("blob", nn.Sequential(L(TW, 32), nn.GELU(), L(32, W)))]), ["blob"]),
    ("bare-matrix", dict(parts=[("multi_modal_projector", Matrix(TW, W))]), ["multi_modal_projector"]),
    ("bare-matrix-transposed", dict(parts=[("blob", Matrix(W, TW))]), ["blob"]),
    # a part next to the towers that does not reach the LM width is in no component
    ("elsewhere", dict(parts=[("mm_projector", L(TW, W)), ("generation_head", L(W, 50))]), ["mm_projector"]),
    # rule 2: input already that wide — the name decides
    ("wide-named", dict(parts=[("mm_projector", L(TW, W)), ("connector", L(W, W))]), ["mm_projector", "connector"]),
    ("wide-unnamed", dict(parts=[("mm_projector", L(TW, W)), ("blob", L(W, W))]), ["mm_projector"]),
    # rule 3: the part just before a projector, whose output it reads
    ("feeder", dict(parts=[("qformer", L(TW, 12)), ("language_projection", L(12, W))]), ["qformer", "language_projection"]),
    ("feeder-chain", dict(parts=[("a", L(TW, 10)), ("b", L(10, 12)), ("c", L(12, W))]), ["a", "b", "c"]),
    ("not-adjacent", dict(parts=[("a", L(TW, 12)), ("gap", L(3, 3)), ("c", L(12, W))]), ["c"]),
    ("width-mismatch", dict(parts=[("a", L(TW, 11)), ("c", L(12, W))]), ["c"]),
    ("table-feeds-nothing", dict(parts=[("embeddings", nn.Embedding(50, 12)), ("c", L(12, W))]), ["c"]),
    # (b) a tower's tail
    ("tail", dict(tail=[("merger", L(4 * TW, W))]), ["vision_tower.merger"]),
    ("tail-any-name", dict(tail=[("patch_merger", nn.Sequential(nn.Conv2d(TW, 32, 1), L(32, W)))]),
     ["vision_tower.patch_merger"]),
    ("tail-table", dict(tail=[("bos_eos", nn.Embedding(2, W)), ("merger", L(TW, W))]), ["vision_tower.merger"]),
    ("tail-two-stage", dict(tail=[("proj1", L(TW, TW)), ("proj2", L(TW, W))]), ["vision_tower.proj1", "vision_tower.proj2"]),
    ("tail-front-end", dict(tail=[("conv_out", L(24, TW)), ("proj1", L(TW, TW)), ("proj2", L(TW, W))]),
     ["vision_tower.proj1", "vision_tower.proj2"]),
    ("tail-neck", dict(tail=[("neck", nn.Sequential(L(TW, TW), L(TW, TW))), ("proj", L(TW, W))]), ["vision_tower.proj"]),
    # a tower as wide as the LM: only a projector-named child after its blocks
    ("wide-tower", dict(tower_width=W, front=[("feature_projection", L(4, W))], tail=[("adapter", L(W, W)), ("post", L(W, W))]),
     ["vision_tower.adapter"]),
    # nothing reaches the LM width (a default config pairing mismatched checkpoints): names decide
    ("names-fallback", dict(tail=[("merger", L(4 * TW, 12))], parts=[("other", L(TW, 12))]), ["vision_tower.merger"]),
    ("names-fallback-outside", dict(parts=[("mm_projector", L(TW, 12)), ("other", L(TW, 12))]), ["mm_projector"]),
]


@pytest.mark.parametrize("case, kwargs, expected", CASES, ids=[c for c, *_ in CASES])
def test_projector_rules(case, kwargs, expected):
    with torch.device("meta"):
        model = Toy(**kwargs)
    roots = component_roots(get_index(model))
    assert roots["projector"] == expected
    assert roots["vision"] == ["vision_tower"] and roots["language"] == ["language_model"] and roots["head"] == ["lm_head"]


def test_without_an_embedding_the_width_is_the_language_models_blocks():
    with torch.device("meta"):
        model = Toy(parts=[("blob", L(TW, W)), ("other", L(3, 5))], embedding=False)
    roots = component_roots(get_index(model))
    assert roots["projector"] == ["blob"] and roots["language"] == ["language_model"]
    assert roots["head"] == []  # no getter answers: no head, and lm_head is no projector either


class Shared(nn.Module):
    """A language model with a second decoder reading the same token table, and a tower inside it."""

    def __init__(self):
        super().__init__()
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(100, W)
        self.model.layers = nn.ModuleList(Block(W) for _ in range(2))
        self.model.vision_tower = Tower(TW)
        self.model.img_projection = L(TW, W)
        self.model.norm = nn.LayerNorm(W)
        self.decoder = nn.Module()
        self.decoder.embed_tokens = nn.Embedding(100, W)
        self.decoder.embed_tokens.weight = self.model.embed_tokens.weight
        self.decoder.layers = nn.ModuleList(Block(W) for _ in range(2))
        self.decoder.self_conditioning = L(W, W)
        self.lm_head = nn.Linear(W, 100, bias=False)

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def get_output_embeddings(self):
        return self.lm_head


def test_language_is_cut_around_a_tower_and_takes_a_tied_decoder():
    with torch.device("meta"):
        model = Shared()
    roots = component_roots(get_index(model))
    assert roots == {
        "vision": ["model.vision_tower"], "audio": [],
        "language": ["model.embed_tokens", "model.layers", "model.norm", "decoder"],
        "projector": ["model.img_projection"], "head": ["lm_head"],
    }


@pytest.mark.parametrize("attr, kind", [
    ("vision_config", "vision"), ("high_res_vision_config", "vision"), ("vq_config", "vision"),
    ("audio_config", "audio"), ("codec_config", "audio"), ("acoustic_tokenizer_encoder_config", "audio"),
    ("semantic_tokenizer_encoder_config", "audio"), ("text_config", "language"), ("decoder", "language"),
    ("decoder_config", "language"), ("encoder", "encoder"), ("encoder_config", "encoder"),
    ("thinker_config", None), ("talker_config", None), ("qformer_config", None), ("dit_config", None),
])
def test_sub_config_kinds(attr, kind):
    assert T.kind_of_attribute(attr) == kind


class _Forward(nn.Module):
    def __init__(self, forward, main=None):
        super().__init__()
        if forward is not None:
            self.forward = forward
        if main:
            self.main_input_name = main


@pytest.mark.parametrize("forward, main, modality", [
    (lambda pixel_values=None, input_ids=None: None, None, "vision"),
    (lambda input_features=None, input_ids=None: None, None, "audio"),
    (lambda input_values=None: None, None, "audio"),
    (lambda input_ids=None: None, None, None),
    (lambda pixel_values=None, input_features=None: None, "input_features", "audio"),
    (lambda pixel_values=None, input_features=None: None, "pixel_values", "vision"),
    (3, "input_values", "audio"),  # a forward inspect cannot read: the main input decides
    (3, None, None),
])
def test_input_modality(forward, main, modality):
    model = _Forward(None, main)
    model.__dict__["forward"] = forward
    assert T.input_modality(model) == modality
