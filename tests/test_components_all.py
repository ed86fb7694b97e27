"""Components on every vision-language, audio-language and omni architecture of the installed
transformers (issue 18, part 1): discovered from its auto mappings (tests/multimodal_corpus.py),
each built once on the meta device, checked for invariants, compared module by module with what
ms-swift and LLaMA-Factory declare (tests/trainer_maps.py), and the issue's cases pinned.

One test per architecture does all of it, so that each model is built once per worker.
"""

from __future__ import annotations

import pytest
from torch import nn

import multimodal_corpus as mc
import trainer_maps as tm
from targetsel import select
from targetsel.model.components import component_roots
from targetsel.model.index import get_index
from targetsel.query.nodes import COMPONENTS

TOWERS = ("vision", "audio")

# The cases, and a few that exercise each rule: every component of these is pinned.
PINNED = {
    # audio projections inside the audio tower that map to the LM width
    "qwen2_5_omni_thinker": {"vision": ["model.visual"], "audio": ["model.audio_tower"],
                             "language": ["model.language_model"],
                             "projector": ["model.audio_tower.proj", "model.visual.merger"], "head": ["lm_head"]},
    "qwen3_omni_moe_thinker": {"vision": ["model.visual"], "audio": ["model.audio_tower"],
                               "language": ["model.language_model"],
                               "projector": ["model.audio_tower.proj1", "model.audio_tower.proj2",
                                             "model.visual.merger_list", "model.visual.merger"], "head": ["lm_head"]},
    # full omni models: the thinker's lm_head is the head; talker and vocoder are in no component
    "qwen2_5_omni": {"vision": ["thinker.model.visual"], "audio": ["thinker.model.audio_tower"],
                     "language": ["thinker.model.language_model"],
                     "projector": ["thinker.model.audio_tower.proj", "thinker.model.visual.merger"],
                     "head": ["thinker.lm_head"]},
    "qwen3_omni_moe": {"vision": ["thinker.model.visual"], "audio": ["thinker.model.audio_tower"],
                       "language": ["thinker.model.language_model"],
                       "projector": ["thinker.model.audio_tower.proj1", "thinker.model.audio_tower.proj2",
                                     "thinker.model.visual.merger_list", "thinker.model.visual.merger"],
                       "head": ["thinker.lm_head"]},
    # a projector not named `merger`: conv + MLP to the LM width
    "hunyuan_vl": {"vision": ["model.vision_tower"], "audio": [], "language": ["model.language_model"],
                   "projector": ["model.vision_tower.patch_merger"], "head": ["lm_head"]},
    # the decoder reads the same token table: embedding, final norm, self-conditioning MLP are language
    "diffusion_gemma": {"vision": ["model.encoder.vision_tower"], "audio": [],
                        "language": ["model.encoder.language_model", "model.decoder"],
                        "projector": ["model.encoder.embed_vision"], "head": ["lm_head"]},
    # embedders with no tower, and with towers
    "gemma4_unified": {"vision": [], "audio": [], "language": ["model.language_model"],
                       "projector": ["model.embed_vision", "model.embed_audio"], "head": ["lm_head"]},
    "gemma4": {"vision": ["model.vision_tower"], "audio": ["model.audio_tower"], "language": ["model.language_model"],
               "projector": ["model.embed_vision", "model.embed_audio"], "head": ["lm_head"]},
    # deepstack mergers: same class as `merger`, to the LM width
    "qwen3_vl": {"vision": ["model.visual"], "audio": [], "language": ["model.language_model"],
                 "projector": ["model.visual.merger", "model.visual.deepstack_merger_list"], "head": ["lm_head"]},
    "qwen3_vl_moe": {"vision": ["model.visual"], "audio": [], "language": ["model.language_model"],
                     "projector": ["model.visual.merger", "model.visual.deepstack_merger_list"], "head": ["lm_head"]},
    # a bare projection matrix (Gemma3's mm_input_projection_weight)
    "gemma3": {"vision": ["model.vision_tower"], "audio": [], "language": ["model.language_model"],
               "projector": ["model.multi_modal_projector"], "head": ["lm_head"]},
    # a language model holding its towers, cut around them (Phi-4-multimodal keeps them in embed_tokens_extend)
    "git": {"vision": ["git.image_encoder"], "audio": [], "language": ["git.embeddings", "git.encoder"],
            "projector": ["git.visual_projection"], "head": ["output"]},
    # a two-stage bridge: the Q-Former feeds language_projection
    "blip-2": {"vision": ["vision_model"], "audio": [], "language": ["language_model"],
               "projector": ["qformer", "language_projection"], "head": ["language_model.lm_head"]},
    # projector-free: the text model cross-attends to the tower
    "blip": {"vision": ["vision_model"], "audio": [], "language": ["text_decoder"], "projector": [],
             "head": ["text_decoder.cls.predictions.decoder"]},
    # an encoder-decoder whose encoder sub-config is audio by the input the model takes
    "speech-encoder-decoder": {"vision": [], "audio": ["encoder"], "language": ["decoder"], "projector": [],
                               "head": ["decoder.cls.predictions.decoder"]},
    # a text encoder-decoder holding a tower in its encoder (T5Gemma2)
    "t5gemma2": {"vision": ["model.encoder.vision_tower"], "audio": [],
                 "language": ["model.encoder.text_model", "model.decoder"],
                 "projector": ["model.encoder.multi_modal_projector"], "head": ["lm_head.out_proj"]},
    # generation parts that map elsewhere than the LM width are in no component
    "vibevoice": {"vision": [], "audio": ["model.audio_tower", "model.semantic_tokenizer_encoder"],
                  "language": ["model.language_model"],
                  "projector": ["model.multi_modal_projector", "model.semantic_connector"], "head": ["lm_head"]},
}

