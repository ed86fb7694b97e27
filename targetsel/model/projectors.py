"""The projector: what maps a tower's features to the language model's width.

Widths are read from module shapes. A module's *input width* is that of its first weighted module
(Linear, Conv, Embedding, anything with `in_features`/`out_features`) in registration order, its
*output width* that of its last one — transformers registers a projector's layers in the order
they run. The language model's widths `W` are the input embedding's width, the text config's
`hidden_size` and the width of the language model's stacks of blocks.

A candidate is a projector when

1. it maps *into* the language model's width: output width in `W`, input width not in `W`
   (LLaVA's `multi_modal_projector`, Qwen2-VL's `merger`, HunYuan-VL's `patch_merger`, Gemma4's
   `embed_vision`, Qwen2.5-Omni's `audio_tower.proj`, Qwen3-VL's `deepstack_merger_list`);
2. shapes cannot tell — its input is already that wide, or the tower itself is as wide as the
   language model — and its name says projector (`proj`, `merge`, `connect`, `adapt`, `align`,
   `resampl`): names only break ties;
3. it feeds a projector of rule 1/2 (the sibling registered just before it, output width = that
   projector's input width): the hidden layers of a two-stage projector (Qwen3-Omni's `proj1`
   before `proj2`, a Q-Former before `language_projection`). Inside a tower only a single layer
   that reads the tower's own width counts (a projector MLP's hidden layer), not a front end or neck.

Where no candidate reaches `W` at all (a default config pairing a tower with a text model of
another checkpoint), candidates named like a projector are taken (`named_projectors`).

Candidates are (a) the children of the modules holding a tower or the language model that are
neither (outside the language model; those that fail the test are in no component: a vocoder, a
diffusion head), (b) the children of a tower outside its stack of blocks, and (c) the parts of a
language model that had to be cut around a tower it contains (Phi-4-multimodal keeps its towers in
`model.embed_tokens_extend`; what fails the test stays language). Without any known width every
candidate of (a) between a tower and a language model is a projector, as for plain `nn.Module` models.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Optional

from torch import nn

from targetsel.model.wrappers import global_shape

_PROJECTOR_WORDS = ("proj", "merge", "connect", "adapt", "align", "resampl")


def _io(module: nn.Module) -> Optional[tuple[int, int, bool]]:
    """(input width, output width, orientation known) of a weighted module, or None."""
    if isinstance(module, nn.Embedding):
        return module.num_embeddings, module.embedding_dim, True
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.in_channels, module.out_channels, True
    attrs = module.__dict__  # not getattr: nn.Module.__getattr__ raising for every module costs ~10 µs
    a, b = attrs.get("in_features"), attrs.get("out_features")
    if isinstance(a, int) and isinstance(b, int):
        return a, b, True
    params = attrs.get("_parameters", {})
    w = params.get("weight")
    if type(module).__name__ == "Conv1D" and w is not None and len(global_shape(w)) == 2:  # GPT-2's Conv1D: (in, out)
        return global_shape(w)[0], global_shape(w)[1], True
    # A bare projection matrix (Gemma3's `mm_input_projection_weight`, used as x @ W): either way round.
    mats = [global_shape(p) for k, p in params.items() if p is not None and k.endswith("weight")]  # shards: full shapes
    mats = [s for s in mats if len(s) == 2]
    if len(mats) == 1:
        return mats[0][0], mats[0][1], False
    return None


def _norm_width(module: nn.Module) -> Optional[int]:
    w = module.__dict__.get("_parameters", {}).get("weight")
    shape = global_shape(w) if w is not None else ()  # ZeRO-3 / FSDP1 shards: the full shape
    return shape[0] if len(shape) == 1 else None


class Shapes:
    """Input/output widths of every module of an index, and which block containers are residual stacks."""

    def __init__(self, index):
        self.index = index
        self._pos: list[int] = []
        self._io: list[tuple[int, int, bool]] = []
        self._table: list[bool] = []  # an embedding table: looked up, not applied to features
        for i, m in enumerate(index.modules):
            io = _io(m)
            if io is not None:
                self._pos.append(i)
                self._io.append(io)
                self._table.append(isinstance(m, nn.Embedding))
        self.stacks = self._residual_stacks()

    def _range(self, i: int) -> tuple[int, int]:
        return bisect_left(self._pos, i), bisect_left(self._pos, self.index.ends[i])

    def _ends(self, i: int) -> Optional[tuple[int, int]]:
        """Indices of module i's first and last weighted modules — of those that transform features
        where there are any (a position table registered after Florence-2's projection is not its output)."""
        lo, hi = self._range(i)
        if lo == hi:
            return None
        applied = [k for k in range(lo, hi) if not self._table[k]]
        return (applied[0], applied[-1]) if applied else (lo, hi - 1)

    def io(self, i: int) -> tuple[Optional[int], Optional[int]]:
        """Input width of module i's first weighted module, output width of its last one."""
        ends = self._ends(i)
        if ends is None:
            return None, None
        return self._io[ends[0]][0], self._io[ends[1]][1]

    def io_pairs(self, i: int) -> list[tuple[int, int]]:
        """The (input, output) widths module i may have: a bare matrix may be used either way round."""
        ends = self._ends(i)
        if ends is None:
            return []
        first, last = ends
        a, _, a_known = self._io[first]
        _, b, b_known = self._io[last]
        if first == last and not a_known:
            return [(a, b), (b, a)]
        ins = [a] if a_known else list(self._io[first][:2])
        outs = [b] if b_known else list(self._io[last][:2])
        return [(x, y) for x in ins for y in outs]

    def is_table(self, i: int) -> bool:
        """Is module i an embedding table (nothing but lookups)?"""
        lo, hi = self._range(i)
        return lo < hi and all(self._table[lo:hi])

    def has_stack(self, i: int, stacks=None) -> bool:
        """Does module `i` hold a residual stack of blocks (or is it one)?"""
        ends = self.index.ends
        return any(i <= s < ends[i] for s in (self.stacks if stacks is None else stacks))

    def _residual_stacks(self) -> list[int]:
        # A stack of transformer blocks keeps its width: a block's last weighted or norm module (in
        # registration order: `down_proj`, or `post_attention_layernorm` after a MoE) is as wide as
        # its first input. A list of mergers or projections changes width, and is no stack.
        index = self.index
        containers = sorted({c for c in index.block_info()[0] if c >= 0})
        stacks = []
        for c in containers:
            first = c + 1
            if first >= index.ends[c] or not index.n_children[first]:
                continue  # blocks that are bare Linears: an MLP, not a stack of blocks
            a = self.io(first)[0]
            if a is not None and a == self._block_out(first):
                stacks.append(c)
        return stacks

    def _block_out(self, block: int) -> Optional[int]:
        for j in range(self.index.ends[block] - 1, block - 1, -1):
            m = self.index.modules[j]
            io = _io(m)
            if io is not None:
                return io[1]
            width = _norm_width(m)
            if width is not None:
                return width
        return None


def looks_like_projector(name: str) -> bool:
    leaf = name.rsplit(".", 1)[-1].lower()
    return any(w in leaf for w in _PROJECTOR_WORDS)


def maps_into(shapes: Shapes, names, i: int, widths: set, wide_source: bool = False) -> bool:
    """Rules 1 and 2: output in `widths`, from an input that is not (or, where shapes cannot tell, by name)."""
    for a, b in shapes.io_pairs(i):
        if b not in widths:
            continue
        if a not in widths and not wide_source:
            return True
        if looks_like_projector(names[i]):
            return True
    return False


def feeders(index, shapes: Shapes, candidates, projectors, reads: Optional[int] = None) -> list[int]:
    """Rule 3: a candidate just before a projector (the next sibling with parameters) whose output width
    is that projector's input width, followed back as far as the widths chain. Inside a tower
    (`reads`: the tower's width) only a single layer that reads the tower's width counts: the hidden
    layer of a projector MLP, not a neck or a front end built from the tower's config."""
    counts = index.param_counts()
    found = set(projectors)
    for p in sorted(projectors, reverse=True):
        while True:
            prev = _previous_sibling(index, p, counts)
            if prev is None or prev in found or prev not in candidates or shapes.is_table(prev):
                break
            a, b = shapes.io(prev)
            if b is None or b != shapes.io(p)[0]:
                break
            if reads is not None and (a != reads or index.n_children[prev] or _io(index.modules[prev]) is None):
                break
            found.add(prev)
            p = prev
    return sorted(found)


def _previous_sibling(index, i: int, counts) -> Optional[int]:
    parent = index.parents[i]
    best = None
    for j in range(parent + 1, i):
        if index.parents[j] == parent and counts[j] > 0:
            best = j
    return best


def free_parts(index, holders, taken) -> list[int]:
    """Children of the holders with parameters that are not, and do not contain or sit in, a taken root."""
    ends, parents, counts = index.ends, index.parents, index.param_counts()
    parts = []
    for h in sorted(holders):
        for i in range(h + 1, ends[h]):
            if parents[i] != h or i in taken:
                continue
            if any(i <= t < ends[i] or t <= i < ends[t] for t in taken):
                continue
            if counts[i] > 0:
                parts.append(i)
    return parts


def outside_projectors(index, shapes: Shapes, parts, widths: set) -> list[int]:
    """Candidates (a): projectors among the free parts next to the towers and the language model."""
    if not widths:
        return list(parts)
    direct = [p for p in parts if maps_into(shapes, index.names, p, widths)]
    return feeders(index, shapes, set(parts), direct)


def tower_tail(index, shapes: Shapes, tower: int, widths: set, tower_width: Optional[int]) -> list[int]:
    """Candidates (b): the tower's children outside its stack of blocks that map to the LM width. A
    learned table inside a tower (position embeddings, BOS/EOS tokens) projects no features; where
    the tower is as wide as the language model, only a projector-named child after the stack counts."""
    if not widths:
        return []
    ends = index.ends
    stack = main_stack(index, shapes, tower)
    main = [stack] if stack is not None else []
    last = stack if stack is not None else -1
    kids = [i for i in range(tower + 1, ends[tower]) if index.parents[i] == tower]
    cands = [i for i in kids if not shapes.has_stack(i, main) and shapes.io(i)[1] is not None
             and not shapes.is_table(i)]
    wide = tower_width is not None and tower_width in widths
    direct = [c for c in cands if maps_into(shapes, index.names, c, widths, wide_source=wide) and (not wide or c > last)]
    if not direct or tower_width is None or wide:
        return direct  # as wide as the language model, a layer's shape says nothing of its role
    return feeders(index, shapes, set(cands), direct, reads=tower_width)


def named_projectors(index, shapes: Shapes, towers, parts) -> list[int]:
    """The fallback where shapes find no projector: free parts and tower children after the tower's
    stack of blocks whose names say projector."""
    found = [p for p in parts if looks_like_projector(index.names[p])]
    for tower in towers:
        stack = main_stack(index, shapes, tower)
        found += [i for i in range(max(tower, stack or tower) + 1, index.ends[tower])
                  if index.parents[i] == tower and looks_like_projector(index.names[i])]
    return found


def carve(index, shapes: Shapes, root: int, towers, embedding: Optional[int], widths: set) -> tuple[list[int], list[int]]:
    """Candidates (c): split a language root that contains a tower into (language pieces, projectors):
    the largest subtrees free of towers; a piece holding the input embedding or a stack of blocks is
    language, one that passes the projector test is a projector, the rest stays language."""
    ends = index.ends
    pieces: list[int] = []
    stack = [root]
    while stack:
        p = stack.pop()
        if not any(p <= t < ends[p] for t in towers):
            pieces.append(p)
            continue
        if p in towers:
            continue
        stack.extend(i for i in range(p + 1, ends[p]) if index.parents[i] == p)
    pieces.sort()
    core = [p for p in pieces if shapes.has_stack(p) or (embedding is not None and p <= embedding < ends[p])]
    rest = [p for p in pieces if p not in core and index.param_counts()[p] > 0]
    projectors = outside_projectors(index, shapes, rest, widths) if widths else []
    return [p for p in pieces if p not in projectors], projectors


def main_stack(index, shapes: Shapes, tower: int) -> Optional[int]:
    """The tower's stack of blocks: the residual stack inside it with the most parameters."""
    counts = index.param_counts()
    inside = [s for s in shapes.stacks if tower <= s < index.ends[tower]]
    return max(inside, key=lambda s: (float(counts[s]), -s), default=None)


def tower_width(index, shapes: Shapes, tower: int) -> Optional[int]:
    """The width a tower's blocks hand on: the output of its stack's last block (a hierarchical tower
    widens stage by stage), else its config's `hidden_size` (or `d_model`)."""
    stack = main_stack(index, shapes, tower)
    if stack is not None:
        last = max(i for i in range(stack + 1, index.ends[stack]) if index.parents[i] == stack)
        width = shapes._block_out(last)
        if width is not None:
            return width
    cfg = index.modules[tower].__dict__.get("config")
    for key in ("hidden_size", "d_model"):
        value = getattr(cfg, key, None) if cfg is not None else None
        if isinstance(value, int):
            return value
    return None
