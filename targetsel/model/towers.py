"""The parts of a multimodal model that transformers itself labels: towers, the text model, the
input and output embeddings.

transformers builds each sub-model from a sub-config and keeps that very object on it
(`module.config is config.vision_config`), so the modules that carry a sub-config are the
sub-model it names. The sub-config's *attribute name* says what it is — the one place where a
name decides, and it is transformers' own API, not a module name:

| attribute | kind |
|---|---|
| `vision_config`, `high_res_vision_config`, `vq_config` (an image tokenizer), any `*vision*`/`*image*` | vision |
| `audio_config`, `codec_config`, `acoustic_*`/`semantic_*` tokenizer configs, any `*audio*`/`*speech*`/`*sound*` | audio |
| `text_config`, `decoder`, `decoder_config`, `llm_config`, `language_config` | language |
| `encoder`, `encoder_config` | a tower when it does not hold the input embedding: vision if the model takes `pixel_values`, audio if it takes `input_features`/`input_values` |

Other sub-configs (`thinker_config`, `vlm_config`, `talker_config`…) are containers: their own
sub-configs are read in turn, as are an encoder's.
"""

from __future__ import annotations

import inspect
from typing import Optional

from torch import nn

_LANGUAGE_ATTRS = ("text_config", "decoder", "decoder_config", "llm_config", "language_config")
_ENCODER_ATTRS = ("encoder", "encoder_config")
_VISION_WORDS = ("vision", "image", "visual")
_AUDIO_WORDS = ("audio", "speech", "sound", "codec", "acoustic", "semantic_tokenizer", "semantic_model")
AUDIO_INPUTS = ("input_features", "input_values")


def kind_of_attribute(attr: str) -> Optional[str]:
    """What a sub-config attribute names: vision, audio, language, encoder, or None (a container)."""
    a = attr.lower()
    if a in _LANGUAGE_ATTRS:
        return "language"
    if a in _ENCODER_ATTRS:
        return "encoder"
    if a == "vq_config" or any(w in a for w in _VISION_WORDS):
        return "vision"
    if any(w in a for w in _AUDIO_WORDS):
        return "audio"
    return None


def _is_config(value) -> bool:
    return hasattr(value, "to_dict") and hasattr(value, "model_type") and not isinstance(value, type)


def sub_configs(config) -> list[tuple[str, object]]:
    """(kind, sub-config) for every labelled sub-config, depth first; containers are opened, labelled
    sub-configs are not (a vision config's own encoder config is part of the vision tower)."""
    found: list[tuple[str, object]] = []
    seen = {id(config)}

    def visit(cfg) -> None:
        for attr, value in list(getattr(cfg, "__dict__", {}).items()):
            if not _is_config(value) or id(value) in seen:
                continue
            seen.add(id(value))
            kind = kind_of_attribute(attr)
            if kind:
                found.append((kind, value))
            if kind in (None, "encoder"):  # an encoder may hold the text model and a tower (T5Gemma2)
                visit(value)

    if config is not None and _is_config(config):
        visit(config)
    return found


def config_hits(index) -> dict[int, list[int]]:
    """id(config object) → positions of the modules that carry it as `.config`, in preorder."""
    hits: dict[int, list[int]] = {}
    for i, m in enumerate(index.modules):
        if i:
            cfg = m.__dict__.get("config")
            if cfg is not None:
                hits.setdefault(id(cfg), []).append(i)
    return hits


def outermost(index, positions) -> list[int]:
    out: list[int] = []
    for i in sorted(set(positions)):
        if not out or not (out[-1] <= i < index.ends[out[-1]]):
            out.append(i)
    return out


def inside_any(index, pos: int, roots) -> bool:
    return any(r <= pos < index.ends[r] for r in roots)


def contains_any(index, root: int, positions) -> bool:
    return any(root <= p < index.ends[root] for p in positions)


def module_from(index, module, getter: str) -> Optional[int]:
    """The position of `module.<getter>()`, or None (missing, raising, or not a submodule)."""
    fn = getattr(module, getter, None)
    if not callable(fn):
        return None
    try:
        found = fn()
    except Exception:  # transformers raises NotImplementedError (and others) for getters a model lacks
        return None
    return (index.position_of_module(found) or None) if isinstance(found, nn.Module) else None


