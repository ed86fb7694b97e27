"""Model-independent selector nodes: frozen, hashable pydantic models with a canonical query form.

The fluent chain, the `& | - ~` operators and the query parser all build these nodes through the
same smart constructors (`and_`, `or_`, `not_`, `diff`), so the three spellings of a selection
give equal selectors and print the same canonical string.

`outermost` is the one atom that is not a per-module predicate: it keeps, of what the rest of its
`&` group selects, the modules with no selected ancestor. That is why an `&` group holding
`outermost` is never flattened into an enclosing `&` (`(a & outermost) & b` differs from
`a & b & outermost`), and why such a group prints in parentheses.
"""

from __future__ import annotations

from typing import Annotated, Any, Callable, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel, field_validator, model_validator

from targetsel.errors import NotSerialisableError, TargetselError

FLAG_KINDS = ("all", "trainable", "frozen", "mixed", "linear", "leaf", "outermost")
COMPONENTS = ("vision", "audio", "language", "projector", "head")

# Values printed without quotes; anything else is written "…" with \" and \\ escapes.
SAFE_VALUE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.*?{},[]")


class _Node(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def __str__(self) -> str:
        return to_query(self)


def _as_value_error(check, *args):
    try:
        return check(*args)
    except TargetselError as exc:
        raise ValueError(str(exc)) from None


class Flag(_Node):
    """A parameterless atom: all, trainable, frozen, mixed, linear, leaf, outermost."""

    kind: Literal["all", "trainable", "frozen", "mixed", "linear", "leaf", "outermost"]


class TypeIs(_Node):
    """isinstance (or, with `exact`, exact class) by class name or dotted `module.QualName`."""

    kind: Literal["type"] = "type"
    name: str
    exact: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _as_value_error(check_type_name, v)


class NameRegex(_Node):
    """Regex *search* over the full dotted module name."""

    kind: Literal["name"] = "name"
    pattern: str

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        v = normalise_regex(v)
        from targetsel.query.patterns import compile_regex

        _as_value_error(compile_regex, v)
        return v


class Glob(_Node):
    """Dotted glob over the full name: `*` one segment, `**` any number of segments."""

    kind: Literal["glob"] = "glob"
    pattern: str

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        from targetsel.query.patterns import glob_to_regex

        _as_value_error(glob_to_regex, v)
        return v


class Under(_Node):
    """Strict descendants of the module(s) named `prefix` (full name or dotted suffix), or of a sub-selection."""

    kind: Literal["under"] = "under"
    prefix: Optional[str] = None
    of: Optional["Node"] = None

    @model_validator(mode="after")
    def _one_of(self):
        if (self.prefix is None) == (self.of is None):
            raise ValueError("under needs exactly one of 'prefix' (a module name) or 'of' (a selector)")
        if self.prefix is not None and not self.prefix.strip():
            raise ValueError("under needs a non-empty module name")
        return self


class Layers(_Node):
    """Modules inside numbered blocks whose index lies in `ranges` (inclusive; negative = from the end)."""

    kind: Literal["layers"] = "layers"
    ranges: tuple[tuple[Optional[int], Optional[int]], ...]
    within: Optional[str] = None

    @field_validator("ranges")
    @classmethod
    def _ranges(cls, v):
        from targetsel.query.layerspec import check_ranges

        return _as_value_error(check_ranges, tuple(tuple(r) for r in v))

    @field_validator("within")
    @classmethod
    def _within(cls, v):
        if v is not None and not v.strip():
            raise ValueError("layers 'within' must name a block container, e.g. 'layers' or 'vision_tower.layers'")
        return v


class Component(_Node):
    """A model component found from its structure: vision, audio, language, projector, head."""

    kind: Literal["component"] = "component"
    name: Literal["vision", "audio", "language", "projector", "head"]


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
        return getattr(self.fn, "__qualname__", None) or getattr(self.fn, "__name__", None) or repr(self.fn)


Node = Annotated[
    Union[Flag, TypeIs, NameRegex, Glob, Under, Layers, Component, And, Or, Not, Diff, Where],
    Field(discriminator="kind"),
]

for _cls in (Under, And, Or, Not, Diff):
    _cls.model_rebuild()


class Selector(RootModel[Node]):
    """A model-independent selector. `str()` is the canonical query; `parse(str(s)) == s`.

    Build one with `targetsel.parse("linear & trainable")`, from a `Selection` (`sel.selector`),
    or from its JSON/YAML node structure (`Selector.model_validate(...)`, `load_spec`).
    """

    model_config = ConfigDict(frozen=True)

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


def check_type_name(name: str) -> str:
    from targetsel.errors import UnknownNameError

    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise UnknownNameError(f"a type is a class or a class name such as 'Linear', got {name!r}")
    return name


def normalise_regex(pattern: str) -> str:
    r"""`\/` and `/` mean the same in a regex; store `/` so equal regexes give equal selectors."""
    if not isinstance(pattern, str) or "\\/" not in pattern:
        return pattern
    out, i = [], 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            out.append("/" if pattern[i + 1] == "/" else pattern[i : i + 2])
            i += 2
        else:
            out.append(pattern[i])
            i += 1
    return "".join(out)


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


# ---------------------------------------------------------------------------- printing

_PREC = {"or": 1, "diff": 2, "and": 3, "not": 4}


def quote_value(value: str) -> str:
    if value and all(c in SAFE_VALUE_CHARS for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_regex(pattern: str) -> str:
    r"""Inside name:/…/ a bare `/` ends the regex, so write it as `\/` (backslash pairs stay as they are)."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(pattern[i : i + 2])
            i += 2
            continue
        out.append("\\/" if c == "/" else c)
        i += 1
    return "/" + "".join(out) + "/"


def _atom(node) -> str:
    from targetsel.query.layerspec import ranges_text

    if isinstance(node, Flag):
        return node.kind
    if isinstance(node, TypeIs):
        return f"type:{'=' if node.exact else ''}{quote_value(node.name)}"
    if isinstance(node, NameRegex):
        return "name:" + quote_regex(node.pattern)
    if isinstance(node, Glob):
        return "glob:" + quote_value(node.pattern)
    if isinstance(node, Under):
        return "under:" + (quote_value(node.prefix) if node.prefix is not None else f"({to_query(node.of)})")
    if isinstance(node, Layers):
        return "layers:" + ranges_text(node.ranges) + ("" if node.within is None else "@" + quote_value(node.within))
    if isinstance(node, Component):
        return f"component:{node.name}"
    if isinstance(node, Where):
        return f"<where {node.label}: a Python callable, not serialisable>"
    raise TypeError(f"not a selector node: {node!r}")


def _prec(node) -> int:
    return _PREC.get(getattr(node, "kind", ""), 5)


def _wrap(node, minimum: int) -> str:
    text = to_query(node)
    return f"({text})" if _prec(node) < minimum else text


def to_query(node) -> str:
    """The canonical query string of a node (precedence, loosest first: | - & !)."""
    if isinstance(node, Selector):
        node = node.root
    if isinstance(node, Or):
        return " | ".join(_wrap(i, 2) for i in node.items)
    if isinstance(node, Diff):
        return f"{_wrap(node.left, 2)} - {_wrap(node.right, 3)}"
    if isinstance(node, And):
        return " & ".join(_wrap(i, 4) for i in node.items)
    if isinstance(node, Not):
        return "!" + _wrap(node.item, 4)
    return _atom(node)


def children(node) -> tuple:
    if isinstance(node, (And, Or)):
        return node.items
    if isinstance(node, Not):
        return (node.item,)
    if isinstance(node, Diff):
        return (node.left, node.right)
    if isinstance(node, Under) and node.of is not None:
        return (node.of,)
    return ()


def walk(node):
    yield node
    for child in children(node):
        yield from walk(child)


def has_callable(node) -> bool:
    return any(isinstance(n, Where) for n in walk(node))


def callable_labels(node) -> list[str]:
    return [n.label for n in walk(node) if isinstance(n, Where)]
