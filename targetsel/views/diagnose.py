"""Say why a selection is empty: which clause of its `&` chain emptied it, and why."""

from __future__ import annotations

import re

from targetsel.query import nodes as N
from targetsel.text.suggest import closest
from targetsel.model.evaluate import EvalContext, evaluate
from targetsel.model.resolution import Resolution
from targetsel.views.reasons import why_none
from targetsel.model.wrappers import class_name


def _clause_label(node) -> str:
    if isinstance(node, N.Flag):
        return f"{node.kind}()"
    return N.to_query(node)


def explain_empty(res: Resolution) -> str:
    """'trainable() kept 0 of 412 modules: every parameter has requires_grad=False. …'"""
    index = res.index
    node = res.node
    ctx = EvalContext(index)
    label = class_name(index.model_ref())  # the user's class, not a wrapper's (model/wrappers.py)
    clauses = list(node.items) if isinstance(node, N.And) and not N._has_outermost(node) else [node]
    current = index.universe()
    for clause in clauses:
        before = current
        current = evaluate(clause, ctx, current)
        if not bool(current.any()):
            n_before = int(before.sum())
            return (
                f"the selection {res.query!r} is empty: {_clause_label(clause)} kept 0 of {n_before} "
                f"modules of {label}: {why_none(clause, ctx, before)}"
            )
    return f"the selection {res.query!r} selects none of the {index.size - 1} modules of {label}."


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
