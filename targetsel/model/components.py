"""Model components — vision, audio, language, projector, head — found from the model's structure.

Names differ across architectures (`vision_tower`, `visual`, `vision_model`, `image_encoder`…), so
a component is found from what transformers itself knows and from module shapes:

- **vision / audio**: the modules carrying a vision or audio sub-config as their `.config`
  (`config.vision_config`, `audio_config`, `vq_config`, `codec_config`…, model/towers.py);
  an `encoder`/`encoder_config` sub-model that does not hold the input embedding, by the input the
  model takes (`pixel_values` → vision, `input_features`/`input_values` → audio); speech models
  whose main input is audio: the encoder (`get_encoder()`, Whisper) or the base model (wav2vec2).
- **language**: the modules carrying the text sub-config that hold the input embedding or a stack
  of blocks; else the smallest module owning the input embedding (`get_input_embeddings()`) and a
  stack of blocks outside the towers; plus any other stack that reads the *same* (tied) token
  embedding (DiffusionGemma's decoder). A language model that contains a tower is cut around it.
- **head**: `get_output_embeddings()` of the nearest model around the input embedding that has one
  (a full Qwen-Omni model's own getter returns None; its thinker's `lm_head` is the head).
- **projector**: what maps a tower's features to the language model's width, from module shapes,
  with names only as a tie-breaker (model/projectors.py). It is a component of its own even inside
  a tower (Qwen2-VL keeps `merger` in `visual`).

Where components nest, the inner one wins: projector and head are never part of a tower or of the
language model, and a tower is never part of the language model. Common attribute names are a
fallback only for models without a transformers config. A component is its root module(s) and every
descendant not claimed by a component nested inside it.
"""

from __future__ import annotations

from typing import Optional

import torch

from targetsel.model import projectors as P
from targetsel.model import towers as T
from targetsel.query.nodes import COMPONENTS

_FALLBACK_NAMES = {
    "vision": ("vision_tower", "visual", "vision_model", "vision_encoder", "image_encoder", "vision"),
    "audio": ("audio_tower", "audio_encoder", "audio_model", "speech_encoder", "audio"),
    "language": ("language_model", "text_model", "llm", "lm"),
}
# A component's mask leaves out the subtrees of the components that win over it where they nest.
_INNER = {"language": ("vision", "audio", "projector", "head"), "vision": ("projector", "head"),
          "audio": ("projector", "head"), "projector": ("head",), "head": ()}


def component_mask(index, name: str) -> torch.Tensor:
    """Bool mask over index positions: the modules of component `name` (cached per index)."""
    assert name in COMPONENTS, name  # a Component node checked its name when it was built (query/fields.py)
    found = _found(index)
    mask = _subtrees(index, found[name])
    inner = [r for c in _INNER[name] for r in found[c]]
    if inner:
        mask &= ~_subtrees(index, inner)
    return mask


def _subtrees(index, roots) -> torch.Tensor:
    mask = torch.zeros(index.size, dtype=torch.bool)
    for root in roots:
        mask[root : index.ends[root]] = True
    return mask


def component_roots(index) -> dict[str, list[str]]:
    """Component → the names of its root modules (for display and explain)."""
    found = _found(index)
    return {c: [index.names[r] for r in roots] for c, roots in found.items()}


# ---------------------------------------------------------------------------- finding


def _found(index) -> dict[str, list[int]]:
    """Component → its root positions, found once per index."""
    return index.memo("components", lambda: _find_all(index))


