"""Say why a selection is empty: which clause of its `&` chain emptied it, and why."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch

from targetsel.query import nodes as N
from targetsel.errors import closest
from targetsel.model.evaluate import EvalContext, evaluate

if TYPE_CHECKING:
    from targetsel.selection import Selection


def _clause_label(node) -> str:
    if isinstance(node, N.Flag):
        return f"{node.kind}()"
    return N.to_query(node)


def _why(node, ctx: EvalContext, before: torch.Tensor) -> str:
    index = ctx.index
    if isinstance(node, N.Flag) and node.kind in ("trainable", "frozen", "mixed"):
        total, rg = ctx.grad()
        n_params = len(index.params)
        n_trainable = int(index.requires_grad_vector().sum())
        if node.kind == "trainable" and n_trainable == 0:
            return (
                f"every parameter has requires_grad=False ({n_params} parameters). "
                "If you froze the base model before selecting, select first."
            )
        if node.kind == "frozen" and n_trainable == n_params:
            return "every parameter has requires_grad=True: nothing is frozen yet."
        return f"{n_trainable} of {n_params} parameters require grad, but none of the candidates is {node.kind}."
    if isinstance(node, N.Flag) and node.kind == "linear":
        return "none of the candidates is a Linear/Conv1D (the output head is never linear() here)."
    if isinstance(node, (N.NameRegex, N.Glob)):
        cand = [index.names[i] for i in before.nonzero().flatten().tolist()[:2000]]
        probe = node.pattern.strip("^$.*") or node.pattern
        near = closest(probe, cand, n=3)
        return "no candidate name matches" + (f"; closest names: {', '.join(near)}" if near else "")
    if isinstance(node, N.TypeIs):
        kinds = {}
        for i in before.nonzero().flatten().tolist():
            cls = type(index.modules[i]).__name__
            kinds[cls] = kinds.get(cls, 0) + 1
        top = ", ".join(f"{k} ×{v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])[:5])
        return f"no candidate is a {node.name}; the candidates are {top}"
    if isinstance(node, N.Layers):
        container, _, length = index.block_info()
        lengths = sorted({length[i] for i in before.nonzero().flatten().tolist() if container[i] >= 0})
        if not lengths:
            return "none of the candidates sits inside a numbered block (a ModuleList-like container)"
        return f"no candidate's block index is in that range (block containers here have {lengths} blocks)"
    if isinstance(node, N.Component):
        from targetsel.model.components import component_roots

        roots = component_roots(index)
        if not roots[node.name]:
            present = ", ".join(f"{c} ({', '.join(r)})" for c, r in roots.items() if r) or "none"
            return (
                f"this model has no {node.name} component (looked for a {node.name}_config sub-model, the "
                f"embeddings and common module names); its components: {present}"
            )
        return f"none of the candidates is inside the {node.name} component ({', '.join(roots[node.name])})"
    if isinstance(node, N.Under):
        return "none of the candidates lies inside " + (repr(node.prefix) if node.prefix else f"({N.to_query(node.of)})")
    return "no candidate satisfies it"


def explain_empty(selection: "Selection") -> str:
    """'trainable() kept 0 of 412 modules: every parameter has requires_grad=False. …'"""
    index = selection._index()
    node = selection._node
    ctx = EvalContext(index)
    label = f"{type(index.model_ref()).__name__}"
    clauses = list(node.items) if isinstance(node, N.And) and not N._has_outermost(node) else [node]
    current = index.universe()
    for clause in clauses:
        before = current
        current = evaluate(clause, ctx, current)
        if not bool(current.any()):
            n_before = int(before.sum())
            return (
                f"the selection {selection.query!r} is empty: {_clause_label(clause)} kept 0 of {n_before} "
                f"modules of {label}: {_why(clause, ctx, before)}"
            )
    return f"the selection {selection.query!r} selects none of the {index.size - 1} modules of {label}."


# ---------------------------------------------------------------------------- shared why-texts
# Used by the preflight checks (`checks.py`) and `Selection.explain` (`explain.py`).

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def selector_words(node) -> list[str]:
    """The literal words a selector names (regex/glob fragments, type names, under: prefixes)."""
    words: list[str] = []
    for n in N.walk(node):
        if isinstance(n, (N.NameRegex, N.Glob)):
            words += [w for w in _WORD.findall(n.pattern) if len(w) > 1]
        elif isinstance(n, N.TypeIs):
            words.append(n.name.rsplit(".", 1)[-1])
        elif isinstance(n, N.Under) and n.prefix is not None:
            words.append(n.prefix)
        elif isinstance(n, N.Layers) and n.within is not None:
            words.append(n.within)
    return list(dict.fromkeys(words))


def target_words(target_modules) -> list[str]:
    """The words of a PEFT `target_modules` value: list entries, or the literal runs of a regex."""
    if isinstance(target_modules, str):
        return list(dict.fromkeys(w for w in _WORD.findall(target_modules) if len(w) > 1))
    return list(dict.fromkeys(str(t) for t in target_modules or ()))


def nearest_misses(index, words) -> tuple[list[str], list[str]]:
    """(closest module names, closest class names) in the model for the given words, best first."""
    segments = list(dict.fromkeys(seg for name in index.names[1:] for seg in name.split(".") if not (seg.isascii() and seg.isdigit())))
    full = index.names[1:] if index.size <= 20000 else []
    classes = index.class_names()
    mods: list[str] = []
    kinds: list[str] = []
    for word in words:
        candidates = full if "." in word else segments
        mods += [m for m in closest(word, candidates) if m != word]
        kinds += [k for k in closest(word, classes) if k != word]
    return list(dict.fromkeys(mods))[:5], list(dict.fromkeys(kinds))[:5]


def nearest_misses_text(index, words) -> str:
    """' Nearest misses — module names: q_proj, k_proj; class names: Linear.' or ''."""
    mods, kinds = nearest_misses(index, words)
    parts = []
    if mods:
        parts.append("module names: " + ", ".join(mods))
    if kinds:
        parts.append("class names: " + ", ".join(kinds))
    return (" Nearest misses — " + "; ".join(parts) + ".") if parts else ""


def frozen_root(index, pos: int, total: torch.Tensor, requiring: torch.Tensor) -> int:
    """The outermost ancestor-or-self of `pos` whose parameters are all frozen (`pos` itself if none above)."""
    root = pos
    p = index.parents[pos]
    while p > 0 and total[p] > 0 and requiring[p] == 0:
        root = p
        p = index.parents[p]
    return root
