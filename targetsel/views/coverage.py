"""Coverage: how much of each layer, block type and component a set of targets adapts.

A selection or a config can look right in a list of names and still leave whole layers out: a
hybrid model whose `q_proj`/`v_proj` exist in 4 of 32 layers, a model whose global-attention layers
have no `v_proj`. This view answers per *layer stack* (a numbered container whose blocks have
children — `model.layers`, not `Sequential(Linear, GELU, Linear)`; model/blocks.py), per layer and
block type (attention / mlp / mamba / moe, from the class and attribute name of the layer's child
that holds the module), and per component (model/components.py).

"How much" counts the selected modules against the *candidates*: the modules of the classes the
selection picks (a `Linear` selection is measured against the Linears). A *role* is a module's name
inside its layer with numbers as `*` (`self_attn.v_proj`, `mlp.experts.*.up_proj`); a role adapted
in some layers of a stack and not in others is a gap — either the module is there and not selected,
or it is absent where its parent (same class) is there — compared across the covered layers only,
since a layer left out entirely is the stack's gap (its `uncovered_candidates`), not each role's.
`intended_layers`: the targets restrict layers on purpose (`layers:`, `layers_to_transform`), so
layers left out are no gap.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Sequence

import torch

from targetsel.model.arrays import long_tensor
from targetsel.model.components import component_mask
from targetsel.model.threads import single_threaded
from targetsel.query.nodes import COMPONENTS
from targetsel.text.grouping import int_set_text

KINDS = ("attention", "mlp", "mamba", "moe", "other")
# A layer child's block type from words in its class name, then in its attribute name (first hit wins:
# `JambaSparseMoeBlock` is moe before it is anything else; `linear_attn` is attention by its name).
_KIND_WORDS = (
    ("moe", ("moe", "mixture", "experts")),  # not "sparse": sparse attention is attention
    ("mamba", ("mamba", "ssm")),
    ("attention", ("attn", "attention")),
    ("mlp", ("mlp", "feed_forward", "feedforward", "ffn", "ffw")),
)
_NUMBER = re.compile(r"(?<![^.])(?:0|[1-9][0-9]*)(?![^.])")  # a whole dotted segment of ASCII digits
STRIP_MAX = 64  # layers drawn one cell each; longer stacks are written as runs


def block_kind(class_name: str, attribute: str, child_names: Sequence[str] = ()) -> str:
    """The block type of a layer's child: attention, mlp, mamba, moe or other."""
    if "experts" in child_names:
        return "moe"
    for text in (class_name.lower(), attribute.lower()):
        for kind, words in _KIND_WORDS:
            if any(w in text for w in words):
                return kind
    return "other"


@dataclass(frozen=True)
class Stack:
    """A layer stack of the model: its container and, per layer number, the layer's root position."""

    container: str
    roots: tuple[int, ...]


@dataclass(frozen=True)
class _Layout:
    stacks: tuple[Stack, ...]
    stack_of: list[int]  # per position: stack number, -1 outside any stack (and for the layer roots' container)
    layer_of: list[int]  # per position: the layer's ordinal in its stack
    kind_of: list[int]  # per position: index into KINDS


def layout(index) -> _Layout:
    """The layer stacks of `index`, found once per index."""
    return index.memo("coverage_layout", lambda: _find_layout(index))


def _find_layout(index) -> _Layout:
    container, number, _ = index.block_info()
    names, modules, ends, n_children, parents = index.names, index.modules, index.ends, index.n_children, index.parents
    roots: dict[int, dict[int, int]] = {}
    for i, c in enumerate(container):
        if c >= 0 and parents[i] == c:
            roots.setdefault(c, {})[number[i]] = i
    n = index.size
    stack_of, layer_of, kind_of = [-1] * n, [-1] * n, [KINDS.index("other")] * n
    stacks = []
    for c, by_number in roots.items():
        if len(by_number) < 2 or not all(n_children[r] for r in by_number.values()):
            continue  # a Sequential of layers (Linear, GELU, …) is not a stack of blocks
        s = len(stacks)
        stacks.append(Stack(names[c], tuple(by_number[k] for k in sorted(by_number))))
        for layer, root in enumerate(stacks[-1].roots):  # ordinals: a ModuleDict may skip numbers
            stack_of[root : ends[root]] = [s] * (ends[root] - root)
            layer_of[root : ends[root]] = [layer] * (ends[root] - root)
            child = root + 1
            while child < ends[root]:  # the layer's direct children, each with its subtree
                kind = block_kind(type(modules[child]).__name__, names[child].rpartition(".")[2],
                                  list(modules[child]._modules))
                kind_of[child : ends[child]] = [KINDS.index(kind)] * (ends[child] - child)
                child = ends[child]
    return _Layout(tuple(stacks), stack_of, layer_of, kind_of)


