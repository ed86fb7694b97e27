"""The query language and selector specs: spellings, precedence, round-trips, errors."""

from __future__ import annotations

import json
import pickle

import pytest
import yaml
from torch import nn

import models
import targetsel as ts
from targetsel import QuerySyntaxError, parse, select
from targetsel.query import nodes as N
from targetsel.query.parser import parse_uncached


@pytest.fixture(scope="module")
def demo():
    return models.demo()


# (query, the same selection written with the fluent chain) — every atom and every operator
EQUIVALENT = [
    ("trainable", lambda s: s.trainable()),
    ("frozen", lambda s: s.frozen()),
    ("mixed", lambda s: s.mixed()),
    ("linear", lambda s: s.linear()),
    ("leaf", lambda s: s.leaf()),
    ("outermost", lambda s: s.outermost()),
    ("all", lambda s: s),
    ("type:Linear", lambda s: s.type(nn.Linear)),
    ("type:=Linear", lambda s: s.type("Linear", exact=True)),
    ("type:PLoRA", lambda s: s.type("PLoRA")),
    (r"name:/self_attn\.(q|k)_proj$/", lambda s: s.name(r"self_attn\.(q|k)_proj$")),
    ("glob:**.{q,v}_proj", lambda s: s.glob("**.{q,v}_proj")),
    ("under:vision_tower", lambda s: s.under("vision_tower")),
    ("under:(type:PLoRA)", lambda s: s.under(s.type("PLoRA"))),
    ("layers:0..1", lambda s: s.layers("0..1")),
    ("layers:-2..", lambda s: s.layers(slice(-2, None))),
    ("layers:3", lambda s: s.layers(3)),
    ("layers:0,2..3@vision_tower.layers", lambda s: s.layers("0,2..3", within="vision_tower.layers")),
    ("linear & trainable", lambda s: s.linear() & s.trainable()),
    ("linear and trainable", lambda s: s.linear().trainable()),
    ("leaf | type:Embedding", lambda s: s.leaf() | s.type(nn.Embedding)),
    ("linear or leaf", lambda s: s.linear() | s.leaf()),
    ("linear - under:vision_tower", lambda s: s.linear() - s.under("vision_tower")),
    ("!linear", lambda s: ~s.linear()),
    ("not linear", lambda s: ~s.linear()),
    ("linear & !under:vision_tower", lambda s: s.linear() - s.under("vision_tower")),
    ("(linear | leaf) & frozen", lambda s: (s.linear() | s.leaf()).frozen()),
    ("linear & outermost", lambda s: s.linear().outermost()),
    ("where-query: linear", lambda s: s.where("linear")),
]


@pytest.mark.parametrize("query, fluent", EQUIVALENT, ids=[q for q, _ in EQUIVALENT])
def test_query_and_fluent_chain_select_the_same_modules(demo, query, fluent):
    query = query.removeprefix("where-query: ")
    assert select(demo, query).names() == fluent(select(demo)).names()


# Selectors the fluent chain builds print as the query that parses back to them.
FLUENT_SELECTORS = [
    (lambda s: s.linear().trainable(), "linear & trainable"),
    (lambda s: s.linear() - s.under("vision_tower"), "linear - under:vision_tower"),
    (lambda s: ~s.linear(), "!linear"),
    (lambda s: (s.linear() | s.leaf()).frozen(), "(linear | leaf) & frozen"),
    (lambda s: s.linear() | s.leaf() - s.frozen(), "linear | leaf - frozen"),
    (lambda s: (s.linear() | s.leaf()) - s.frozen(), "(linear | leaf) - frozen"),
    (lambda s: s.linear() - (s.leaf() - s.frozen()), "linear - (leaf - frozen)"),
    (lambda s: ~(s.linear() & s.leaf()), "!(linear & leaf)"),
    (lambda s: s.linear().outermost().leaf(), "(linear & outermost) & leaf"),
    (lambda s: s.type("PLoRA", exact=True), "type:=PLoRA"),
    (lambda s: s.type(nn.Linear, nn.Embedding), "type:Linear | type:Embedding"),
    (lambda s: s.name("a/b"), r"name:/a\/b/"),
    (lambda s: s.name(r"a\/b"), r"name:/a\/b/"),
    (lambda s: s.glob("vision_tower.layers.*.mlp.fc1"), "glob:vision_tower.layers.*.mlp.fc1"),
    (lambda s: s.under("vision_tower.layers.0"), "under:vision_tower.layers.0"),
    (lambda s: s.under(s.type("PLoRA").layers(0)), "under:(type:PLoRA & layers:0)"),
    (lambda s: s.layers(range(2, 5)), "layers:2..4"),
    (lambda s: s.layers(slice(None, 2)), "layers:0..1"),
    (lambda s: s.layers([0, "-1.."]), "layers:0,-1.."),
    (lambda s: s.layers(1, within="language_model.layers"), "layers:1@language_model.layers"),
]


