"""Say why a selection is empty: which clause of its `&` chain emptied it, and why."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from . import nodes as N
from .errors import closest
from .evaluate import EvalContext, evaluate

if TYPE_CHECKING:
    from .selection import Selection


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