# Where targetsel and a trainer label a module differently, on purpose: (trainer, model type) →
# {(their label, our label): prefix of every differing module}.
EXPECTED_DIFFERENCES = {
    # GLM-4V's `downsample` conv maps the ViT width (1536) to the LM width: a projector by shape;
    # ms-swift freezes it with the ViT (LLaMA-Factory names neither it nor `post_layernorm`).
    ("ms-swift", "glm4v"): {("tower", "projector"): "model.visual.downsample"},
    ("ms-swift", "glm4v_moe"): {("tower", "projector"): "model.visual.downsample"},
    # LLaMA-Factory freezes Qwen3-VL's deepstack mergers with the ViT; they map to the LM width, as
    # `merger` does, and ms-swift trains them with the aligner.
    ("LLaMA-Factory", "qwen3_vl"): {("tower", "projector"): "model.visual.deepstack_merger_list"},
    ("LLaMA-Factory", "qwen3_vl_moe"): {("tower", "projector"): "model.visual.deepstack_merger_list"},
}
# Entries written for another module layout (remote code, or names no conversion mapping covers):
# some trainer category names no parameter of the transformers model, so they are not compared.
NOT_COMPARABLE = {
    ("ms-swift", "ernie4_5_vl_moe"),  # `vision_model`: Baidu's remote-code layout
    ("ms-swift", "florence2"),  # `language_model`, `vision_tower` at the top: Microsoft's remote code
    ("ms-swift", "molmo2"),  # `model.transformer`, `model.vision_backbone`: AllenAI's remote code
    ("ms-swift", "qwen3_asr"),  # `thinker.*`: the qwen-asr package's layout
    ("LLaMA-Factory", "video_llava"),  # `vision_tower`: transformers has `image_tower` / `video_tower`
}
# Keys that name nothing in this model, while the entry's other keys do.
EXPECTED_MISSING = {
    # Qwen3-Omni's thinker calls its deepstack mergers `merger_list`; LLaMA-Factory's `visual.merger`
    # substring matches them, so it trains them with the projector, as ms-swift and targetsel do.
    ("LLaMA-Factory", "qwen3_omni_moe_thinker"): ["visual.deepstack_merger_list"],
}
TRAINERS = {"ms-swift": ({t: keys for t, (_arch, keys) in tm.MS_SWIFT.items()}, False), "LLaMA-Factory": (tm.LLAMA_FACTORY, True)}


# ---------------------------------------------------------------------------- widths, independently


def _out_width(module: nn.Module):
    """Output widths of a module: its last Linear/Conv (either way round for a bare `*weight` matrix),
    else its last embedding table's width."""
    last, table = None, None
    for m in module.modules():
        if isinstance(m, nn.Embedding):
            table = {m.embedding_dim}
        elif isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)):
            last = {getattr(m, "out_features", None) or m.out_channels}
        else:
            mats = [p for k, p in m._parameters.items() if p is not None and p.dim() == 2 and k.endswith("weight")]
            if len(mats) == 1:
                last = set(mats[0].shape)
    return last or table or set()


def _in_width(module: nn.Module):
    for m in module.modules():
        if isinstance(m, nn.Linear):
            return m.in_features
        if isinstance(m, nn.modules.conv._ConvNd):
            return m.in_channels
    return None


