"""Model-independent selector nodes: frozen, hashable pydantic models with a canonical query form.

The fluent chain, the `& | - ~` operators and the query parser all build these nodes through the
same smart constructors (`and_`, `or_`, `not_`, `diff`), so the three spellings of a selection
give equal selectors and print the same canonical string.

`outermost` is the one atom that is not a per-module predicate: it keeps, of what the rest of its
`&` group selects, the modules with no selected ancestor. That is why an `&` group holding
`outermost` is never flattened into an enclosing `&` (`(a & outermost) & b` differs from
`a & b & outermost`), and why such a group prints in parentheses.

A selector nests at most `MAX_DEPTH` levels — each `!`, `-`, `&`/`|` group and `under:(…)` below
another is one — and holds at most `MAX_NODES` nodes. Both are checked whenever a node is built
(by the fluent chain, the parser or `Selector.model_validate`), so every selector that exists
prints, parses back, pickles, evaluates and round-trips through JSON. Past the limit something
gives up, far from where the selector was written: for nested `&`/`|`, pydantic's JSON writer at
127 levels, pickle near 165 and the printer near 250 (RecursionError, less when the caller's
stack is deep); pydantic's JSON reader already at 100, which `Selector.model_validate_json` works
around. Chains `a - b - c` nest one level per `-` (the tree is left-deep, as the grammar says), so
the advice for a long one is `a - (b | c | …)`, which is flat.
"""

from __future__ import annotations

import functools
import json
from typing import Annotated, Any, Callable, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, field_validator, model_validator

from targetsel.errors import NotSerialisableError, PatternError, SpecError, TargetselError
from targetsel.query.patterns import LONE_SURROGATE

#: The deepest a selector may nest (compound nodes on one path: `!`, `-`, `&`, `|`, `under:(…)`).
MAX_DEPTH = 100

#: The most nodes a selector may hold, counted as printed (a query of 100,000 atoms is ~1 MB of text).
MAX_NODES = 100_000

FLAG_KINDS = ("all", "trainable", "frozen", "mixed", "linear", "leaf", "outermost")
COMPONENTS = ("vision", "audio", "language", "projector", "head")

# Values printed without quotes; anything else is written "…" with \" and \\ escapes.
SAFE_VALUE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.*?{},[]")