@pytest.mark.parametrize("build, canonical", FLUENT_SELECTORS, ids=[c for _, c in FLUENT_SELECTORS])
def test_fluent_selectors_print_canonically_and_parse_back(demo, build, canonical):
    selector = build(select(demo)).selector
    assert str(selector) == canonical
    assert parse(str(selector)) == selector
    assert repr(selector) == f"parse({canonical!r})"
    assert eval(repr(selector), {"parse": parse}) == selector  # repr pastes back


# (written, canonical): whitespace-insensitive, keywords case-insensitive, redundant parentheses dropped
CANONICAL = [
    ("linear&trainable", "linear & trainable"),
    ("  LINEAR   AND  Trainable ", "linear & trainable"),
    ("NOT frozen OR leaf", "!frozen | leaf"),
    ("((linear))", "linear"),
    ("linear & (trainable & leaf)", "linear & trainable & leaf"),
    ("linear | (leaf | frozen)", "linear | leaf | frozen"),
    ("all & linear", "linear"),
    ("linear-frozen", "linear - frozen"),
    ("layers:1-frozen", "layers:1 - frozen"),
    ("layers:0..3,-1", "layers:0..3,-1"),
    ("under: vision_tower", "under:vision_tower"),
    ('under:"vision_tower"', "under:vision_tower"),
    ('under:"odd-name.x"', 'under:"odd-name.x"'),
    ('glob:"a b.*"', 'glob:"a b.*"'),
    ('under:"odd name"', 'under:"odd name"'),
    ('glob:"q\\"x"', 'glob:"q\\"x"'),
    ("component:VISION", "component:vision"),
    ("TYPE:Linear", "type:Linear"),
    ("!!linear", "!!linear"),
    ("(a_b_c_d - frozen)".replace("a_b_c_d", "linear"), "linear - frozen"),
    ("linear - frozen - leaf", "linear - frozen - leaf"),
    ("linear - (frozen - leaf)", "linear - (frozen - leaf)"),
]


@pytest.mark.parametrize("written, canonical", CANONICAL, ids=[w for w, _ in CANONICAL])
def test_canonical_form(written, canonical):
    assert str(parse(written)) == canonical
    assert parse(canonical) == parse(written)


# Precedence, loosest first: | - & !  (the README table states the same)
PRECEDENCE = [
    ("linear | leaf - frozen", N.Or(items=(N.Flag(kind="linear"), N.Diff(left=N.Flag(kind="leaf"), right=N.Flag(kind="frozen"))))),
    ("linear - leaf & frozen", N.Diff(left=N.Flag(kind="linear"), right=N.And(items=(N.Flag(kind="leaf"), N.Flag(kind="frozen"))))),
    ("!linear & leaf", N.And(items=(N.Not(item=N.Flag(kind="linear")), N.Flag(kind="leaf")))),
    ("linear - leaf - frozen", N.Diff(left=N.Diff(left=N.Flag(kind="linear"), right=N.Flag(kind="leaf")), right=N.Flag(kind="frozen"))),
    ("linear & leaf | frozen", N.Or(items=(N.And(items=(N.Flag(kind="linear"), N.Flag(kind="leaf"))), N.Flag(kind="frozen")))),
]


