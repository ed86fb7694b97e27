"""One validation per node: `query/fields.py` checks each value once, as its node is built, and raises the
specific TargetselError — whether the node comes from the fluent chain, a query or a spec structure."""

from __future__ import annotations

import re

import pytest

import models
from targetsel import PatternError, QuerySyntaxError, SpecError, UnknownNameError, select
from targetsel.query import fields, globs, parser, patterns
from targetsel.query import nodes as N
from targetsel.query.parser import parse_uncached, spec_to_selector


@pytest.fixture(scope="module")
def demo():
    return models.demo()


# (check, value, error, message) — every branch of every check in fields.py
CHECKS = [
    (fields.check_text, ("a\udcffb", "a thing"), SpecError, r"^a thing holds the lone surrogate '\\udcff' at position 1"),
    (fields.check_type_name, (5,), UnknownNameError, r"^a type is a class or a class name such as 'Linear', got 5$"),
    (fields.check_type_name, ("",), UnknownNameError, r"got ''$"),
    (fields.check_type_name, ("a b",), UnknownNameError, r"got 'a b'$"),
    (fields.check_type_name, ("\ud800",), SpecError, r"^a type name holds the lone surrogate"),
    (fields.check_regex, (5,), PatternError, r"^a name pattern must be a string, got int 5$"),
    (fields.check_regex, ("",), PatternError, r"^an empty regex matches every name"),
    (fields.check_regex, ("a(",), PatternError, r"^invalid regex /a\(/: missing \) at position 2$"),
    (fields.check_glob, (["a"],), PatternError, r"^a glob must be a non-empty string, got list \['a'\]$"),
    (fields.check_glob, ("a..b",), PatternError, r"^glob 'a\.\.b': empty segment"),
    (fields.check_component, (3,), UnknownNameError, r"^a component is a name such as 'vision', got int 3; components are vision, audio"),
    (fields.check_component, ("visoin",), UnknownNameError, r"^unknown component 'visoin'; did you mean `vision`\?$"),
    (fields.check_component, ("xyz",), UnknownNameError, r"^unknown component 'xyz'; components: vision, audio, language, projector, head$"),
    (fields.check_under_prefix, (" ",), SpecError, r"^under needs a non-empty module name$"),
    (fields.check_under_prefix, (3,), SpecError, r"^under needs a non-empty module name, got int 3$"),
    (fields.check_under_prefix, ("\ud800",), SpecError, r"^an under: module name holds the lone surrogate"),
    (fields.check_within, ("",), SpecError, r"^layers 'within' must name a block container, e.g. 'layers' or 'vision_tower.layers'$"),
    (fields.check_within, (5,), SpecError, r"must name a block container, .*, got int 5$"),
    (fields.check_within, ("\ud800",), SpecError, r"^a layers 'within' container name holds the lone surrogate"),
]


@pytest.mark.parametrize("check, args, error, message", CHECKS, ids=[f"{c[0].__name__}-{c[1][0]!r}" for c in CHECKS])
def test_each_check_raises_its_error(check, args, error, message):
    with pytest.raises(error, match=message):
        check(*args)


# (check, value, stored value)
ACCEPTED = [
    (fields.check_type_name, "transformers.Conv1D", "transformers.Conv1D"),
    (fields.check_regex, r"a\/b", "a/b"),
    (fields.check_glob, "**.{q,v}_proj", "**.{q,v}_proj"),
    (fields.check_component, "head", "head"),
    (fields.check_under_prefix, "vision_tower", "vision_tower"),
    (fields.check_within, "layers", "layers"),
]


@pytest.mark.parametrize("check, value, stored", ACCEPTED, ids=[c[0].__name__ for c in ACCEPTED])
def test_each_check_returns_the_value_to_store(check, value, stored):
    assert check(value) == stored


def test_an_unknown_component_keeps_reason_and_hint_apart():
    with pytest.raises(UnknownNameError) as info:
        fields.check_component("visoin")
    assert (info.value.reason, info.value.hint) == ("unknown component 'visoin'", "did you mean `vision`?")


# (written regex, position in its normalised form, position in the written form)
POSITIONS = [
    ("abc", 2, 2),
    (r"a\/(", 2, 3),  # a / (  →  a \/ (
    (r"\/\/x", 2, 4),
    (r"\\/", 2, 2),  # an escaped backslash, then a plain slash: nothing shrinks
    (r"\d\/(", 3, 4),
    (r"\d(", 1, 1),  # inside an escape pair
    (r"a\/b", 99, 4),  # past the end
    ("", 0, 0),
]


