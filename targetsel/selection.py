"""`Selection`: an immutable selector bound to one model, with the fluent filters and terminals.

Every filter returns a new `Selection` holding a new selector node; nothing is evaluated until a
terminal (`names()`, `len()`, `modules()`, `regex()`, `to_peft()`, display) runs, and each
terminal reads the model as it is at that moment — except after `get_peft_model`: a selection made
on a model without PEFT adapter layers refuses to answer once the model holds some
(`ModelRewrittenError`), because its names would then describe adapter internals. `resolved()`
freezes what a selection means now, for logs and for `audit()`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Union

import torch
from torch import nn

from targetsel.query import nodes as N
from targetsel.query.patterns import describe
from targetsel.errors import ModelMismatchError, ModelRewrittenError, SelectionError, SpecError, TargetselError
from targetsel.model.evaluate import check_against_model, select_mask
from targetsel.model.index import ModelIndex, get_index

TypeLike = Union[type, str]


class Selection:
    """The modules of one model that a selector picks. Immutable; every method returns a new one."""

    # `_adapted`: the model held PEFT adapter layers when the selection was made. A selection made
    # before get_peft_model must not quietly answer for the rewritten tree (see `_index`).
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

    # ------------------------------------------------------------------ plumbing
    @property
    def model(self) -> nn.Module:
        return self._model

    @property
    def selector(self) -> N.Selector:
        """The model-independent selector; `str()` of it is the canonical query."""
        return N.Selector(self._node)

    @property
    def query(self) -> str:
        """The canonical query string (callables from `.where(fn)` are shown but cannot be parsed)."""
        return N.to_query(self._node)

    def _with(self, node, other: Optional["Selection"] = None) -> "Selection":
        out = object.__new__(Selection)
        out._model = self._model
        out._node = node
        # Combined with a selection made before get_peft_model, the result is from before it too.
        out._adapted = self._adapted and (other is None or other._adapted)
        return out

    def _refine(self, node, other: Optional["Selection"] = None) -> "Selection":
        check_against_model(node, get_index(self._model, for_names=True))
        return self._with(N.and_(self._node, node), other)

    def _index(self) -> ModelIndex:
        index = get_index(self._model)
        if not self._adapted and index.has_tuner_layers():
            raise ModelRewrittenError(self._rewritten_message(index))
        return index

    def _rewritten_message(self, index: ModelIndex) -> str:
        return (
            f"the model of selection {self.query!r} ({type(self._model).__name__}) was rewritten by get_peft_model "
            f"after the selection was made: it now holds {index.tuner_layer_count()} PEFT adapter layer(s), so the "
            "selection would answer for adapter internals (base_layer, lora_A, …) instead of the model it was made on. "
            "Use what it resolved to before injection (take sel.resolved() or sel.lock() before get_peft_model; "
            "audit(peft_model, sel) compares with what PEFT wrapped), or select again on the adapted model on purpose: "
            f"select(model, {self.query!r})."
        )

    def _mask(self, index: Optional[ModelIndex] = None) -> torch.Tensor:
        return select_mask(self._node, index if index is not None else self._index())

    # ------------------------------------------------------------------ filters
    def trainable(self) -> "Selection":
        """Modules with parameters, all of which (tied ones included) require grad."""
        return self._refine(N.Flag(kind="trainable"))

    def frozen(self) -> "Selection":
        """Modules with parameters, none of which requires grad."""
        return self._refine(N.Flag(kind="frozen"))

    def mixed(self) -> "Selection":
        """Modules with some parameters that require grad and some that do not."""
        return self._refine(N.Flag(kind="mixed"))

    def linear(self) -> "Selection":
        """What PEFT's "all-linear" means: nn.Linear, transformers' Conv1D, quantized linears; not the output head."""
        return self._refine(N.Flag(kind="linear"))

    def leaf(self) -> "Selection":
        """Modules with no child modules."""
        return self._refine(N.Flag(kind="leaf"))

    def outermost(self) -> "Selection":
        """Drop every selected module that has a selected ancestor."""
        return self._with(N.and_(self._node, N.Flag(kind="outermost")))

    def type(self, *types: TypeLike, exact: bool = False) -> "Selection":
        """isinstance of any of `types` (classes or class names); `exact=True` for the exact class."""
        if not types:
            raise TargetselError("type() needs at least one class or class name, e.g. .type(nn.Linear)")
        atoms = [N.TypeIs(name=_type_name(t), exact=bool(exact)) for t in types]
        return self._refine(N.or_(*atoms))

    def name(self, pattern: str) -> "Selection":
        """Regex *search* over the full dotted name (the `regex` package, with a time budget)."""
        from targetsel.query.patterns import compile_regex

        compile_regex(N.normalise_regex(pattern))
        return self._refine(N.NameRegex(pattern=pattern))

    def glob(self, pattern: str) -> "Selection":
        """Dotted glob over the full name: `*` one segment, `**` any number, `{q,k}` and `{0..31}` sets."""
        from targetsel.query.globs import glob_to_regex

        glob_to_regex(pattern)
        return self._refine(N.Glob(pattern=pattern))

    def under(self, prefix_or_selection: Union[str, "Selection"]) -> "Selection":
        """Strict descendants of the named module(s) (full name or dotted suffix) or of a selection."""
        if isinstance(prefix_or_selection, Selection):
            other = self._same_model(prefix_or_selection, "under")
            return self._refine(N.Under(of=other._node), other)
        if isinstance(prefix_or_selection, N.Selector):
            return self._refine(N.Under(of=prefix_or_selection.root))
        if not isinstance(prefix_or_selection, str) or not prefix_or_selection.strip():
            raise TargetselError(
                f"under() takes a module name or a Selection, got {describe(prefix_or_selection)}"
            )
        return self._refine(N.Under(prefix=prefix_or_selection))

    def layers(self, spec, within: Optional[str] = None) -> "Selection":
        """Modules inside numbered blocks whose index is in `spec` (int, range, slice, 'A..B', '-4..').

        The block index is the first integer segment after a ModuleList-like container. When a
        model has several containers (a vision and a language tower), negative indices count from
        the end of each; `within="language_model.layers"` (full name or dotted suffix) keeps one.
        """
        from targetsel.query.layerspec import to_ranges

        ranges = to_ranges(spec)
        if within is not None and (not isinstance(within, str) or not within.strip()):
            raise TargetselError(f"layers(within=...) names a block container such as 'layers', got {within!r}")
        return self._refine(N.Layers(ranges=ranges, within=within))

    def component(self, name: str) -> "Selection":
        """vision, audio, language, projector or head — found from the model's structure."""
        if not isinstance(name, str):
            from targetsel.errors import UnknownNameError

            raise UnknownNameError(f"component() takes a name such as 'vision', got {describe(name)}; "
                                   f"components are {', '.join(N.COMPONENTS)}")
        if name not in N.COMPONENTS:
            from targetsel.errors import UnknownNameError, did_you_mean

            raise UnknownNameError(
                f"unknown component {name!r}; components are {', '.join(N.COMPONENTS)}"
                + (f" ({did_you_mean(name, N.COMPONENTS)})" if did_you_mean(name, N.COMPONENTS) else "")
            )
        return self._refine(N.Component(name=name))

    def where(self, predicate: Union[str, Callable[[str, nn.Module], bool], "Selection", N.Selector]) -> "Selection":
        """Keep modules for which `predicate(name, module)` is true; a query string or selector also works."""
        other = predicate if isinstance(predicate, Selection) else None
        return self._refine(_coerce(predicate, self), other)

    # ------------------------------------------------------------------ operators
    def _same_model(self, other: Any, op: str) -> "Selection":
        if isinstance(other, Selection):
            if other._model is not self._model:
                raise ModelMismatchError(
                    f"cannot combine selections of two different models with {op!r}: "
                    f"{type(self._model).__name__} at {id(self._model):#x} and "
                    f"{type(other._model).__name__} at {id(other._model):#x}. Select both from one model."
                )
            return other
        return self._with(_coerce(other, self))

    def __and__(self, other) -> "Selection":
        other = self._same_model(other, "&")
        return self._with(N.and_(self._node, other._node), other)

    def __or__(self, other) -> "Selection":
        other = self._same_model(other, "|")
        return self._with(N.or_(self._node, other._node), other)

    def __sub__(self, other) -> "Selection":
        other = self._same_model(other, "-")
        return self._with(N.diff(self._node, other._node), other)

    def __invert__(self) -> "Selection":
        return self._with(N.not_(self._node))

    __rand__ = __and__
    __ror__ = __or__

    def __rsub__(self, other) -> "Selection":
        return self._same_model(other, "-") - self

    def __eq__(self, other) -> bool:
        return isinstance(other, Selection) and other._model is self._model and other._node == self._node

    def __hash__(self) -> int:
        return hash((id(self._model), self._node))

    # ------------------------------------------------------------------ terminals
    def names(self) -> list[str]:
        """Selected module names in model (`named_modules()`) order; `[]` when nothing is selected."""
        index = self._index()
        names = index.names
        return [names[i] for i in self._mask(index).nonzero().flatten().tolist()]

    def modules(self) -> dict[str, nn.Module]:
        index = self._index()
        return {index.names[i]: index.modules[i] for i in self._mask(index).nonzero().flatten().tolist()}

    def __len__(self) -> int:
        return int(self._mask().sum())

    def count(self) -> int:
        return len(self)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        index = self._index()
        pos = index.position(name) if isinstance(name, str) else None
        return bool(pos) and bool(self._mask(index)[pos])

    def __bool__(self) -> bool:
        return True  # a Selection is a value, not a container test: use .is_empty()

    def is_empty(self) -> bool:
        return not bool(self._mask().any())

    def assert_count_is(self, n: int) -> "Selection":
        """A guard for the middle of a chain: raise unless exactly `n` modules are selected."""
        got = len(self)
        if got != n:
            raise SelectionError(
                f"expected {n} selected module{'s' if n != 1 else ''} but there {'is' if got == 1 else 'are'} "
                f"{got} for {self.query!r}. Refine the selection (e.g. .leaf(), .layers(...), .under(...))."
            )
        return self

    def regex(self) -> str:
        """An anchored `re` regex that fullmatches exactly the selected names among this model's modules."""
        from targetsel.views.targets import exact_regex

        return exact_regex(self)

    def to_peft(self, form: str = "auto", *, check_peft: bool = True):
        """The `target_modules` value that makes PEFT target exactly this selection.

        `form`: "list" (full names), "suffixes" (shortest exact suffix list), "regex" (compact
        anchored regex) or "auto" (the shortest exact form PEFT keeps). A form the installed PEFT
        would rewrite or reject on this model by name (its transformers-5 MoE conversion, the Mamba
        guard) raises `ConfigError` saying what PEFT would do instead; `check_peft=False` skips that.
        """
        from targetsel.views.targets import compile_targets

        return compile_targets(self, form, check_peft=check_peft)

    def lora_params(self, r: int) -> int:
        """The parameters LoRA at rank `r` adds to the selected modules (r × (in + out) per layer)."""
        from targetsel.views.display import lora_params

        return lora_params(self, r)

    def explain(self, name: str):
        """For one module: each clause of the selector, whether it kept or dropped the module, and why."""
        from targetsel.views.explain import explain

        return explain(self, name)

    def parameters(self, pattern: Optional[str] = None):
        """The `nn.Parameter`s (regex search over their full names) inside the selected modules."""
        from targetsel.views.parameters import ParameterSelection

        return ParameterSelection(self, pattern)

    def lock(self) -> dict:
        """The selector, the resolved names, a hash and the library versions: compare later with `check_lock`."""
        from targetsel.views.lock import lock

        return lock(self)

    def resolved(self) -> "Resolved":
        """What this selection means now, frozen: for logs, and for `audit()` after `get_peft_model`."""
        from targetsel.bridge.audit import remember

        index = self._index()
        names = [index.names[i] for i in self._mask(index).nonzero().flatten().tolist()]
        remember(self, names)
        return Resolved(query=self.query, names=tuple(names), model_class=type(self._model).__name__,
                        module_count=index.size - 1)

    def _rewritten(self, label: Optional[str] = None) -> Optional[str]:
        """A one-line stand-in for displays (a repr must not raise) when the model was rewritten since."""
        try:
            self._index()
        except ModelRewrittenError:
            return (f"{label or f'Selection({self.query!r})'} of {type(self._model).__name__}: not evaluated, the "
                    "model was rewritten by get_peft_model after this selection was made (names() says what to do)")
        return None

    def __repr__(self) -> str:
        from targetsel.views.display import render_text

        return self._rewritten() or render_text(self)

    def _repr_html_(self) -> str:
        from targetsel.views.display import render_html

        stale = self._rewritten()
        if stale:
            import html

            return f"<pre>{html.escape(stale)}</pre>"
        return render_html(self)

    def __rich__(self):
        from targetsel.views.display import render_rich

        return self._rewritten() or render_rich(self)


