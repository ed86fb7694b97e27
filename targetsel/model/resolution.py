"""`Resolution`: what one selector means on one model, computed once and frozen.

Every terminal of a selection — names, compiled target forms, the display, explanations, locks,
parameter keys, checks, audits — is a function of this value. It carries the index it was evaluated
on, so a view never walks the model again and never needs the fluent `Selection` that made it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Optional

import torch
from torch import nn

from targetsel.errors import ModelRewrittenError
from targetsel.model.evaluate import check_against_model, mask_positions, select_mask
from targetsel.model.index import ModelIndex, get_index
from targetsel.query import nodes as N


@dataclass(frozen=True, eq=False)
class Resolution:
    """`node` evaluated on `index` (the index of `model`): `mask[i]` says whether module `i` is selected.

    `query` is the canonical query of `node`. `adapted`: the model already held PEFT adapter layers
    when the selection was made (answers then describe the adapted tree on purpose).
    """

    model: nn.Module
    index: ModelIndex
    node: Any
    mask: torch.Tensor
    query: str
    adapted: bool = False

    @cached_property
    def positions(self) -> list[int]:
        return mask_positions(self.mask)

    @cached_property
    def names(self) -> list[str]:
        return list(map(self.index.names.__getitem__, self.positions))

    @property
    def count(self) -> int:
        return len(self.positions)

    @property
    def model_class(self) -> str:
        index = self.index  # the user's class, not FSDP's wrapper or FSDP2's dynamic subclass (model/wrappers.py)
        return index.classes[index.class_ids[0]].__name__

    @property
    def module_count(self) -> int:
        return self.index.size - 1  # the root is not a named submodule

    def remember(self) -> None:
        """Record these names as what the selection meant, for `audit()` after get_peft_model."""
        remember(self.model, ("modules", self.node), self.names)

    def refined(self, node: Any) -> "Resolution":
        """This selection narrowed by `node` (`self & node`), on the same index."""
        both = N.and_(self.node, node)
        return resolve(self.model, both, index=self.index, adapted=self.adapted)


def resolve(model: nn.Module, node: Any, *, index: Optional[ModelIndex] = None, adapted: bool = False) -> Resolution:
    """Evaluate `node` on `model` (on `index` when the caller already holds the current one)."""
    index = index if index is not None else get_index(model)
    return Resolution(model=model, index=index, node=node, mask=select_mask(node, index),
                      query=N.to_query(node), adapted=adapted)


class Bound:
    """A selector bound to one model, not yet evaluated: what a `Selection` is, minus the fluent verbs.

    The layers above the model (views, the PEFT bridge) take a `Bound` and call `resolution()` when
    they need the answer, so none of them has to know the `Selection` facade. `adapted`: the model
    already held PEFT adapter layers when the selection was made; a selection made before
    get_peft_model must not quietly answer for the rewritten tree.
    """

    __slots__ = ("_model", "_node", "_adapted")

    def __init__(self, model: nn.Module, node: Any = N.ALL, *, _checked: bool = False):
        index = get_index(model, for_names=True)  # raises NotAModuleError for anything but an nn.Module
        if isinstance(node, N.Selector):
            node = node.root
        if not _checked:
            check_against_model(node, index)
        self._model = model
        self._node = node
        self._adapted = index.has_tuner_layers()

    @property
    def model(self) -> nn.Module:
        return self._model

    @property
    def node(self) -> Any:
        return self._node

    @property
    def adapted(self) -> bool:
        return self._adapted

    @property
    def query(self) -> str:
        """The canonical query string (callables from `.where(fn)` are shown but cannot be parsed)."""
        return N.to_query(self._node)

    @property
    def memory_key(self) -> tuple:
        return ("modules", self._node)

    def current_index(self) -> ModelIndex:
        """The model's index now; `ModelRewrittenError` when get_peft_model rewrote it since the selection was made."""
        index = get_index(self._model)
        if not self._adapted and index.has_tuner_layers():
            raise ModelRewrittenError(self._rewritten_message(index))
        return index

    def resolution(self) -> Resolution:
        """What the selection means now, evaluated once; every terminal is a function of it."""
        return resolve(self._model, self._node, index=self.current_index(), adapted=self._adapted)

    def stale_note(self, label: Optional[str] = None) -> Optional[str]:
        """A one-line stand-in for displays (a repr must not raise) when the model was rewritten since."""
        try:
            self.current_index()
        except ModelRewrittenError:
            return (f"{label or f'Selection({self.query!r})'} of {type(self._model).__name__}: not evaluated, the "
                    "model was rewritten by get_peft_model after this selection was made (names() says what to do)")
        return None

    def _rewritten_message(self, index: ModelIndex) -> str:
        return (
            f"the model of selection {self.query!r} ({type(self._model).__name__}) was rewritten by get_peft_model "
            f"after the selection was made: it now holds {index.tuner_layer_count()} PEFT adapter layer(s), so the "
            "selection would answer for adapter internals (base_layer, lora_A, …) instead of the model it was made on. "
            "Use what it resolved to before injection (take sel.resolved() or sel.lock() before get_peft_model; "
            "audit(peft_model, sel) compares with what PEFT wrapped), or select again on the adapted model on purpose: "
            f"select(model, {self.query!r})."
        )


def query_node(model: nn.Module, query: Any) -> Any:
    """The checked selector node of a query string or `Selector` on `model` (the one coercion of a query)."""
    from targetsel.errors import TargetselError, with_context

    if isinstance(query, N.Selector):
        node = query.root
        check_against_model(node, get_index(model, for_names=True))
        return node
    if isinstance(query, str):
        from targetsel.query.parser import parse

        node = parse(query).root
        try:
            check_against_model(node, get_index(model, for_names=True))
        except TargetselError as exc:
            raise with_context(exc, f"\n  in query: {query}") from None
        return node
    get_index(model, for_names=True)  # NotAModuleError first: the model is the first argument
    raise TargetselError(f"select(model, query): query must be a string or a Selector, got {type(query).__name__}")


def bind(model: nn.Module, query: Any) -> Bound:
    """A query string, `Selector` or `Bound` (e.g. a `Selection`) bound to `model`, for the layers below the facade."""
    if isinstance(query, Bound):
        return query
    return Bound(model, query_node(model, query), _checked=True)


# ---------------------------------------------------------------------------- remembered resolutions
# What a selection resolved to before get_peft_model rewrote its model, per model (weakly) and key:
# ("modules", node) or ("parameters", node, pattern). patch(), lock(), resolved() and to_peft()
# record; audit() reads it back when handed the selection after injection.
_REMEMBERED: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def remember(model: nn.Module, key: tuple, names: list[str]) -> None:
    try:
        _REMEMBERED.setdefault(model, {})[key] = list(names)
    except TypeError:  # an unhashable predicate inside .where(fn): nothing to key on
        pass


def recall(model: nn.Module, key: tuple) -> Optional[list[str]]:
    try:
        found = _REMEMBERED.get(model, {}).get(key)
    except TypeError:
        return None
    return None if found is None else list(found)