@dataclass(frozen=True)
class RoleGap:
    """A role adapted in some layers of a stack and not in others."""

    role: str
    kind: str
    adapted: tuple[int, ...]  # layers where it is selected
    not_selected: tuple[int, ...]  # layers where it exists (a candidate) and is not selected
    absent: tuple[int, ...]  # layers where its parent (same class) exists and it does not


@dataclass(frozen=True)
class StackCoverage:
    container: str
    layers: int
    covered: tuple[int, ...]  # layers (ordinals) with at least one selected module
    adapted: dict  # kind → per-layer counts of selected modules
    candidates: dict  # kind → per-layer counts of modules of the selected classes
    gaps: tuple[RoleGap, ...] = ()
    uncovered_candidates: tuple[int, ...] = ()  # positions of candidates in the uncovered layers

    @property
    def partial(self) -> bool:
        return 0 < len(self.covered) < self.layers

    def kinds_in(self, layers: Sequence[int]) -> list[str]:
        """The block types with candidates in `layers`, in KINDS order."""
        return [k for k in KINDS if k != "other" and any(self.candidates[k][x] for x in layers)]


@dataclass(frozen=True)
class Coverage:
    stacks: tuple[StackCoverage, ...]
    index: object = field(repr=False)
    mask: torch.Tensor = field(repr=False)
    candidate_mask: torch.Tensor = field(repr=False)

    @functools.cached_property
    def components(self) -> dict[str, tuple[int, int]]:
        """Component → (selected modules, candidates), for the components the model has."""
        out = {}
        for name in COMPONENTS:
            inside = component_mask(self.index, name)
            if bool(inside.any()):
                out[name] = (int((inside & self.mask).sum()), int((inside & self.candidate_mask).sum()))
        return out


@single_threaded  # one entry per module: torch's thread pool only adds overhead (model/threads.py)
def coverage(index, mask: torch.Tensor, *, intended_layers: bool = False) -> Coverage:
    """The coverage of the modules in `mask` (a bool mask over `index`)."""
    lay = layout(index)
    class_ids = index.class_ids_tensor()
    selected_classes = torch.unique(class_ids[mask])
    candidate_mask = torch.isin(class_ids, selected_classes) & index.universe()
    stacks = tuple(_stack_coverage(index, lay, s, mask, candidate_mask, intended_layers)
                   for s in range(len(lay.stacks)))
    return Coverage(stacks, index, mask, candidate_mask)


def _stack_coverage(index, lay: _Layout, s: int, mask, candidate_mask, intended: bool) -> StackCoverage:
    # One piece on purpose: one pass over the stack's candidates and selected modules fills every count.
    # The per-module facts (stack, layer, kind, role) are tensors once per index (`_layout_tensors`), so a
    # pass is a few bincounts and uniques over the stack's positions instead of a Python loop over them.
    stack = lay.stacks[s]
    n = len(stack.roots)
    stack_t, layer_t, kind_t, role_t, roles = _layout_tensors(index, lay)
    inside = stack_t == s
    cand, sel = candidate_mask & inside, mask & inside
    width = len(KINDS) * n

    def per_kind(where) -> dict:
        counts = torch.bincount(kind_t[where] * n + layer_t[where], minlength=width).view(len(KINDS), n).tolist()
        return dict(zip(KINDS, counts))

    def role_layers(where) -> dict[int, set]:
        by_role: dict[int, set] = {}
        for pair in torch.unique(role_t[where] * n + layer_t[where]).tolist():
            by_role.setdefault(pair // n, set()).add(pair % n)
        return by_role

    candidates, adapted = per_kind(cand), per_kind(sel)
    present = role_layers(cand)
    present_roles = {roles[r]: layers for r, layers in present.items()}
    chosen = sel.nonzero().flatten()
    chosen_roles = role_t[chosen]
    distinct, inverse = torch.unique(chosen_roles, return_inverse=True)
    first = torch.full((len(distinct),), len(chosen), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(chosen)), reduce="amin")
    first = torch.sort(first).values  # the roles in the order their first selected module comes
    kind_first = kind_t[chosen[first]].tolist()
    by_role = role_layers(sel)
    selected_roles: dict[str, set] = {}
    role_kind: dict[str, str] = {}
    for r, kind in zip(chosen_roles[first].tolist(), kind_first):
        selected_roles[roles[r]] = by_role[r]
        role_kind[roles[r]] = KINDS[kind]
    covered = tuple(sorted({x for layers in selected_roles.values() for x in layers}))
    compared = set(covered)  # layers left out entirely are the stack's gap, not each role's
    gaps = []
    for role, layers in selected_roles.items():
        not_selected = tuple(sorted((present_roles.get(role, set()) & compared) - layers))
        absent = tuple(sorted(_absent(index, stack, role, layers, compared - layers)))
        if not_selected or absent:
            gaps.append(RoleGap(role, role_kind[role], tuple(sorted(layers)), not_selected, absent))
    uncovered = () if intended or not covered else tuple(
        (cand & ~torch.isin(layer_t, torch.tensor(covered, dtype=torch.long))).nonzero().flatten().tolist())
    return StackCoverage(stack.container, n, covered, adapted, candidates, tuple(gaps), uncovered)