@pytest.mark.parametrize("query, tree", PRECEDENCE, ids=[q for q, _ in PRECEDENCE])
def test_precedence(query, tree):
    assert parse(query).root == tree


SERIALISABLE = [q for q, _ in CANONICAL] + [c for _, c in FLUENT_SELECTORS] + [
    r"name:/^model\.layers\.\d+\.mlp\.(gate|up)_proj$/",
    "layers:..3",
    "under:(layers:-4.. & type:=PLoRA) - frozen",
]


@pytest.mark.parametrize("query", SERIALISABLE)
def test_round_trips_through_str_json_and_yaml(query, tmp_path):
    s = parse(query)
    assert parse(str(s)) == s
    assert N.Selector.model_validate_json(s.model_dump_json()) == s
    assert N.Selector.model_validate(yaml.safe_load(yaml.safe_dump(s.model_dump()))) == s
    assert pickle.loads(pickle.dumps(s)) == s
    assert hash(parse(str(s))) == hash(s)
    for suffix, text in ((".json", s.model_dump_json()), (".yaml", yaml.safe_dump(s.model_dump())), (".yml", yaml.safe_dump(str(s)))):
        path = tmp_path / f"spec{suffix}"
        path.write_text(text)
        assert ts.load_spec(path) == s


# (spec file name, contents, canonical query) — query strings, {query: ...}, hand-written node structures
SPEC_FILES = [
    ("q.json", json.dumps("linear & trainable"), "linear & trainable"),
    ("q.json", json.dumps({"query": "linear - frozen"}), "linear - frozen"),
    ("q.yaml", "query: linear & !under:vision_tower\n", "linear & !under:vision_tower"),
    ("q.yml", "kind: and\nitems:\n  - {kind: linear}\n  - {kind: trainable}\n", "linear & trainable"),
    ("q.yaml", "kind: and\nitems:\n  - {kind: all}\n  - kind: and\n    items: [{kind: linear}, {kind: leaf}]\n", "linear & leaf"),
    ("q.json", json.dumps({"kind": "layers", "ranges": [[-4, None]], "within": "layers"}), "layers:-4..@layers"),
    ("q.yaml", "kind: type\nname: PLoRA\nexact: true\n", "type:=PLoRA"),
]


@pytest.mark.parametrize("filename, text, canonical", SPEC_FILES)
def test_load_spec(tmp_path, filename, text, canonical):
    path = tmp_path / filename
    path.write_text(text)
    assert str(ts.load_spec(path)) == canonical
    assert ts.load_spec(str(path)) == parse(canonical)


SPEC_ERRORS = [
    ("q.txt", "linear", ts.SpecError, r"expected a \.json, \.yaml or \.yml file, got '\.txt'"),
    ("q.json", "{linear", ts.SpecError, r"not valid JSON at line 1, column 2"),
    ("q.yaml", "a: [b\n", ts.SpecError, r"not valid YAML at line 2"),
    ("q.yaml", "- linear\n- leaf\n", ts.SpecError, r"a selector spec is a query string.*got list"),
    ("q.json", "42", ts.SpecError, r"got int"),
    ("q.json", json.dumps({"kind": "andd", "items": []}), ts.SpecError, r"problem\(s\) in the selector structure"),
    ("q.json", json.dumps({"kind": "layers", "ranges": [[5, 2]]}), ts.SpecError, r"the layer range 5\.\.2 is empty"),
    ("q.json", json.dumps({"kind": "name", "pattern": "["}), ts.SpecError, r"invalid regex"),
    ("q.json", json.dumps({"kind": "under"}), ts.SpecError, r"under needs exactly one of"),
    ("q.yaml", "query: 'linear &'\n", QuerySyntaxError, r"q\.yaml: '&' needs an atom after it"),
]


@pytest.mark.parametrize("filename, text, error, message", SPEC_ERRORS, ids=[m for *_, m in SPEC_ERRORS])
def test_load_spec_errors(tmp_path, filename, text, error, message):
    path = tmp_path / filename
    path.write_text(text)
    with pytest.raises(error, match=message):
        ts.load_spec(path)


