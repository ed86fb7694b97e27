"""Model-independent selector nodes: frozen, hashable pydantic models with a canonical query form.

The fluent chain, the `& | - ~` operators and the query parser all build these nodes through the
same smart constructors (`and_`, `or_`, `not_`, `diff`), so the three spellings of a selection
give equal selectors and print the same canonical string.

Each node checks its fields once, as it is built — with the checks of `fields.py`, which raise
the `TargetselError` subclass that names the problem — and its limits (`tree.py`). Calling a
class raises that error itself (`_TargetselErrors`); `Selector.model_validate` keeps pydantic's
contract, a ValidationError that locates each problem in the structure. Printing is `printing.py`.

`outermost` is the one atom that is not a per-module predicate: it keeps, of what the rest of its
`&` group selects, the modules with no selected ancestor. That is why an `&` group holding
`outermost` is never flattened into an enclosing `&` (`(a & outermost) & b` differs from
`a & b & outermost`), and why such a group prints in parentheses.
"""

from __future__ import annotations

import functools
import json
from typing import Annotated, Any, Callable, Literal, Optional, Union

from pydantic import (BaseModel, ConfigDict, Field, RootModel, ValidationError, ValidatorFunctionWrapHandler,
                      field_validator, model_validator)

from targetsel.errors import NotSerialisableError, SpecError, TargetselError
from targetsel.query.fields import (COMPONENTS, FLAG_KINDS, check_component, check_glob, check_regex, check_text,
                                    check_type_name, check_under_prefix, check_within, normalise_regex)
from targetsel.query.layerspec import check_ranges
from targetsel.query.printing import SAFE_VALUE_CHARS, quote_regex, quote_value, to_query
from targetsel.query.tree import (DEPTH_ADVICE, MAX_DATA_DEPTH, MAX_DEPTH, MAX_NODES, callable_labels, check_depth,
                                  children, data_depth, has_callable, measure, walk)

__all__ = [  # the node classes and constructors, and what other modules reach through `N.` (defined beside)
    "ALL", "And", "COMPONENTS", "Component", "DEPTH_ADVICE", "Diff", "FLAG_KINDS", "Flag", "Glob", "Layers",
    "MAX_DATA_DEPTH", "MAX_DEPTH", "MAX_NODES", "NameRegex", "Node", "Not", "Or", "SAFE_VALUE_CHARS", "Selector",
    "TypeIs", "Under", "Where", "and_", "callable_labels", "check_depth", "check_text", "check_type_name",
    "children", "data_depth", "diff", "has_callable", "measure", "normalise_regex", "not_", "or_", "quote_regex",
    "quote_value", "to_query", "walk",
]


class _TargetselErrors(type(BaseModel)):  # type: ignore[misc]
    """`Node(...)` raises the TargetselError a validator raised, never pydantic's ValidationError.

    The one point where a node's typed error leaves pydantic. The fluent chain and the parser build
    nodes by calling the class; `model_validate` keeps pydantic's contract (a ValidationError that
    locates each problem in the structure). A metaclass rather than `__init__`, because pydantic
    calls an overridden `__init__` for every nested node it validates, which would turn
    `model_validate`'s errors into ours too.
    """

    def __call__(cls, *args: Any, **kwargs: Any):
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as exc:
            raise _targetsel_error(exc, cls.__name__) from None


class _Node(BaseModel, metaclass=_TargetselErrors):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def model_post_init(self, context: Any, /) -> None:
        # Once per node built (a model validator would also run for every node passed in as a part).
        if children(self):
            check_depth(self)

    @functools.cached_property
    def shape(self) -> tuple[int, int]:
        """(nesting depth, size) — see `tree.measure`; kept so that a parent measures in O(children)."""
        return measure(self)

    @property
    def nesting(self) -> int:
        """Compound nodes (`!`, `-`, `&`, `|`, `under:(…)`) on the longest path down to an atom."""
        return self.shape[0]

    def __str__(self) -> str:
        return to_query(self)


class _Carrier(ValueError):
    """Carries a TargetselError through pydantic's validation, which reports only ValueErrors (not
    UnknownNameError, a LookupError) and cannot encode a lone surrogate in a message (pydantic-core
    raises UnicodeEncodeError instead of the validation error)."""

    def __init__(self, error: TargetselError):
        super().__init__(str(error).encode("utf-8", "backslashreplace").decode("utf-8"))
        self.error = error


def _typed(check, *args):
    try:
        return check(*args)
    except TargetselError as exc:
        raise _Carrier(exc) from None