def _find_all(index) -> dict[str, list[int]]:
    model = index.model_ref()
    config = getattr(model, "config", None)
    hits = T.config_hits(index)
    shapes = P.Shapes(index)

    found = T.towers_from_configs(index, model, hits, T.module_from(index, model, "get_input_embeddings"))
    if config is None:
        for kind in ("vision", "audio"):
            found[kind] = found[kind] or _by_names(index, _FALLBACK_NAMES[kind])
    if not found["audio"] and getattr(model, "main_input_name", None) in T.AUDIO_INPUTS:
        found["audio"] = [r for r in T.speech_encoder(index, model) if not T.inside_any(index, r, found["vision"])]
    towers = T.outermost(index, found["vision"] + found["audio"])

    embedding, scope = T.main_embedding(index, model, towers)
    if embedding is not None and T.inside_any(index, embedding, towers):
        embedding = None  # a tower's own embedding is no text model's
    head = T.output_embedding(index, model, embedding, scope)
    heads = [head] if head else []
    language = T.language_from_configs(index, model, hits, embedding, scope, shapes.has_stack)
    language = language or _language(index, shapes, embedding, towers, heads)
    language = [r for r in language if not T.inside_any(index, r, towers) and r not in heads]
    language += _tied_stacks(index, shapes, embedding, scope, towers + language + heads)
    widths = _language_widths(index, shapes, embedding, language)

    pieces, projectors = [], []
    for root in language:
        if T.contains_any(index, root, towers):
            kept, cut = P.carve(index, shapes, root, towers, embedding, widths)
            pieces += kept
            projectors += cut
        else:
            pieces.append(root)
    taken = towers + pieces + projectors + heads
    holders = {index.parents[r] for r in towers + pieces if index.parents[r] >= 0}
    if widths or (towers and pieces):  # with no width known, only what sits between a tower and an LM
        projectors += P.outside_projectors(index, shapes, P.free_parts(index, holders, taken), widths)
    for tower in towers:
        projectors += P.tower_tail(index, shapes, tower, widths, P.tower_width(index, shapes, tower))
    if towers and not projectors and widths:
        # No module reaches the language model's width: a config whose tower and text model do not
        # fit (a default Qwen2-VL config: a 3584-wide merger before an 8192-wide LM). Names decide.
        projectors = P.named_projectors(index, shapes, towers, P.free_parts(index, holders, taken))

    found.update(language=pieces, projector=projectors, head=heads)
    return {c: T.outermost(index, found[c]) for c in COMPONENTS}


def _language(index, shapes, embedding: Optional[int], towers: list[int], heads: list[int]) -> list[int]:
    """The smallest module owning the input embedding and a stack of blocks outside the towers."""
    if embedding is None:
        return _by_names(index, _FALLBACK_NAMES["language"])
    outside = [s for s in shapes.stacks if not T.inside_any(index, s, towers)]
    p = index.parents[embedding]
    while p > 0:
        if T.contains_any(index, p, outside):
            return [p]
        p = index.parents[p]
    # The root owns them: the language model is every top-level part that is not a tower or the head.
    return [i for i in range(1, index.size) if index.parents[i] == 0 and i not in heads and i not in towers]


def _tied_stacks(index, shapes, embedding: Optional[int], scope: int, taken: list[int]) -> list[int]:
    """Modules outside the taken roots that hold a parameter of the input embedding (a second decoder
    reading the same token table, a `shared` embedding), each grown to the smallest ancestor that
    holds a stack of blocks and nothing taken; a tied module with no such ancestor stands alone."""
    if embedding is None:
        return []
    table = {id(p) for p in index.modules[embedding].parameters()}
    found: list[int] = []
    for i in range(scope + 1, index.ends[scope]):
        if T.inside_any(index, i, taken + found) or T.contains_any(index, i, taken):
            continue
        own = index.modules[i].__dict__.get("_parameters", {}).values()
        if not any(p is not None and id(p) in table for p in own):
            continue
        root, p = i, index.parents[i]
        while p > scope and not T.contains_any(index, p, taken):
            if shapes.has_stack(p):
                root = p
                break
            p = index.parents[p]
        found.append(root)
    return T.outermost(index, found)


def _language_widths(index, shapes, embedding: Optional[int], language: list[int]) -> set:
    """The widths the language model reads: its input embedding's, its text config's hidden size, and
    the width of its stacks of blocks."""
    widths = set()
    if embedding is not None:
        widths.add(shapes.io(embedding)[1])
    for r in language:
        widths.add(getattr(index.modules[r].__dict__.get("config"), "hidden_size", None))
        widths.update(shapes.io(s + 1)[0] for s in shapes.stacks if r <= s < index.ends[r])
    return {w for w in widths if isinstance(w, int)}


def _by_names(index, names) -> list[int]:
    wanted = set(names)
    hits = [i for i, n in enumerate(index.names) if i and n.rsplit(".", 1)[-1] in wanted and index.n_children[i] > 0]
    return T.outermost(index, hits)