def test_load_spec_missing_file(tmp_path):
    with pytest.raises(ts.SpecError, match=r"no such file '.*nope\.yaml'"):
        ts.load_spec(tmp_path / "nope.yaml")


def test_load_spec_unreadable_file(tmp_path):
    path = tmp_path / "bin.json"
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ts.SpecError, match=r"cannot read"):
        ts.load_spec(path)


# (query, 0-based column, message start, hint fragment or None) — every malformed query the issue lists and more
SYNTAX_ERRORS = [
    ("trainable &", 10, "'&' needs an atom after it", None),
    ("(linear", 0, "this '(' is never closed", "add a ')'"),
    ("name:/[/", 7, "bad regex: unterminated character set", None),
    ("trainabel", 0, "unknown atom 'trainabel'", "did you mean `trainable`?"),
    ("linear & trainabel", 9, "unknown atom 'trainabel'", "did you mean `trainable`?"),
    ("type:", 4, "type: needs a class name, found the end of the query", "type:Linear"),
    ("layers:5..2", 7, "the layer range 5..2 is empty; write 2..5", None),
    ("linear )", 7, "unexpected ')' with no '(' before it", None),
    ("| frozen", 0, "expected an atom, found '|'", None),
    ("linear & | frozen", 9, "expected an atom after '&', found '|'", None),
    ("", 0, "empty query", "`all` selects every module"),
    ("   ", 0, "empty query", None),
    ("linear trainable", 7, "expected an operator (&, |, -) before 'trainable'", "linear & trainable"),
    ("q_proj", 0, "unknown atom 'q_proj'", "glob:**.q_proj"),
    ("trainable:x", 0, "unknown atom 'trainable:'", "`trainable` takes no value"),
    ("typ:Linear", 0, "unknown atom 'typ:'", "did you mean `type:`?"),
    ("foo:bar", 0, "unknown atom 'foo:'", "atoms with a value"),
    ("glob:a..b", 5, "glob 'a..b': empty segment", None),
    ("component:visoin", 10, "unknown component 'visoin'", "did you mean `vision`?"),
    ("()", 0, "empty parentheses", None),
    ("(linear leaf)", 8, "expected ')' or an operator, found 'leaf'", None),
    ("under:(linear", 6, "this '(' is never closed", "under:(…) ends with ')'"),
    ("under:(linear leaf)", 14, "expected ')' or an operator, found 'leaf'", None),
    ('under:"abc', 6, "this quote is never closed", None),
    ('under:""', 6, "empty quoted value", None),
    ("name:/abc", 5, "this regex is never closed", None),
    ("name:abc", 5, "name: takes a regex between slashes", r"\/ for a slash"),
    ("name://", 5, "empty regex", None),
    ("name:/a(/", 8, "bad regex: missing )", None),
    ("layers:1..2x", 11, "unexpected character 'x' in a layer spec", None),
    ("layers:", 6, "layers: needs block indices", None),
    ("layers:..", 7, "bad layer range '..'", "A..B, A.., ..B or N"),
    ("layers:1@", 8, "layers: needs the name of the block container", None),
    ("type:a$b", 6, "unexpected character '$' in a value", "quote values"),
    ("under:&", 6, "under: needs a module name or (a query), found '&'", None),
    ("linear & @", 9, "unexpected character '@'", None),
    ("under", 0, "under needs a value after a colon", "under:vision_tower"),
    ("!", 0, "'!' needs an atom after it", None),
    ("not", 0, "'not' needs an atom after it", None),
    ("linear -", 7, "'-' needs an atom after it", None),
    ("(" * 150 + "linear" + ")" * 150, 100, "the query nests deeper than 100 levels", None),
    ("!" * 150 + "linear", 100, "the query nests deeper than 100 levels", None),
]