@pytest.mark.parametrize("written, position, expected", POSITIONS, ids=[p[0] or "empty" for p in POSITIONS])
def test_written_position(written, position, expected):
    assert fields.written_position(written, position) == expected


@pytest.mark.parametrize("query, column, reason", [
    (r"name:/a\/(/", 10, "bad regex: missing )"),
    (r"name:/\/\/[/", 11, "bad regex: unterminated character set"),
    ("name:/a(/", 8, "bad regex: missing )"),
])
def test_a_regex_error_points_into_the_regex_as_written(query, column, reason):
    with pytest.raises(QuerySyntaxError) as info:
        parse_uncached(query)
    assert (info.value.position, info.value.reason) == (column, reason)


# (the fluent chain, the query and its reason at a column, the node class and its fields) — one value, one error
SPELLINGS = [
    ("regex", lambda s: s.name("a("), "name:/a(/", "bad regex: missing )", N.NameRegex, {"pattern": "a("},
     PatternError, r"missing \)"),
    ("glob", lambda s: s.glob("a..b"), "glob:a..b", "glob 'a..b': empty segment", N.Glob, {"pattern": "a..b"},
     PatternError, r"glob 'a\.\.b': empty segment"),
    ("component", lambda s: s.component("visoin"), "component:visoin", "unknown component 'visoin'", N.Component,
     {"name": "visoin"}, UnknownNameError, r"unknown component 'visoin'; did you mean `vision`\?"),
    ("under", lambda s: s.under("\ud800"), 'under:"x"', None, N.Under, {"prefix": "\ud800"},
     SpecError, r"an under: module name holds the lone surrogate"),
]


@pytest.mark.parametrize("fluent, query, reason, cls, values, error, message", [s[1:] for s in SPELLINGS],
                         ids=[s[0] for s in SPELLINGS])
def test_one_value_fails_alike_in_every_spelling(demo, fluent, query, reason, cls, values, error, message):
    with pytest.raises(error, match=message):
        fluent(select(demo))
    with pytest.raises(error, match=message):  # the class itself raises the check's error, not pydantic's
        cls(**values)
    with pytest.raises(SpecError, match=message):
        spec_to_selector({"kind": cls.model_fields["kind"].default, **values})
    if reason is not None:
        with pytest.raises(QuerySyntaxError) as info:
            parse_uncached(query)
        assert info.value.reason.startswith(reason), info.value.reason


class _Counting:
    def __init__(self, function):
        self.function, self.calls = function, []

    def __call__(self, pattern):
        self.calls.append(pattern)
        return self.function(pattern)


@pytest.mark.parametrize("build", [lambda s: s.name("q_pr[o]j"), lambda s: s.where("name:/q_pr[o]j/")], ids=["fluent", "query"])
def test_a_regex_is_compiled_once_per_node(demo, monkeypatch, build):
    counting = _Counting(patterns._compile_regex)
    monkeypatch.setattr(patterns, "_compile_regex", counting)
    parser._parse_cached.cache_clear()
    build(select(demo))
    assert counting.calls == ["q_pr[o]j"]


@pytest.mark.parametrize("build", [lambda s: s.glob("**.q_pr[o]j"), lambda s: s.where("glob:**.q_pr[o]j")], ids=["fluent", "query"])
def test_a_glob_is_translated_once_per_node(demo, monkeypatch, build):
    counting = _Counting(globs._glob_to_regex)
    monkeypatch.setattr(globs, "_glob_to_regex", counting)
    parser._parse_cached.cache_clear()
    build(select(demo))
    assert counting.calls == ["**.q_pr[o]j"]


def test_pydantic_coercion_comes_first(demo):
    """What pydantic turns into a string (bytes) is a string for every atom, as `.where(re.compile(b"…"))` always was."""
    assert select(demo).name(b"q_proj") == select(demo).name("q_proj") == select(demo).where(re.compile(b"q_proj"))
    assert select(demo).glob(b"**.q_proj").names() == select(demo).glob("**.q_proj").names()
    assert N.TypeIs(name=b"Linear") == N.TypeIs(name="Linear")


def test_a_node_with_two_bad_fields_lists_both():
    with pytest.raises(SpecError, match=r"^invalid TypeIs: name: .*; exact: "):
        N.TypeIs(name=5, exact="maybe")
