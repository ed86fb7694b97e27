"""Model components — vision, audio, language, projector, head — found from the model's structure.

Names differ across architectures (`vision_tower`, `visual`, `vision_model`, `image_encoder`…),
so a component is found first from what transformers itself knows:

- a sub-config (`config.vision_config`, `audio_config`, `text_config`): the outermost submodules
  whose `.config` *is* that sub-config object are the tower (transformers keeps the sub-config on
  the sub-model it built from it);
- the input embedding (`get_input_embeddings()`): the language model is the smallest module that
  owns it together with a stack of blocks, outside the vision and audio towers;
- the output embedding (`get_output_embeddings()`): the head;
- speech models whose main input is audio (`input_features`, `input_values`): the encoder
  (`get_encoder()`) is the audio component;
- the projector is what connects them: the children of the module that holds the towers and the
  language model that are neither (LLaVA's `multi_modal_projector`), and modules named like a
  projector (`merger`, `mm_projector`, `connector`) — which the towers then do not include.

Common attribute names are only a fallback, for models that are not transformers models. A
component is its root module(s) and every descendant.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from targetsel.errors import UnknownNameError, did_you_mean
from targetsel.query.nodes import COMPONENTS

_FALLBACK_NAMES = {
    "vision": ("vision_tower", "visual", "vision_model", "vision_encoder", "image_encoder", "vision"),
    "audio": ("audio_tower", "audio_encoder", "audio_model", "speech_encoder", "audio"),
    "language": ("language_model", "text_model", "llm", "lm"),
    "projector": ("multi_modal_projector", "mm_projector", "connector", "merger", "projector", "vision_projection",
                  "visual_projection", "audio_projector", "multi_modal_projection"),
}
_SUB_CONFIGS = {"vision": ("vision_config",), "audio": ("audio_config",), "language": ("text_config",)}
_AUDIO_INPUTS = ("input_features", "input_values")


def component_mask(index, name: str) -> torch.Tensor:
    """Bool mask over index positions: the modules of component `name` (cached per index)."""
    if name not in COMPONENTS:
        hint = did_you_mean(name, COMPONENTS)
        raise UnknownNameError(f"unknown component {name!r}; components: {', '.join(COMPONENTS)}" + (f"; {hint}" if hint else ""))
    key = ("components",)
    found = index._cached.get(key)
    if found is None:
        found = index._cached[key] = _find_all(index)
    mask = _subtrees(index, found[name])
    if name in ("vision", "audio", "language"):
        # The projector and the head are components of their own even where they sit inside a tower.
        mask &= ~_subtrees(index, found["projector"] + found["head"])
    return mask


def _subtrees(index, roots) -> torch.Tensor:
    mask = torch.zeros(index.size, dtype=torch.bool)
    for root in roots:
        mask[root : index.ends[root]] = True
    return mask


def component_roots(index) -> dict[str, list[str]]:
    """Component → the names of its root modules (for display and explain)."""
    found = index._cached.get(("components",)) or _find_all(index)
    return {c: [index.names[r] for r in roots] for c, roots in found.items()}


# ---------------------------------------------------------------------------- finding


def _find_all(index) -> dict[str, list[int]]:
    model = index.model_ref()
    by_id = {id(m): i for i, m in enumerate(index.modules)}
    found: dict[str, list[int]] = {c: [] for c in COMPONENTS}
    config = getattr(model, "config", None)

    for comp in ("vision", "audio"):
        found[comp] = _from_sub_config(index, config, _SUB_CONFIGS[comp]) or _by_names(index, _FALLBACK_NAMES[comp])
    if not found["audio"] and getattr(model, "main_input_name", None) in _AUDIO_INPUTS:
        found["audio"] = _speech_encoder(index, model, by_id)

    head = _module_position(model, "get_output_embeddings", by_id)
    found["head"] = [head] if head else []

    towers = _outermost(found["vision"] + found["audio"])
    found["language"] = _from_sub_config(index, config, _SUB_CONFIGS["language"]) or _language(index, model, by_id, towers, head)
    found["language"] = [r for r in found["language"] if not _inside_any(index, r, towers)]

    found["projector"] = _projector(index, towers, found["language"], head)
    # Towers and the language model do not include the projector (Qwen2-VL keeps `merger` in `visual`).
    return {c: _outermost(roots) for c, roots in found.items()}


def _from_sub_config(index, config, attrs) -> list[int]:
    if config is None:
        return []
    for attr in attrs:
        sub = getattr(config, attr, None)
        if sub is None or sub is config:
            continue
        hits = [i for i, m in enumerate(index.modules) if i and getattr(m, "config", None) is sub]
        if hits:
            return _outermost_positions(index, hits)
    return []


def _by_names(index, names) -> list[int]:
    wanted = set(names)
    hits = [i for i, n in enumerate(index.names) if i and n.rsplit(".", 1)[-1] in wanted and index.n_children[i] > 0]
    return _outermost_positions(index, hits)


def _speech_encoder(index, model, by_id) -> list[int]:
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):  # Whisper: the encoder hears
        pos = _module_position(model, "get_encoder", by_id)
        if pos:
            return [pos]
    # An encoder-only speech model (wav2vec2, HuBERT): the base model under the task head is the audio component.
    base = getattr(model, "base_model", None)
    if isinstance(base, nn.Module) and base is not model and id(base) in by_id:
        return [by_id[id(base)]]
    return [i for i in range(1, index.size) if index.parents[i] == 0 and index.n_children[i] > 0]


def _module_position(model, getter: str, by_id) -> Optional[int]:
    fn = getattr(model, getter, None)
    if not callable(fn):
        return None
    try:
        module = fn()
    except Exception:  # some models raise NotImplementedError for the getters they do not have
        return None
    pos = by_id.get(id(module)) if isinstance(module, nn.Module) else None
    return pos or None


def _language(index, model, by_id, towers: list[int], head: Optional[int]) -> list[int]:
    embedding = _module_position(model, "get_input_embeddings", by_id)
    if embedding is not None and not _inside_any(index, embedding, towers):
        blocks = set(c for c in index.block_info()[0] if c >= 0 and not _inside_any(index, c, towers))
        p = index.parents[embedding]
        while p > 0:
            if any(p < c < index.ends[p] for c in blocks):
                return [p]
            p = index.parents[p]
        # The root owns them: the language model is every top-level part that is not a tower or the head.
        return [i for i in range(1, index.size) if index.parents[i] == 0 and i != head and i not in towers]
    return _by_names(index, _FALLBACK_NAMES["language"])


def _projector(index, towers: list[int], language: list[int], head: Optional[int]) -> list[int]:
    parts = towers + language
    found = []
    if towers and language:
        # Children of the modules that hold a tower and the language model, which are neither.
        holders = {index.parents[r] for r in parts}
        for holder in holders:
            for i in range(holder + 1, index.ends[holder]):
                if index.parents[i] != holder or i in parts or i == head or _inside_any(index, i, parts):
                    continue
                if any(i <= r < index.ends[i] for r in parts):  # an ancestor of a tower, not a sibling
                    continue
                if index.param_counts()[i] > 0:
                    found.append(i)
    found += [i for i in _by_names_any(index, _FALLBACK_NAMES["projector"]) if i not in found]
    return found


def _by_names_any(index, names) -> list[int]:
    wanted = set(names)
    return [i for i, n in enumerate(index.names) if i and n.rsplit(".", 1)[-1] in wanted]


def _inside_any(index, pos: int, roots) -> bool:
    return any(r <= pos < index.ends[r] for r in roots)


def _outermost_positions(index, positions) -> list[int]:
    out = []
    for i in sorted(set(positions)):
        if not any(r <= i < index.ends[r] for r in out):
            out.append(i)
    return out


def _outermost(roots) -> list[int]:
    return sorted(set(roots))