def _checked(check, value: Any, handler: ValidatorFunctionWrapHandler):
    """pydantic's own coercion first (`bytes` → `str`); a value it refuses gets `check`'s typed error."""
    try:
        value = handler(value)
    except ValidationError:
        _typed(check, value)  # a check raises for any value of the wrong type
        raise
    return value if value is None else _typed(check, value)


def _checked_field(field: str, check):
    """The validator of `field`: pydantic's coercion, then `check` (see `_checked`)."""

    def validate(cls, value: Any, handler: ValidatorFunctionWrapHandler):
        return _checked(check, value, handler)

    return field_validator(field, mode="wrap")(classmethod(validate))


def _targetsel_error(exc: ValidationError, what: str) -> TargetselError:
    """The TargetselError behind a pydantic ValidationError, or a SpecError that lists its problems."""
    problems = exc.errors()
    if len(problems) == 1:
        cause = (problems[0].get("ctx") or {}).get("error")
        cause = getattr(cause, "error", cause)
        if isinstance(cause, TargetselError):
            return cause
    listed = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())) or 'value'}: {str(e.get('msg', '')).removeprefix('Value error, ')}"
        for e in problems[:5]
    )
    return SpecError(f"invalid {what}: {listed}")


class Flag(_Node):
    """A parameterless atom: all, trainable, frozen, mixed, linear, quantized, leaf, outermost."""

    kind: Literal["all", "trainable", "frozen", "mixed", "linear", "quantized", "leaf", "outermost"]


class TypeIs(_Node):
    """isinstance (or, with `exact`, exact class) by class name or dotted `module.QualName`."""

    kind: Literal["type"] = "type"
    name: str
    exact: bool = False

    _name = _checked_field("name", check_type_name)


class NameRegex(_Node):
    """Regex *search* over the full dotted module name (stored with `\\/` written `/`)."""

    kind: Literal["name"] = "name"
    pattern: str

    _pattern = _checked_field("pattern", check_regex)


class Glob(_Node):
    """Dotted glob over the full name: `*` one segment, `**` any number of segments."""

    kind: Literal["glob"] = "glob"
    pattern: str

    _pattern = _checked_field("pattern", check_glob)


class Under(_Node):
    """Strict descendants of the module(s) named `prefix` (full name or dotted suffix), or of a sub-selection."""

    kind: Literal["under"] = "under"
    prefix: Optional[str] = None
    of: Optional["Node"] = None

    @model_validator(mode="after")
    def _one_of(self):
        if (self.prefix is None) == (self.of is None):
            raise ValueError("under needs exactly one of 'prefix' (a module name) or 'of' (a selector)")
        if self.prefix is not None:
            _typed(check_under_prefix, self.prefix)
        return self


class Layers(_Node):
    """Modules inside numbered blocks whose index lies in `ranges` (inclusive; negative = from the end)."""

    kind: Literal["layers"] = "layers"
    ranges: tuple[tuple[Optional[int], Optional[int]], ...]
    within: Optional[str] = None

    @field_validator("ranges")
    @classmethod
    def _ranges(cls, v):
        return _typed(check_ranges, tuple(tuple(r) for r in v))

    _within = _checked_field("within", check_within)


class Component(_Node):
    """A model component found from its structure: vision, audio, language, projector, head."""

    kind: Literal["component"] = "component"
    name: Literal["vision", "audio", "language", "projector", "head"]

    _name = _checked_field("name", check_component)


class And(_Node):
    kind: Literal["and"] = "and"
    items: tuple["Node", ...]


class Or(_Node):
    kind: Literal["or"] = "or"
    items: tuple["Node", ...]


class Not(_Node):
    kind: Literal["not"] = "not"
    item: "Node"


class Diff(_Node):
    kind: Literal["diff"] = "diff"
    left: "Node"
    right: "Node"


class Where(_Node):
    """A Python predicate `(name, module) -> bool`. Cannot be serialised."""

    kind: Literal["where"] = "where"
    fn: Annotated[Callable[..., Any], Field(exclude=True)]

    @property
    def label(self) -> str:
        name = getattr(self.fn, "__qualname__", None) or getattr(self.fn, "__name__", None)
        if isinstance(name, str):
            return name
        try:
            return repr(self.fn)
        except Exception:  # noqa: BLE001 - a label must not raise: it is in every message about the selector
            return f"<{type(self.fn).__name__} object>"


