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
from typing import Any, Callable, Iterator, Optional, Union

from torch import nn

from targetsel.query import nodes as N
from targetsel.query.patterns import describe
from targetsel.errors import ModelMismatchError, SelectionError, TargetselError
from targetsel.model.evaluate import check_against_model
from targetsel.model.index import get_index
from targetsel.model.resolution import Bound, query_node
from targetsel.views.parameters import ParameterSelection
from targetsel.views.snapshot import Resolved, snapshot

TypeLike = Union[type, str]


class Selection(Bound):
    """The modules of one model that a selector picks. Immutable; every method returns a new one.

    A thin fluent facade: the verbs build selector nodes, the terminals evaluate them once into a
    `Resolution` (`resolution()`) and hand that to the view or bridge function that answers.
    """

    __slots__ = ()

    # ------------------------------------------------------------------ plumbing
    @property
    def selector(self) -> N.Selector:
        """The model-independent selector; `str()` of it is the canonical query."""
        return N.Selector(self._node)

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

    def quantized(self) -> "Selection":
        """Quantized layers (bitsandbytes, GPTQ, AWQ, HQQ, EETQ, AQLM, FP8, compressed-tensors, torchao, …):
        their packed base weights never require grad, so select them by what they are, not by grad state."""
        return self._refine(N.Flag(kind="quantized"))

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
        return self._refine(N.NameRegex(pattern=pattern))

    def glob(self, pattern: str) -> "Selection":
        """Dotted glob over the full name: `*` one segment, `**` any number, `{q,k}` and `{0..31}` sets."""
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
        return list(self.resolution().names)

    def modules(self) -> dict[str, nn.Module]:
        res = self.resolution()
        return {res.index.names[i]: res.index.modules[i] for i in res.positions}

    def __len__(self) -> int:
        return self.resolution().count

    def count(self) -> int:
        return len(self)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __contains__(self, name: object) -> bool:
        res = self.resolution()
        pos = res.index.position(name) if isinstance(name, str) else None
        return bool(pos) and bool(res.mask[pos])

    def __bool__(self) -> bool:
        return True  # a Selection is a value, not a container test: use .is_empty()

    def is_empty(self) -> bool:
        return self.resolution().count == 0

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

        return exact_regex(self.resolution())

    def to_peft(self, form: str = "auto", *, check_peft: bool = True):
        """The `target_modules` value that makes PEFT target exactly this selection.

        `form`: "list" (full names), "suffixes" (shortest exact suffix list), "regex" (compact
        anchored regex) or "auto" (the shortest exact form PEFT keeps). A form the installed PEFT
        would rewrite or reject on this model by name (its transformers-5 MoE conversion, the Mamba
        guard) raises `ConfigError` saying what PEFT would do instead; `check_peft=False` skips that.
        """
        res = self.resolution()
        if not check_peft:
            from targetsel.views.targets import compile_targets

            return compile_targets(res, form)
        from targetsel.bridge.forms import targets_peft_keeps

        return targets_peft_keeps(res, form)

    def lora_params(self, r: int) -> int:
        """The parameters LoRA at rank `r` adds to the selected modules (r × (in + out) per layer)."""
        from targetsel.views.display import lora_params

        return lora_params(self.resolution(), r)

    def explain(self, name: str):
        """For one module: each clause of the selector, whether it kept or dropped the module, and why."""
        from targetsel.views.explain import explain

        return explain(self.resolution(), name)

    def parameters(self, pattern: Optional[str] = None):
        """The `nn.Parameter`s (regex search over their full names) inside the selected modules."""
        return _Parameters(self, pattern)

    def export(self, trainer: str, **kw) -> dict:
        """The config keys that make `trainer` (axolotl, llamafactory, swift, unsloth, trl, peft) adapt
        exactly this selection; `parameters=`, `ranks=`, `alphas=` as in `targetsel.bridge.exports.export`."""
        from targetsel.bridge.exports import export

        return export(self, trainer, **kw)

    def lock(self) -> dict:
        """The selector, the resolved names, a hash and the library versions: compare later with `check_lock`."""
        from targetsel.views.lock import lock

        return lock(self.resolution())

    def resolved(self) -> Resolved:
        """What this selection means now, frozen: for logs, and for `audit()` after `get_peft_model`."""
        res = self.resolution()
        res.remember()
        return snapshot(res)

    def show(self, r: int = 16, *, file=None) -> None:
        """Print the grouped table once: on rank 0 when torch.distributed is initialised, else here."""
        from targetsel.model.ranks import is_main_process, print_once
        from targetsel.views.display import render_text

        if is_main_process():
            print_once(self.stale_note() or render_text(self.resolution(), r=r), file=file)

    def __repr__(self) -> str:
        from targetsel.views.display import render_text

        return self.stale_note() or render_text(self.resolution())

    def _repr_html_(self) -> str:
        from targetsel.views.display import render_html

        stale = self.stale_note()
        if stale:
            import html

            return f"<pre>{html.escape(stale)}</pre>"
        return render_html(self.resolution())

    def __rich__(self):
        from targetsel.views.display import render_rich

        return self.stale_note() or render_rich(self.resolution())


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
    if query is None:
        return Selection(model)
    return Selection(model, query_node(model, query), _checked=True)


class _Parameters(ParameterSelection):
    """What `Selection.parameters()` returns: a `ParameterSelection` with the terminals that live above
    the bridge (the views layer cannot reach the bridge, the facade can)."""

    __slots__ = ()

    def export(self, trainer: str, **kw) -> dict:
        """The config keys that make `trainer` adapt exactly these (fused expert) parameters — `target_parameters`
        under the trainer's own key; `ranks=`, `alphas=` as in `targetsel.bridge.exports.export`."""
        from targetsel.bridge.exports import export

        return export(self, trainer, **kw)


# Messages name the class a user knows (`type(x).__name__`): the facade is an implementation detail.
_Parameters.__name__ = _Parameters.__qualname__ = "ParameterSelection"