@pytest.mark.parametrize("query, position, message, hint", SYNTAX_ERRORS, ids=[q[:30] or "empty" for q, *_ in SYNTAX_ERRORS])
def test_syntax_errors(query, position, message, hint):
    with pytest.raises(QuerySyntaxError) as info:
        parse_uncached(query)
    err = info.value
    assert (err.query, err.position) == (query, position)
    assert err.reason.startswith(message), err.reason
    assert 0 <= err.position <= max(len(query) - 1, 0)
    lines = str(err).splitlines()
    assert lines[0] == f"{err.reason} at column {position}"
    assert lines[1] == "    " + query and lines[2] == "    " + " " * position + "^"
    if hint:
        assert hint in str(err)
    assert isinstance(err, ts.TargetselError)
    again = pickle.loads(pickle.dumps(err))
    assert (str(again), again.position) == (str(err), err.position)


@pytest.mark.parametrize("value", [None, 3, b"linear", ["linear"]])
def test_parse_refuses_non_strings(value):
    with pytest.raises(QuerySyntaxError, match=r"a query must be a string"):
        parse(value)


def test_parse_caches_and_passes_selectors_through():
    assert parse("linear & trainable") is parse("linear & trainable")
    s = parse("leaf")
    assert parse(s) is s


def test_regression_layers_spec_followed_by_difference():
    """Found by fuzzing: `layers:-4..-trainable` read the '-' as the minus of a range end."""
    assert parse("layers:-4..-trainable") == parse("layers:-4.. - trainable")
    assert parse("layers:-4..-2").root.ranges == ((-4, -2),)
    assert parse("layers:1,-2").root.ranges == ((1, 1), (-2, -2))


def test_class_names_and_regexes_are_case_sensitive(demo):
    with pytest.raises(ts.UnknownNameError, match=r"did you mean `Linear`.*\n  in query: type:linear"):
        select(demo, "type:linear")
    assert select(demo, "name:/Q_PROJ/").is_empty()
    assert not select(demo, "name:/q_proj/").is_empty()


@pytest.mark.parametrize(
    "query, error, message",
    [
        ("type:Lineer", ts.UnknownNameError, r"is a 'Lineer'; did you mean `Linear`"),
        ("under:visoin_tower", ts.UnknownNameError, r"no module named 'visoin_tower'.*did you mean 'vision_tower'"),
        ("layers:0@nope", ts.UnknownNameError, r"no block container named 'nope'.*'vision_tower.layers'"),
        ("trainable &", QuerySyntaxError, r"'&' needs an atom after it"),
    ],
)
def test_select_with_a_query_reports_model_errors(demo, query, error, message):
    with pytest.raises(error, match=message):
        select(demo, query)
    with pytest.raises(error, match=message):
        select(demo).where(query)


def test_select_query_argument_type_error(demo):
    with pytest.raises(ts.TargetselError, match=r"query must be a string or a Selector, got int"):
        select(demo, 3)


def test_select_accepts_a_selector(demo):
    assert select(demo, parse("linear & trainable")).names() == select(demo).linear().trainable().names()


def test_callables_cannot_be_serialised_and_say_so(demo):
    def is_q(name, module):
        return name.endswith("q_proj")

    sel = select(demo).linear().where(is_q)
    text = str(sel.selector)
    assert "is_q" in text and "not serialisable" in text
    for dump in (sel.selector.model_dump_json, sel.selector.model_dump, sel.selector.to_query):
        with pytest.raises(ts.NotSerialisableError, match=r"Python callable \(.*is_q\).*cannot be written as a query"):
            dump()
    assert not sel.selector.serialisable and select(demo).linear().selector.serialisable
    assert sel.names() == [n for n in select(demo).linear().names() if n.endswith("q_proj")]


def test_every_fluent_filter_has_an_atom():
    """The README promises every fluent filter an atom; this keeps the two lists in step."""
    from targetsel.query.parser import FLAGS, KEYED
    from targetsel.selection import Selection

    filters = {"trainable", "frozen", "mixed", "linear", "leaf", "outermost", "type", "name", "glob", "under", "layers", "component"}
    assert filters <= set(FLAGS) | set(KEYED)
    assert all(callable(getattr(Selection, f)) for f in filters)
