"""Evaluate a selector node against a model index, giving a boolean mask over module positions.

Invariant: `evaluate(node, ctx, domain) == semantics(node) & domain`. `domain` only lets cheap
clauses of an `&` narrow what expensive ones (regex, glob, callables) must look at; clauses whose
meaning depends on the whole selection (`outermost`, `under:(…)`) evaluate on the full universe.
"""

from __future__ import annotations

from typing import Callable

import torch

from targetsel.query import nodes as N
from targetsel.errors import TargetselError, UnknownNameError
from targetsel.model.classes import class_matches, linear_mask
from targetsel.model.index import ModelIndex
from targetsel.model.quantized import quantized_mask
from targetsel.model.threads import callers_threads, single_threaded
from targetsel.model.matches import named_like, pattern_mask, under_mask
from targetsel.model.matches import under_roots as under_roots
from targetsel.text.suggest import closest, suggest


class EvalContext:
    """One evaluation: the index plus grad state read once, at the moment the terminal runs."""

    def __init__(self, index: ModelIndex):
        self.index = index
        self._grad = None
        self._grad_within = None

    def grad(self, within: "torch.Tensor | None" = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(parameters used, of which requires_grad) per module: right at `within`'s positions (every
        position when None), read once per evaluation — and only for the parameters those modules use."""
        covered = self._grad_within
        if self._grad is not None and (covered is None or (within is not None and not bool((within & ~covered).any()))):
            return self._grad
        if within is not None and covered is not None:
            within = within | covered
        self._grad = self.index.grad_counts(within=within)
        self._grad_within = within
        return self._grad


def _indices(mask: torch.Tensor) -> list[int]:
    return mask.nonzero().flatten().tolist()


def _from_indices(index: ModelIndex, kept: list[int]) -> torch.Tensor:
    mask = torch.zeros(index.size, dtype=torch.bool)
    if kept:
        mask[torch.tensor(kept, dtype=torch.long)] = True
    return mask


# ---------------------------------------------------------------------------- binding checks


def check_against_model(node, index: ModelIndex) -> None:
    """Names a selector refers to (types, `under:` prefixes) must exist in this model."""
    for n in N.walk(node):
        if isinstance(n, N.TypeIs):
            if not any(class_matches(c, n.name, n.exact) for c in index.classes):  # every class listed is present
                present = index.class_names()
                hint = suggest(n.name, present, what="(classes in this model)")
                raise UnknownNameError(
                    f"no module of {_model_label(index)} is {'exactly ' if n.exact else ''}a {n.name!r}"
                    + (f"; {hint}" if hint else f"; classes present: {', '.join(sorted(present)[:12])}")
                )
        elif isinstance(n, N.Under) and n.prefix is not None:
            if not under_roots(index, n.prefix):
                hint = suggest(n.prefix, [nm for nm in index.names if nm], show=repr)
                raise UnknownNameError(
                    f"under({n.prefix!r}): {_model_label(index)} has no module named {n.prefix!r} "
                    "(full name or dotted suffix)" + (f"; {hint}" if hint else "")
                )
        elif isinstance(n, N.Layers) and n.within is not None:
            containers = sorted({index.names[c] for c in index.block_info()[0] if c >= 0})
            if not any(c == n.within or c.endswith("." + n.within) for c in containers):
                near = closest(n.within, containers, n=3) or containers[:5]
                raise UnknownNameError(
                    f"layers(within={n.within!r}): {_model_label(index)} has no block container named {n.within!r} "
                    f"(full name or dotted suffix); its block containers: {', '.join(repr(c) for c in near) or 'none'}"
                )


def _model_label(index: ModelIndex) -> str:
    model = index.model_ref()
    return f"{type(model).__name__} ({index.size - 1} modules)"


# ---------------------------------------------------------------------------- evaluation

# Grad-state flags read one flag per parameter under the domain: after the structural atoms narrow it.
_CHEAP_FIRST = {"trainable": 4, "frozen": 4, "mixed": 4, "and": 5, "or": 5, "not": 5, "diff": 5, "name": 8, "glob": 7, "where": 9}


def evaluate(node, ctx: EvalContext, domain: torch.Tensor) -> torch.Tensor:
    handler = _HANDLERS.get(type(node))
    if handler is None:
        raise TargetselError(f"cannot evaluate {node!r}")
    return handler(node, ctx, domain)


def _flag(node: N.Flag, ctx: EvalContext, domain):
    index = ctx.index
    kind = node.kind
    if kind == "all":
        return domain
    if kind == "linear":
        return domain & linear_mask(index)
    if kind == "quantized":
        return domain & quantized_mask(index)
    if kind == "leaf":
        return domain & index.leaf_mask()
    if kind == "outermost":
        return domain & ~index.ancestors_mask(index.universe())  # outermost of everything
    total, rg = ctx.grad(domain)  # right at the domain's positions, which is all the result keeps
    has = total > 0
    if kind == "trainable":
        return domain & has & (rg == total)
    if kind == "frozen":
        return domain & has & (rg == 0)
    if kind == "mixed":
        return domain & has & (rg > 0) & (rg < total)
    raise TargetselError(f"unknown flag {kind!r}")


def _type(node: N.TypeIs, ctx, domain):
    index = ctx.index
    key = ("type", node.name, node.exact)
    return domain & index.memo(key, lambda: index.class_mask(lambda c: class_matches(c, node.name, node.exact)))


def _name(node: N.NameRegex, ctx, domain):
    return pattern_mask(ctx.index, "regex", node.pattern, domain)  # remembered per index (model/matches.py)


def _glob(node: N.Glob, ctx, domain):
    return pattern_mask(ctx.index, "glob", node.pattern, domain)


def _under(node: N.Under, ctx, domain):
    index = ctx.index
    if node.prefix is not None:
        return domain & under_mask(index, node.prefix)
    return domain & index.ancestors_mask(evaluate(node.of, ctx, index.universe()))


def _layers(node: N.Layers, ctx, domain):
    index = ctx.index
    container, block, length = index.blocks
    inside = container >= 0
    if node.within is not None:
        inside &= torch.isin(container, torch.tensor(named_like(index, node.within), dtype=torch.long))
    # Each range's ends resolved per module against its own container's length (negative = from the end).
    hit = torch.zeros(index.size, dtype=torch.bool)
    for start, stop in node.ranges:
        lo = torch.zeros_like(block) if start is None else (length + start if start < 0 else torch.full_like(block, start))
        hi = length - 1 if stop is None else (length + stop if stop < 0 else torch.full_like(block, stop))
        hit |= (block >= lo) & (block <= hi)
    return domain & inside & hit


def _component(node: N.Component, ctx, domain):
    from targetsel.model.components import component_mask

    return domain & component_mask(ctx.index, node.name)


def _and(node: N.And, ctx, domain):
    items = list(node.items)
    outermost = any(isinstance(i, N.Flag) and i.kind == "outermost" for i in items)
    rest = [i for i in items if not (isinstance(i, N.Flag) and i.kind == "outermost")]
    # Cheap clauses first so that regexes and callables see as few names as possible.
    rest.sort(key=lambda i: _CHEAP_FIRST.get(getattr(i, "kind", ""), 0))
    current = ctx.index.universe() if outermost else domain
    for item in rest:
        if not bool(current.any()):
            break
        current = evaluate(item, ctx, current)
    if outermost:
        current = current & ~ctx.index.ancestors_mask(current)
        current = current & domain
    return current


def _or(node: N.Or, ctx, domain):
    result = torch.zeros_like(domain)
    remaining = domain
    for item in node.items:
        got = evaluate(item, ctx, remaining)
        result = result | got
        remaining = remaining & ~got
    return result


def _not(node: N.Not, ctx, domain):
    return domain & ~evaluate(node.item, ctx, domain)


def _diff(node: N.Diff, ctx, domain):
    left = evaluate(node.left, ctx, domain)
    return left & ~evaluate(node.right, ctx, left)


def _where(node: N.Where, ctx, domain):
    index = ctx.index
    fn: Callable = node.fn
    kept = []
    with callers_threads():
        for i in _indices(domain):
            try:
                result = fn(index.names[i], index.modules[i])
            except Exception as exc:
                raise TargetselError(
                    f"where({node.label}) raised {type(exc).__name__}: {exc} on module {index.names[i]!r}"
                ) from exc
            try:
                ok = bool(result)  # a tensor of several values, say, is neither true nor false
            except Exception as exc:
                raise TargetselError(
                    f"where({node.label}) returned a {type(result).__name__} that is neither true nor false on module "
                    f"{index.names[i]!r} ({type(exc).__name__}: {exc}); return a bool"
                ) from exc
            if ok:
                kept.append(i)
    return _from_indices(index, kept)


_HANDLERS = {
    N.Flag: _flag,
    N.TypeIs: _type,
    N.NameRegex: _name,
    N.Glob: _glob,
    N.Under: _under,
    N.Layers: _layers,
    N.Component: _component,
    N.And: _and,
    N.Or: _or,
    N.Not: _not,
    N.Diff: _diff,
    N.Where: _where,
}


@single_threaded
def mask_positions(mask: torch.Tensor) -> list[int]:
    """The selected positions, in order (torch's thread pool costs a busy machine more than it saves here)."""
    return _indices(mask)


@single_threaded
def select_mask(node, index: ModelIndex) -> torch.Tensor:
    ctx = EvalContext(index)
    return evaluate(node, ctx, index.universe())