@dataclass(frozen=True)
class Resolved:
    """What a selection resolved to, frozen: the names in model order and where they came from.

    `Selection.resolved()` gives `kind="modules"`; `ParameterSelection.resolved()` gives
    `kind="parameters"` (names are `module.param`, `pattern` the parameter regex). `module_count` is
    the number of named modules the model had. Picklable and hashable; `to_dict()` is JSON-able and
    `Resolved.from_dict()` reads it back. `audit(peft_model, resolved)` takes it as what was selected.
    """

    query: str
    names: tuple[str, ...]
    model_class: str
    module_count: int
    kind: str = "modules"
    pattern: Optional[str] = None

    KINDS = ("modules", "parameters")

    def __post_init__(self):
        object.__setattr__(self, "names", tuple(self.names))  # a list given by hand stays frozen too

    @property
    def count(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict:
        """Plain JSON types: `json.dumps(r.to_dict())` works, `Resolved.from_dict` reads it back."""
        return {
            "kind": self.kind,
            "query": self.query,
            "pattern": self.pattern,
            "model_class": self.model_class,
            "module_count": self.module_count,
            "count": self.count,
            "names": list(self.names),
        }

    @classmethod
    def from_dict(cls, data: Any) -> "Resolved":
        """The inverse of `to_dict()`; raises `SpecError` naming the first field that is wrong."""
        if not isinstance(data, dict):
            raise SpecError(f"Resolved.from_dict takes the dict Resolved.to_dict() returns, got {type(data).__name__}")
        fields = {"kind": str, "query": str, "pattern": (str, type(None)), "model_class": str, "module_count": int,
                  "count": int, "names": list}
        missing = [f for f in fields if f not in data]
        extra = sorted(set(data) - set(fields))
        if missing or extra:
            raise SpecError(
                f"not a Resolved dict: {'missing ' + ', '.join(missing) if missing else ''}"
                f"{'; ' if missing and extra else ''}{'unknown ' + ', '.join(extra) if extra else ''}"
            )
        for key, kind in fields.items():
            value = data[key]
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise SpecError(f"Resolved.from_dict: {key!r} has the wrong type ({type(value).__name__})")
        if data["kind"] not in cls.KINDS:
            raise SpecError(f"Resolved.from_dict: kind is 'modules' or 'parameters', got {data['kind']!r}")
        if not all(isinstance(n, str) for n in data["names"]) or data["count"] != len(data["names"]):
            raise SpecError("Resolved.from_dict: names must be strings, as many as count says; take a new snapshot")
        return cls(query=data["query"], names=tuple(data["names"]), model_class=data["model_class"],
                   module_count=data["module_count"], kind=data["kind"], pattern=data["pattern"])

    def __repr__(self) -> str:
        from targetsel.text.grouping import summarize_names

        shown = summarize_names(list(self.names), limit=4) if self.names else "nothing"
        if self.kind == "parameters":
            source = f"{self.query!r}.parameters({'' if self.pattern is None else repr(self.pattern)})"
            return f"Resolved({source} → {self.count} parameter(s) in {self.model_class} ({self.module_count} modules): {shown})"
        return f"Resolved({self.query!r} → {self.count} of the {self.module_count} modules of {self.model_class}: {shown})"


def _type_name(t: TypeLike) -> str:
    if isinstance(t, type):
        return t.__name__
    if isinstance(t, str) and t.strip():
        return t.strip()
    raise TargetselError(f"type() takes classes or class names, got {describe(t)}")


def _coerce(value: Any, within: Selection):
    """The one place that turns things that can act as a selector into a node."""
    if isinstance(value, Selection):
        return within._same_model(value, "where")._node
    if isinstance(value, N.Selector):
        return value.root
    if isinstance(value, str):
        from targetsel.query.parser import parse

        node = parse(value).root
        check_against_model(node, get_index(within._model, for_names=True))
        return node
    if isinstance(value, type) and issubclass(value, nn.Module):
        return N.TypeIs(name=value.__name__)
    if isinstance(value, re.Pattern):
        return N.NameRegex(pattern=value.pattern)
    if callable(value):
        return N.Where(fn=value)
    raise TargetselError(
        f"cannot use {describe(value)} as a selector; pass a query string, a Selection, "
        "a module class, a compiled regex or a callable (name, module) -> bool"
    )


def select(model: nn.Module, query: Union[str, N.Selector, None] = None) -> Selection:
    """Every named submodule of `model` (the root excluded), optionally narrowed by a query.

    >>> select(model).trainable().type(nn.Linear).names()
    >>> select(model, "linear & trainable & !under:vision_tower")
    """
    sel = Selection(model)
    if query is None:
        return sel
    if isinstance(query, N.Selector):
        return Selection(model, query.root)
    if isinstance(query, str):
        from targetsel.query.parser import parse

        node = parse(query).root
        try:
            check_against_model(node, get_index(model, for_names=True))
        except TargetselError as exc:
            raise type(exc)(f"{exc}\n  in query: {query}") from None
        return Selection(model, node, _checked=True)
    raise TargetselError(f"select(model, query): query must be a string or a Selector, got {type(query).__name__}")
