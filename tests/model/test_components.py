"""Components found from structure: real VLM and speech architectures on the meta device."""

from __future__ import annotations

import pytest
from torch import nn

import models
import targetsel as ts
from targetsel.query.nodes import COMPONENTS
from targetsel import select
from targetsel.model.components import component_roots
from targetsel.model.index import get_index

ITT = "AutoModelForImageTextToText"

# (arch, auto class, {component: expected root names}) — every component of every model is pinned
ARCHS = [
    ("llava", None, {"vision": ["model.vision_tower"], "language": ["model.language_model"],
                     "projector": ["model.multi_modal_projector"], "head": ["lm_head"], "audio": []}),
    ("qwen2_vl", None, {"vision": ["model.visual"], "language": ["model.language_model"],
                        "projector": ["model.visual.merger"], "head": ["lm_head"], "audio": []}),
    ("qwen2_5_vl", ITT, {"vision": ["model.visual"], "language": ["model.language_model"],
                         "projector": ["model.visual.merger"], "head": ["lm_head"], "audio": []}),
    ("paligemma", ITT, {"vision": ["model.vision_tower"], "language": ["model.language_model"],
                        "projector": ["model.multi_modal_projector"], "head": ["lm_head"], "audio": []}),
    ("idefics3", ITT, {"vision": ["model.vision_model"], "language": ["model.text_model"],
                       "projector": ["model.connector"], "head": ["lm_head"], "audio": []}),
    ("mllama", ITT, {"vision": ["model.vision_model"], "language": ["model.language_model"],
                     "projector": ["model.multi_modal_projector"], "head": ["lm_head"], "audio": []}),
    ("whisper", None, {"audio": ["model.encoder"], "language": ["model.decoder"], "head": ["proj_out"],
                       "vision": [], "projector": []}),
    ("wav2vec2", "AutoModelForCTC", {"audio": ["wav2vec2"], "language": [], "head": [], "vision": [], "projector": []}),
    ("llama", None, {"language": ["model"], "head": ["lm_head"], "vision": [], "audio": [], "projector": []}),
    ("t5", None, {"language": ["shared", "encoder", "decoder"], "head": ["lm_head"], "vision": [], "audio": [], "projector": []}),
]

_MODELS = {}


def model_for(arch, auto):
    if arch not in _MODELS:
        _MODELS[arch] = models.hf_model(arch, auto=auto) if auto else models.cached_hf_model(arch)
    return _MODELS[arch]


@pytest.mark.parametrize("arch, auto, expected", ARCHS, ids=[a for a, *_ in ARCHS])
def test_component_roots(arch, auto, expected):
    model = model_for(arch, auto)
    assert component_roots(get_index(model)) == {c: expected.get(c, []) for c in COMPONENTS}


@pytest.mark.parametrize("arch, auto, expected", ARCHS, ids=[a for a, *_ in ARCHS])
def test_components_are_disjoint_subtrees(arch, auto, expected):
    model = model_for(arch, auto)
    selected = {c: select(model).component(c).names() for c in COMPONENTS}
    for comp, roots in expected.items():
        names = selected[comp]
        assert all(any(n == r or n.startswith(r + ".") for r in roots) for n in names)
        assert bool(names) == bool(roots)
        assert select(model, f"component:{comp}").names() == names  # the query atom is the same filter
    seen = [n for names in selected.values() for n in names]
    assert len(seen) == len(set(seen)), "a module belongs to two components"


def test_vision_linears_are_the_towers_linears():
    model = model_for("llava", None)
    vision = select(model).component("vision").linear().names()
    assert vision and vision == [n for n, m in model.named_modules() if n.startswith("model.vision_tower.") and isinstance(m, nn.Linear)]
    lm = select(model, "linear & !component:vision & !component:projector").names()
    assert all(n.startswith("model.language_model.") for n in lm)


def test_demo_components():
    model = models.demo()
    assert component_roots(get_index(model)) == {
        "vision": ["vision_tower"], "audio": [], "language": ["language_model"],
        "projector": ["multi_modal_projector"], "head": ["lm_head"],
    }


def test_fallback_names_for_plain_modules():
    with __import__("torch").device("meta"):
        m = nn.Module()
        m.vision_tower = nn.Sequential(nn.Linear(2, 2))
        m.mm_projector = nn.Linear(2, 2)
        m.llm = nn.Module()
        m.llm.layers = nn.ModuleList([nn.Linear(2, 2)])
    roots = component_roots(get_index(m))
    assert roots["vision"] == ["vision_tower"] and roots["projector"] == ["mm_projector"] and roots["language"] == ["llm"]


def test_missing_component_is_empty_and_explained():
    model = models.cached_hf_model("llama")
    sel = select(model).component("vision")
    assert sel.is_empty()
    with pytest.raises(ts.EmptySelectionError, match=r"component:vision kept 0 of \d+ modules of LlamaForCausalLM: this model has no vision component .* its components: language \(model\), head \(lm_head\)"):
        ts.patch(__import__("peft").LoraConfig(), sel.linear())


def test_unknown_component():
    with pytest.raises(ts.TargetselError, match=r"component"):
        select(models.demo()).component("visoin")