def _layout_tensors(index, lay: _Layout) -> tuple:
    """(stack, layer, kind, role id per position, the role strings), once per index."""
    return index.memo("coverage_roles", lambda: _build_layout_tensors(index, lay))


def _build_layout_tensors(index, lay: _Layout) -> tuple:
    roles: dict[str, int] = {}
    role_of = [-1] * index.size
    role_id: dict[str, int] = {}  # a name's part below its layer → role id: each part recurs in every layer
    names = index.names
    for i, (s, layer) in enumerate(zip(lay.stack_of, lay.layer_of)):
        if s >= 0:
            below = names[i][len(names[lay.stacks[s].roots[layer]]) + 1:]
            found = role_id.get(below)
            if found is None:
                found = role_id[below] = roles.setdefault(_NUMBER.sub("*", below), len(roles))
            role_of[i] = found
    return tuple(map(long_tensor, (lay.stack_of, lay.layer_of, lay.kind_of, role_of))) + (list(roles),)


def _absent(index, stack: Stack, role: str, layers: set, others: set) -> list[int]:
    """Layers in `others` that lack `role` although its parent is there with the class it has where
    the role is adapted (the global-attention layers of a model whose attention may drop `v_proj`)."""
    if "*" in role or not role:
        return []
    parent = role.rpartition(".")[0]
    names, position = index.names, index.position
    ref = position(_join(names[stack.roots[min(layers)]], parent))
    cls = type(index.modules[ref]) if ref is not None else None
    out = []
    for layer in others:
        base = names[stack.roots[layer]]
        here = position(_join(base, parent))
        if here is not None and type(index.modules[here]) is cls and position(_join(base, role)) is None:
            out.append(layer)
    return out


def _join(base: str, rest: str) -> str:
    return f"{base}.{rest}" if rest else base


# --------------------------------------------------------------------- the per-layer strip


@dataclass(frozen=True)
class LayerStrip:
    """Which layers of one stack hold selected modules: what the display draws."""

    container: str
    layers: int
    covered: tuple[int, ...]

    @property
    def partial(self) -> bool:
        return 0 < len(self.covered) < self.layers


def layer_strips(index, mask: torch.Tensor) -> list[LayerStrip]:
    """Per layer stack, the covered layers — from tensors, cheap enough for every notebook repr."""
    lay = layout(index)
    if not lay.stacks:
        return []
    stack_t, layer_t = index.memo("coverage_layout_t", lambda: (torch.tensor(lay.stack_of), torch.tensor(lay.layer_of)))
    picked = mask & (stack_t >= 0)
    width = max(len(st.roots) for st in lay.stacks)
    keys = torch.unique(stack_t[picked] * width + layer_t[picked]).tolist()
    covered: dict[int, list[int]] = {}
    for key in keys:
        covered.setdefault(key // width, []).append(key % width)
    return [LayerStrip(st.container, len(st.roots), tuple(covered.get(s, ()))) for s, st in enumerate(lay.stacks)]


def shown_strips(strips: Sequence[LayerStrip], max_stacks: int = 2) -> tuple[list[LayerStrip], int]:
    """(the stacks a display draws, how many more hold selected modules): the stacks holding selected
    modules, at most `max_stacks`; the first stack when none does."""
    holding = [s for s in strips if s.covered] or list(strips[:1])
    return holding[:max_stacks], max(len(holding) - max_stacks, 0)


def strip_lines(strips: Sequence[LayerStrip], max_stacks: int = 2) -> list[str]:
    """One line per drawn stack: `layers: model.layers ▮▮▯▯ 2/4 (0,1)`."""
    shown, more = shown_strips(strips, max_stacks)
    lines = [f"layers: {s.container} {strip_cells(s)}" for s in shown]
    if more:
        lines[-1] += f" · {more} more stack(s) with adapters"
    return lines


def strip_cells(s: LayerStrip) -> str:
    """`▮▮▯▯ 2/4 (0,1)`: a cell per layer, or runs (`0..27 of 0..79 (28/80)`) past STRIP_MAX layers."""
    count = f"{len(s.covered)}/{s.layers}"
    if s.layers <= STRIP_MAX:
        covered = set(s.covered)
        cells = "".join("▮" if x in covered else "▯" for x in range(s.layers))
        return f"{cells} {count}" + (f" ({_runs(s.covered)})" if s.partial else "")
    if not s.covered:
        return f"none of 0..{s.layers - 1} (0/{s.layers})"
    return f"{_runs(s.covered)} of 0..{s.layers - 1} ({count})"


def _runs(values) -> str:
    return int_set_text(values).strip("{}")