def input_modality(model) -> Optional[str]:
    """'vision' or 'audio': the non-text input the model's forward takes, if exactly one kind."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        params = {}
    audio = any(p in params for p in AUDIO_INPUTS)
    vision = "pixel_values" in params
    if audio != vision:
        return "audio" if audio else "vision"
    main = getattr(model, "main_input_name", None)
    return "audio" if main in AUDIO_INPUTS else "vision" if main == "pixel_values" else None


def towers_from_configs(index, model, hits, embedding: Optional[int]) -> dict[str, list[int]]:
    """vision/audio → root positions of the modules carrying a vision/audio (or encoder) sub-config."""
    towers: dict[str, list[int]] = {"vision": [], "audio": []}
    modality = None
    for kind, cfg in sub_configs(getattr(model, "config", None)):
        roots = outermost(index, hits.get(id(cfg), ()))
        if kind == "encoder":
            roots = [r for r in roots if embedding is None or not (r <= embedding < index.ends[r])]
            modality = modality or input_modality(model)
            kind = modality
        if kind in towers:
            towers[kind] += roots
    return {k: outermost(index, v) for k, v in towers.items()}


def language_from_configs(index, model, hits, embedding: Optional[int], scope: int, has_stack) -> list[int]:
    """Modules carrying a text/decoder sub-config, inside the scope of the main text model, that hold the
    input embedding or a stack of blocks (`has_stack(pos)`): not a cross-attention that merely shares
    the text config (Kosmos-2), nor a talker's own text model (Qwen-Omni)."""
    roots: list[int] = []
    text_encoder = input_modality(model) is None  # an encoder of text (Dia's) is part of the text model
    for kind, cfg in sub_configs(getattr(model, "config", None)):
        if kind != "language" and not (kind == "encoder" and text_encoder):
            continue
        for r in outermost(index, hits.get(id(cfg), ())):
            if not (scope <= r < index.ends[scope]):
                continue
            if (embedding is not None and r <= embedding < index.ends[r]) or has_stack(r):
                roots.append(r)
    return outermost(index, roots)


def main_embedding(index, model, towers: list[int]) -> tuple[Optional[int], int]:
    """(input embedding position, scope): the model's own `get_input_embeddings()`, or — where the
    model is a container of models (Qwen-Omni: thinker, talker, vocoder) — that of the first sub-model
    holding the towers. The scope is the module whose getter answered."""
    pos = module_from(index, model, "get_input_embeddings")
    if pos is not None:
        return pos, 0
    fallback = None
    for i in range(1, index.size):
        if inside_any(index, i, towers) or not callable(getattr(type(index.modules[i]), "get_input_embeddings", None)):
            continue  # a tower's getter answers with its patch embedding
        pos = module_from(index, index.modules[i], "get_input_embeddings")
        if pos is None or inside_any(index, pos, towers):
            continue
        if all(i <= t < index.ends[i] for t in towers):
            return pos, i
        fallback = fallback or (pos, i)
    return fallback or (None, 0)


def output_embedding(index, model, embedding: Optional[int], scope: int) -> Optional[int]:
    """The head: `get_output_embeddings()` of the nearest model around the input embedding that has one
    (the thinker's `lm_head` in a full Qwen-Omni model, whose own getter returns None)."""
    if embedding is None:
        return module_from(index, model, "get_output_embeddings")
    p = index.parents[embedding]
    while p >= 0:
        if p >= scope or p == 0:
            head = module_from(index, index.modules[p], "get_output_embeddings")
            if head is not None:
                return head
        if p == 0:
            return None
        p = index.parents[p]
    return None


def speech_encoder(index, model) -> list[int]:
    """Speech models whose main input is audio (Whisper, wav2vec2): the encoder hears."""
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        pos = module_from(index, model, "get_encoder")
        if pos:
            return [pos]
    # An encoder-only speech model (wav2vec2, HuBERT): the base model under the task head is the audio component.
    base = getattr(model, "base_model", None)
    if isinstance(base, nn.Module) and base is not model:
        pos = index.position_of_module(base)
        if pos:
            return [pos]
    return [i for i in range(1, index.size) if index.parents[i] == 0 and index.n_children[i] > 0]