def _text_width(config) -> set:
    """The language model's hidden size from the config alone: the first text_config, depth first."""
    text = getattr(config, "text_config", None)
    if text is not None:
        return {getattr(text, "hidden_size", None) or getattr(text, "d_model", None)}
    for value in vars(config).values():
        if hasattr(value, "to_dict") and hasattr(value, "model_type"):
            found = _text_width(value)
            if found:
                return found
    return set()


def _lm_widths(model, roots) -> set:
    widths = _text_width(model.config)
    for name in roots["language"]:
        for m in model.get_submodule(name).modules():
            if isinstance(m, nn.Embedding):
                widths.add(m.embedding_dim)
                break
    return {w for w in widths if w}


def _output_embeddings(model) -> list:
    found = []
    for m in model.modules():
        getter = getattr(m, "get_output_embeddings", None)
        if callable(getter):
            try:
                head = getter()
            except Exception:  # transformers raises for getters a model lacks
                continue
            if isinstance(head, nn.Module):
                found.append(head)
    return found


# ---------------------------------------------------------------------------- tests


def test_the_corpus_is_every_multimodal_architecture():
    import transformers.models.auto.modeling_auto as auto

    universe = mc.universe()
    for mapping in mc.MAPPINGS:
        assert set(getattr(auto, mapping)) <= set(universe)
    assert len(universe) >= 100
    assert set(PINNED) <= set(mc.buildable())
    assert {t for _trainer, t in set(EXPECTED_DIFFERENCES) | NOT_COMPARABLE} <= set(mc.buildable())


@pytest.mark.parametrize("model_type", sorted(mc.UNBUILDABLE))
def test_unbuildable_architectures_still_fail(model_type):
    model, error = mc.cached(model_type)
    assert model is None, f"{model_type} builds now: delete it from UNBUILDABLE so it is tested"
    assert "timm" in error.lower() or "pil" in error.lower()


@pytest.mark.parametrize("model_type", mc.buildable())
def test_components_on_every_architecture(model_type):
    model, error = mc.cached(model_type)
    assert model is not None, f"{model_type} does not build: {error}"
    index = get_index(model)
    roots = component_roots(index)
    selected = {c: select(model).component(c).names() for c in COMPONENTS}

    # disjoint, and each the subtrees of its roots
    seen = [n for names in selected.values() for n in names]
    assert len(seen) == len(set(seen)), "a module is in two components"
    for comp, names in selected.items():
        assert all(any(n == r or n.startswith(r + ".") for r in roots[comp]) for n in names), comp
        assert bool(names) == bool(roots[comp]), comp

    # the language model is found, holds no tower, and no tower holds any of it
    assert roots["language"], "no language component"
    towers = [r for c in TOWERS for r in roots[c]]
    for lang in roots["language"]:
        assert not any(lang == t or lang.startswith(t + ".") or t.startswith(lang + ".") for t in towers), (lang, towers)

    # a projector maps to the language model's width, or feeds the projector next to it that does
    widths = _lm_widths(model, roots)
    for name in roots["projector"]:
        out = _out_width(model.get_submodule(name))
        if out & widths:
            continue
        parent, _, leaf = name.rpartition(".")
        siblings = [n for n, m in model.get_submodule(parent).named_children() if any(True for _ in m.parameters())]
        nxt = siblings[siblings.index(leaf) + 1] if siblings.index(leaf) + 1 < len(siblings) else None
        follower = f"{parent}.{nxt}" if parent else nxt
        assert follower in roots["projector"] and _in_width(model.get_submodule(follower)) in out, (name, out, widths)

    # the head is an output embedding — the model's own where it has one
    if roots["head"]:
        assert len(roots["head"]) == 1
        head = model.get_submodule(roots["head"][0])
        assert any(head is h for h in _output_embeddings(model))
        own = model.get_output_embeddings()
        assert own is None or own is head
    else:
        assert model.get_output_embeddings() is None

    if model_type in PINNED:
        assert roots == PINNED[model_type]

    for trainer, (table, substring) in TRAINERS.items():
        if model_type not in table:
            continue
        result = tm.compare(model_type, model, table[model_type], substring)
        if (trainer, model_type) in NOT_COMPARABLE:
            assert result.layout_differs and result.missing
            continue
        assert result.missing == EXPECTED_MISSING.get((trainer, model_type), []), trainer
        expected = EXPECTED_DIFFERENCES.get((trainer, model_type), {})
        assert set(result.differ) == set(expected), (trainer, {k: v[:3] for k, v in result.differ.items()})
        for pair, prefix in expected.items():
            assert all(n == prefix or n.startswith(prefix + ".") for n in result.differ[pair])
        assert result.compared > 0