Node = Annotated[
    Union[Flag, TypeIs, NameRegex, Glob, Under, Layers, Component, And, Or, Not, Diff, Where],
    Field(discriminator="kind"),
]

Node = Annotated[
    Union[Flag, TypeIs, NameRegex, Glob, Under, Layers, Component, And, Or, Not, Diff, Where],
    Field(discriminator="kind"),
]

for _cls in (Under, And, Or, Not, Diff):
    _cls.model_rebuild()


class _SelectorErrors(_TargetselErrors, type(RootModel)):  # type: ignore[misc]
    pass


class Selector(RootModel[Node], metaclass=_SelectorErrors):
    """A model-independent selector. `str()` is the canonical query; `parse(str(s)) == s`.

    Build one with `targetsel.parse("linear & trainable")`, from a `Selection` (`sel.selector`),
    or from its JSON/YAML node structure (`Selector.model_validate(...)`, `load_spec`).
    """

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _structure_not_too_deep(cls, data: Any) -> Any:
        # Before pydantic recurses into it: past ~250 levels its guard reports a "cyclic reference".
        levels = data_depth(data, MAX_DATA_DEPTH + 1)
        if levels > MAX_DATA_DEPTH:
            raise ValueError(
                f"the selector structure nests more than {MAX_DATA_DEPTH} levels of mappings and lists, so its "
                f"selector would nest deeper than the limit of {MAX_DEPTH}. {DEPTH_ADVICE}"
            )
        return data

    @classmethod
    def model_validate_json(cls, json_data, **kwargs):  # type: ignore[override]
        """pydantic's, except that structures nested past its JSON parser's limit still load.

        pydantic's JSON parser stops at 200 levels of JSON nesting, and `&`/`|` nodes take two (the
        node and its `items` list), so a selector near `MAX_DEPTH` is read with the standard
        library's parser instead; what is then validated is the same data.
        """
        try:
            return super().model_validate_json(json_data, **kwargs)
        except ValidationError as exc:
            if not any(e.get("type") == "json_invalid" and "recursion limit" in str(e.get("msg")) for e in exc.errors()):
                raise
            try:
                data = json.loads(json_data)
            except (ValueError, RecursionError):
                raise exc from None
        return cls.model_validate(data, **kwargs)

    def __str__(self) -> str:
        return to_query(self.root)

    def __repr__(self) -> str:
        if has_callable(self.root):
            return f"Selector({to_query(self.root)})"
        return f"parse({to_query(self.root)!r})"

    def __hash__(self) -> int:
        return hash(self.root)

    @property
    def serialisable(self) -> bool:
        return not has_callable(self.root)

    def _require_serialisable(self) -> None:
        if has_callable(self.root):
            raise NotSerialisableError(
                f"this selector holds a Python callable ({', '.join(callable_labels(self.root))}) "
                "from .where(fn), which cannot be written as a query, JSON or YAML. Express the "
                "condition with query atoms (name:/…/, glob:, type:, under:, layers:) to save it."
            )

    def model_dump(self, *args, **kwargs):  # type: ignore[override]
        self._require_serialisable()
        return super().model_dump(*args, **kwargs)

    def model_dump_json(self, *args, **kwargs):  # type: ignore[override]
        self._require_serialisable()
        return super().model_dump_json(*args, **kwargs)

    def to_query(self) -> str:
        """The canonical query string; raises `NotSerialisableError` for selectors holding callables."""
        self._require_serialisable()
        return to_query(self.root)


# ---------------------------------------------------------------------------- constructors

ALL = Flag(kind="all")


def _has_outermost(node) -> bool:
    return isinstance(node, And) and any(isinstance(i, Flag) and i.kind == "outermost" for i in node.items)


def and_(*items) -> Any:
    flat = []
    for item in items:
        if isinstance(item, And) and not _has_outermost(item):
            flat.extend(item.items)
        elif isinstance(item, Flag) and item.kind == "all":
            continue  # all & x == x
        else:
            flat.append(item)
    if not flat:
        return ALL
    # A lone `outermost` is the outermost of everything: the bare flag means exactly that.
    return flat[0] if len(flat) == 1 else And(items=tuple(flat))


def or_(*items) -> Any:
    flat = []
    for item in items:
        flat.extend(item.items if isinstance(item, Or) else (item,))
    return flat[0] if len(flat) == 1 else Or(items=tuple(flat))


def not_(item) -> Any:
    return Not(item=item)


def diff(left, right) -> Any:
    return Diff(left=left, right=right)
