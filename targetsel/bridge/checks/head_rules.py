"""Rules about the output head and the modules that hold an embedding's weight (tied)."""

from __future__ import annotations

from typing import Optional

from torch import nn

from targetsel.bridge.checks.registry import Finding, finding, rule
from targetsel.bridge.checks.subject import Subject


@rule("output-head", "warning")
def output_head(s: Subject) -> list[Finding]:
    """The output head, or a module holding an embedding's weight (tied), is selected."""
    index = s.index
    head = index.output_head_position()
    ties = embedding_ties(index)
    hits = [i for i in s.positions if i == head or i in ties]
    if not hits:
        return []
    tie_of = next((ties[i] for i in hits if i in ties), None)
    names = [index.names[i] for i in hits]
    tie = f" (its {tie_of[1]} is tied to {index.names[tie_of[0]]}.weight)" if tie_of else ""
    cost = ""
    first = index.modules[hits[0]]
    r = getattr(s.config, "r", None)
    if isinstance(first, nn.Linear) and isinstance(r, int):
        cost = (f" {s.method} at r={r} adds {r}×({first.in_features}+{first.out_features}) = "
                f"{r * (first.in_features + first.out_features):,} parameters there.")
    merge = " Because the weight is shared, merging the adapter changes the input embeddings too." if tie_of else ""
    # .linear() leaves out what get_output_embeddings() returns, not every module tied to an embedding.
    linear_note = "; .linear() never selects the head" if head in hits else ""
    fix = s.fix(selection=f"Leave it out (- glob:{names[0]}{linear_note})",
                config=f"Leave it out of target_modules (exclude_modules=[{names[0]!r}])")
    what = (f"The output head {s.grouped(names, 3)} is selected" if head in hits
            else f"A module holding an embedding's weight is selected: {s.grouped(names, 3)}")
    message = (
        f"{what}{tie}: an adapter there re-learns the vocabulary projection rather than the model's behaviour."
        f"{cost}{merge} {fix}, unless you mean to adapt the output layer."
    )
    return [finding("output-head", message, s, hits)]


def embedding_ties(index) -> dict[int, tuple[int, str]]:
    """Positions of modules holding an embedding's weight as their own parameter → (embedding position,
    parameter name); once per index.

    Found from structure — the weight of every `nn.Embedding`, and of whatever `get_input_embeddings()`
    returns — so a plain module whose head reuses an embedding's weight is caught too. Embeddings that
    share a weight (an encoder's and a decoder's) are inputs, not heads, and are left out.
    """
    return index.memo("embedding_ties", lambda: _find_ties(index))


def _find_ties(index) -> dict[int, tuple[int, str]]:
    # Plain loops over the index's lists: a few ms at 60k modules, where tensor ops paid more to start.
    embedding_classes = {cid for cid, cls in enumerate(index.classes) if issubclass(cls, nn.Embedding)}
    sources = [pos for pos, cid in enumerate(index.class_ids) if cid in embedding_classes] if embedding_classes else []
    given = _input_embedding_position(index)
    if given is not None:  # the model's own input embedding names a tie it shares with other embeddings
        sources = [given] + [pos for pos in sources if pos != given]
    source_of: dict[int, int] = {}  # id(weight) → position of the embedding it is the weight of
    for pos in sources:
        weight = index.modules[pos]._parameters.get("weight")
        if weight is not None:
            source_of.setdefault(id(weight), pos)
    ties: dict[int, tuple[int, str]] = {}
    if not source_of:
        return ties
    skip, params, modules = set(sources), index.params, index.modules
    # Registrations list every module holding a parameter (+1); the -1s are subtree-sum corrections.
    for pos, param, sign in zip(index.reg_pos, index.reg_param, index.reg_sign):
        if sign < 0 or pos in skip or pos in ties:
            continue
        weight = params[param]
        embedding = source_of.get(id(weight))
        if embedding is None:
            continue
        # The parent of a module listed under two names is registered too; only direct holders count.
        pname = next((k for k, p in modules[pos]._parameters.items() if p is weight), None)
        if pname is not None:
            ties[pos] = (embedding, pname)
    return ties


def _input_embedding_position(index) -> Optional[int]:
    getter = getattr(index.model_ref(), "get_input_embeddings", None)
    if not callable(getter):
        return None
    try:
        embedding = getter()
    except Exception:  # some models raise NotImplementedError or AttributeError here
        return None
    if not isinstance(embedding, nn.Module):
        return None
    # By identity, as the tie itself is: once per index, as the ties are memoised with it.
    return next((pos for pos, module in enumerate(index.modules) if module is embedding), None)