class _TargetselErrors(type(BaseModel)):  # type: ignore[misc]
    """`Node(...)` raises the TargetselError a validator raised, never pydantic's ValidationError.

    The fluent chain and the parser build nodes by calling the class; `model_validate` keeps
    pydantic's contract (a ValidationError that locates each problem in the structure). A
    metaclass rather than `__init__`, because pydantic calls an overridden `__init__` for every
    nested node it validates, which would turn `model_validate`'s errors into ours too.
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
        if type(self) not in _ATOMS and children(self):
            check_depth(self)

    @functools.cached_property
    def shape(self) -> tuple[int, int]:
        """(nesting depth, size) — see `measure`; kept so that a parent measures in O(children)."""
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


def _as_value_error(check, *args):
    try:
        return check(*args)
    except TargetselError as exc:
        raise _Carrier(exc) from None


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

        if v == "":  # it would print as name://, which does not parse
            raise PatternError("an empty regex matches every name; select every module with all (or no filter)")
        _as_value_error(compile_regex, v)
        return v


class Glob(_Node):
    """Dotted glob over the full name: `*` one segment, `**` any number of segments."""

    kind: Literal["glob"] = "glob"
    pattern: str

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        from targetsel.query.globs import glob_to_regex

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
        if self.prefix is not None:
            _as_value_error(check_text, self.prefix, "an under: module name")
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
        if v is not None:
            _as_value_error(check_text, v, "a layers 'within' container name")
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


def check_type_name(name: str) -> str:
    from targetsel.errors import UnknownNameError

    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise UnknownNameError(f"a type is a class or a class name such as 'Linear', got {name!r}")
    check_text(name, "a type name")
    return name


def check_text(value: str, what: str) -> str:
    """Refuse lone surrogates (undecodable bytes, e.g. from a command line): JSON cannot hold them."""
    found = LONE_SURROGATE.search(value)
    if found is not None:
        raise SpecError(
            f"{what} holds the lone surrogate {found.group()!r} at position {found.start()}, which is not text (it "
            "usually comes from bytes that are not valid UTF-8); remove it or write the character it stood for"
        )
    return value


def measure(node) -> tuple[int, int]:
    """(nesting depth, size): compound levels on the longest path down, and nodes as printed.

    The size counts a sub-selector used twice twice: `s = s | s.frozen()` in a loop doubles it at
    each step while sharing one object, which is what printing and evaluating pay for. Iterative,
    so that it measures what is too deep to print; a child built through its class was measured
    then, and a shared object is measured once.
    """
    if isinstance(node, Selector):
        node = node.root
    kids = children(node)
    if not kids:
        return (0, 1)
    # The usual case, a node built from parts built before it: each part knows its shape.
    depth, size = 0, 1
    for kid in kids:
        if type(kid) in _ATOMS:
            size += 1
            continue
        shape = getattr(kid, "__dict__", {}).get("shape")
        if shape is None:
            break
        if shape[0] > depth:
            depth = shape[0]
        size += shape[1]
    else:
        return depth + 1, size
    done: dict[int, tuple[int, int]] = {}
    stack = [(node, False)]
    while stack:
        current, expanded = stack.pop()
        kids = children(current)
        known = getattr(current, "__dict__", {}).get("shape") if current is not node else None
        if known is not None:
            done[id(current)] = known  # measured when it was built
        elif not kids:
            done[id(current)] = (0, 1)
        elif expanded:
            measured = [done[id(k)] for k in kids]
            done[id(current)] = (1 + max(d for d, _ in measured), 1 + sum(n for _, n in measured))
        elif id(current) not in done:
            stack.append((current, True))
            stack.extend((k, False) for k in kids if id(k) not in done)
    return done[id(node)]


#: A structure (`model_dump()`) of a selector within MAX_DEPTH nests at most this many mappings and
#: lists: two per `&`/`|` level (the node and its `items`), and `layers` ranges add two at the bottom.
MAX_DATA_DEPTH = 2 * MAX_DEPTH + 4


def data_depth(data: Any, stop: int) -> int:
    """How deeply dicts and lists nest in `data` (iteratively; measuring stops past `stop`)."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            values = item.values()
        elif isinstance(item, (list, tuple)):
            values = item
        else:
            continue
        deepest = max(deepest, level)
        if deepest > stop:
            break
        stack.extend((v, level + 1) for v in values)
    return deepest


_ATOMS = frozenset({Flag, TypeIs, NameRegex, Glob, Layers, Component, Where})


def check_depth(node) -> None:
    """Raise SpecError when `node` nests deeper than MAX_DEPTH or holds more than MAX_NODES nodes."""
    depth, size = node.shape if isinstance(node, _Node) else measure(node)
    if depth > MAX_DEPTH:
        err = SpecError(f"this selector nests more than {MAX_DEPTH} levels deep, the limit. {DEPTH_ADVICE}")
        err.depth = depth  # type: ignore[attr-defined]  # the parser reports it at a column
        raise err
    if size > MAX_NODES:
        raise SpecError(
            f"this selector holds {size:,} nodes when printed, more than the limit of {MAX_NODES:,}. A selection "
            "used twice in one step (s = s | s.frozen(), s = s - s.leaf() in a loop) doubles it each time: "
            "build each part once, e.g. s.frozen() | s.leaf() instead of repeating s."
        )


DEPTH_ADVICE = (
    "Each '!', '-', '&'/'|' group and 'under:(…)' inside another is a level; write a long difference "
    "a - b - c - … as a - (b | c | …), which stays one level deep."
)


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


def walk(node):
    yield node
    for child in children(node):
        yield from walk(child)


def has_callable(node) -> bool:
    return any(isinstance(n, Where) for n in walk(node))


def callable_labels(node) -> list[str]:
    return [n.label for n in walk(node) if isinstance(n, Where)]
