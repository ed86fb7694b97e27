"""The values selector atoms hold, and the one check of each.

Every node validates its fields here and nowhere else — the fluent chain, the parser and spec
files all build nodes through their classes (`nodes.py`) — and each check raises the
`TargetselError` subclass that names the problem (`PatternError`, `UnknownNameError`,
`SpecError`, `LayerSpecError`), for a value of the wrong type too. The parser adds the column.
"""

from __future__ import annotations

from typing import Any

from targetsel.errors import PatternError, SpecError, UnknownNameError, hinted
from targetsel.query.globs import glob_to_regex
from targetsel.query.patterns import LONE_SURROGATE, compile_regex, describe
from targetsel.text.suggest import suggest

FLAG_KINDS = ("all", "trainable", "frozen", "mixed", "linear", "quantized", "leaf", "outermost")
COMPONENTS = ("vision", "audio", "language", "projector", "head")


def check_text(value: str, what: str) -> str:
    """Refuse lone surrogates (undecodable bytes, e.g. from a command line): JSON cannot hold them."""
    found = LONE_SURROGATE.search(value)
    if found is not None:
        raise SpecError(
            f"{what} holds the lone surrogate {found.group()!r} at position {found.start()}, which is not text (it "
            "usually comes from bytes that are not valid UTF-8); remove it or write the character it stood for"
        )
    return value


def check_type_name(name: Any) -> str:
    """A `type:` class name or dotted `module.QualName`: a word without spaces."""
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise UnknownNameError(f"a type is a class or a class name such as 'Linear', got {name!r}")
    return check_text(name, "a type name")


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


def written_position(written: str, position: int) -> int:
    r"""Where `position` of `normalise_regex(written)` lies in `written` (each `\/` there is one character longer)."""
    i = j = 0
    while i < len(written) and j < position:
        pair = written[i] == "\\" and i + 1 < len(written)
        if pair and written[i + 1] == "/":
            i, j = i + 2, j + 1
        elif pair and j + 1 < position:  # an escape other than \/ is kept as written: two characters
            i, j = i + 2, j + 2
        else:
            i, j = i + 1, j + 1
    return i


def check_regex(pattern: Any) -> str:
    """A `name:` regex, normalised; a `PatternError` from the engine has `.reason` and `.pos` in the normalised form."""
    if not isinstance(pattern, str):
        compile_regex(pattern)  # raises: "a name pattern must be a string, got …"
    pattern = normalise_regex(pattern)
    if pattern == "":  # it would print as name://, which does not parse
        raise PatternError("an empty regex matches every name; select every module with all (or no filter)")
    compile_regex(pattern)
    return pattern


def check_glob(pattern: Any) -> str:
    """A dotted `glob:` that translates to a regex."""
    glob_to_regex(pattern)
    return pattern


def check_component(name: Any) -> str:
    """One of `COMPONENTS`; an unknown name's error has `.reason` and `.hint` (the near spellings) apart."""
    if not isinstance(name, str):
        raise UnknownNameError(f"a component is a name such as 'vision', got {describe(name)}; "
                               f"components are {', '.join(COMPONENTS)}")
    if name not in COMPONENTS:
        raise hinted(UnknownNameError, f"unknown component {name!r}",
                     suggest(name, COMPONENTS) or f"components: {', '.join(COMPONENTS)}")
    return name


def check_under_prefix(prefix: Any) -> str:
    """An `under:` module name (full name or dotted suffix)."""
    if not isinstance(prefix, str) or not prefix.strip():
        raise SpecError("under needs a non-empty module name" + _got(prefix))
    return check_text(prefix, "an under: module name")


def check_within(within: Any) -> str:
    """The block container a `layers:` spec counts in (`@layers`)."""
    if not isinstance(within, str) or not within.strip():
        raise SpecError("layers 'within' must name a block container, e.g. 'layers' or 'vision_tower.layers'"
                        + _got(within))
    return check_text(within, "a layers 'within' container name")


def _got(value: Any) -> str:
    return "" if isinstance(value, str) else f", got {describe(value)}"
