"""No foreign exception escapes: every failure of a public function or the CLI is a TargetselError.

Each row below once raised something else — a KeyError from the `regex` package, `re.error`,
OverflowError from torch, RecursionError, PydanticSerializationError, a segfault or gigabytes of
memory — found by the issue or by fuzzing the parser, the fluent chain and the `regex` package.
The second half pins the nesting limit: a selector of `MAX_DEPTH` levels does everything
(prints, parses back, pickles, JSON, selects), one level more is refused where it is built.
"""

from __future__ import annotations

import functools
import json
import pickle
import re
import subprocess
import sys

import pytest
from pydantic import ValidationError

import models
import targetsel as ts
from targetsel import LayerSpecError, PatternError, QuerySyntaxError, SpecError, UnknownNameError, select
from targetsel.cli import commands as cli
from targetsel.query import nodes as N
from targetsel.query.nodes import MAX_DEPTH
from targetsel.query.parser import load_spec, parse_uncached


@pytest.fixture(scope="module")
def demo():
    return models.demo()


# ---------------------------------------------------------------------------- the query language

# (query, column, reason) — each parse() raises QuerySyntaxError, whose reason starts with `reason`
SYNTAX = [
    # the `regex` package: inline flags it reports with KeyError / ValueError
    (r"name:/(?V0)(?V1)a/", 6, r"bad regex: it turns on both VERSION0 \(\?V0\) and VERSION1 \(\?V1\); keep one"),
    (r"name:/(?a)(?L)x/", 6, r"bad regex: the regex engine rejects it \(ValueError: ASCII, LOCALE and UNICODE flags"),
    # counted repeats are unrolled when compiling (gigabytes for this one)
    (r"name:/a{4294967294}/", 7, r"bad regex: the counted repeat \{4294967294\} unrolls it to more than 100,000 elements"),
    (r"name:/(?:a{1000}){1000}/", 17, r"bad regex: the counted repeat \{1000\} unrolls it"),
    # recursion under fuzzy matching kills the process (segfault)
    (r"name:/(?0){e<=1}/", 6, r"bad regex: recursive patterns \(\(\?R\), \(\?1\), \(\?&name\)\) are not supported"),
    (r"name:/(?R)/", 6, r"bad regex: recursive patterns"),
    (r"name:/(a(?1))/", 8, r"bad regex: recursive patterns"),
    (r"name:/(?<n>a(?&n))/", 12, r"bad regex: recursive patterns"),
    ("name:/" + "(" * 33 + "a" + ")" * 33 + "/", 38, r"bad regex: groups nest deeper than 32 levels"),
    # found by fuzzing: \G under fuzzy matching raises RuntimeError('invalid RE code') while matching
    (r"name:/a\G{e<=1}/", 6, r"bad regex: the regex engine fails on it while matching \(RuntimeError: invalid RE code\)"),
    # the pre-scan misreads the V0 class [[] and lets 250 groups through: the engine's RecursionError
    ("name:/[[]" + "(?:" * 250 + "a" + ")" * 250 + "/", 6, r"bad regex: it nests too deeply for the regex engine"),
    # globs: re.error from the translated regex, ValueError from int('²'), RecursionError
    ("glob:[]", 5, r"glob '\[\]': the character class '\[\]' is empty; write \[qkv\]"),
    ('glob:"[^]"', 5, r"glob '\[\^\]': the character class '\[\^\]' is empty"),
    ('glob:"[z-a]"', 5, r"glob '\[z-a\]': bad character range"),
    ('glob:"{²..3}"', 5, r"glob '\{²\.\.3\}': bad numeric range '²\.\.3'"),
    ("glob:{0..99999999999999999999}", 5, r"glob '\{0\.\.99999999999999999999\}': the range '0\.\.99999999999999999999' goes past 9223372036854775807"),
    ("glob:{0.." + "9" * 5000 + "}", 5, r"glob '\{0\.\.9{5000}\}': the range '0\.\.9{5000}' goes past"),
    ("glob:" + "{" * 33 + "a" + "}" * 33, 5, r"glob '\{{33}a\}{33}': '\{…\}' nests deeper than 32 levels"),
    # layers: OverflowError from torch, ValueError from int() past 4300 digits
    ("layers:99999999999999999999", 7, r"layer index 99999999999999999999 is out of range: block indices lie between -9223372036854775807 and 9223372036854775807"),
    ("layers:-99999999999999999999..", 7, r"layer index -99999999999999999999 is out of range"),
    ("layers:0.." + "9" * 5000, 7, r"layer index 999999999999…\(5000 digits\) is out of range"),
    # a lone surrogate (undecodable bytes): PydanticSerializationError in model_dump_json
    ('under:"\udcff"', 7, r"the character '\\udcff' is a lone surrogate, not text"),
    ("name:/a\ud800/", 7, r"the character '\\ud800' is a lone surrogate"),
    ("linear\x00", 6, r"expected an operator \(&, \|, -\) before '\\x00'"),
]


@pytest.mark.parametrize("query, column, reason", SYNTAX, ids=[ascii(q[:40]) for q, *_ in SYNTAX])
def test_bad_queries_raise_query_syntax_errors(query, column, reason):
    with pytest.raises(QuerySyntaxError, match=r"^" + reason) as info:
        parse_uncached(query)
    assert info.value.position == column
    assert re.match(reason, info.value.reason)


# Valid queries that once failed later (or parse() refused although they mean something)
VALID = [
    # regex package V1 syntax: set difference [[a-z]--[aeiou]] (was a KeyError from the VERSION0 flag)
    (r"name:/(?V1)^[[a-z_.0-9]--[aeiou]]+$/", lambda n: re.fullmatch(r"[b-df-hj-np-tv-z_.0-9]+", n) is not None),
    # nested brace alternatives in a glob (the body was split on every comma)
    ("glob:**.{q,{k,v}}_proj", lambda n: re.search(r"\.[qkv]_proj$", n) is not None),
    (r"name:/\x00/", lambda n: False),
    # what the pre-scan of a regex skips: comments, escapes with braces
    (r"name:/(?#((((((((((((((((((((((((((((((((((((()fc1/", lambda n: "fc1" in n),
    (r"name:/\N{FULL STOP}fc\d/", lambda n: re.search(r"\.fc\d", n) is not None),
    ("layers:0000000000000000000000001", lambda n: re.search(r"\.layers\.1(\.|$)", n) is not None),
    ('glob:"a\x00b"', lambda n: False),
]


@pytest.mark.parametrize("query, keeps", VALID, ids=[ascii(q) for q, _ in VALID])
def test_queries_that_failed_later_now_work_end_to_end(demo, query, keeps):
    selector = parse_uncached(query)
    assert parse_uncached(str(selector)) == selector
    assert N.Selector.model_validate_json(selector.model_dump_json()) == selector
    assert pickle.loads(pickle.dumps(selector)) == selector
    names = select(demo, query).names()
    assert names == [n for n in select(demo).names() if keeps(n)]


def test_parse_uncached_refuses_non_strings_like_parse():
    with pytest.raises(QuerySyntaxError, match=r"^a query must be a string such as 'linear & trainable', got int"):
        parse_uncached(3)


def test_regression_query_of_more_than_max_nodes():
    """100,001 atoms: a flat `|` is not deep, but its size is limited too (see the fluent doubling)."""
    query = "linear" + " | leaf" * N.MAX_NODES
    with pytest.raises(QuerySyntaxError, match=r"^this selector holds 100,002 nodes when printed, more than the limit of 100,000\. .* at column 7\n"):
        parse_uncached(query)


def test_a_regex_slow_on_the_probe_names_still_compiles():
    from targetsel.query.patterns import compile_regex

    assert compile_regex(r"^(?:.|..|...)*(?<!j)$").pattern == r"^(?:.|..|...)*(?<!j)$"  # the time budget is search_names' business


def test_regression_regex_error_inside_matching_is_a_pattern_error(demo):
    """`\\G` under fuzzy matching passes compiling and fails on some names only (RuntimeError)."""
    query = r"name:/vision\G{e<=1}/"
    parse_uncached(query)  # the probe names do not trigger it
    with pytest.raises(PatternError, match=r"^regex /vision\\G\{e<=1\}/ failed inside the regex engine while matching"):
        select(demo, query).names()


# ---------------------------------------------------------------------------- the fluent chain

BIG = 10**5000  # repr() of it raises ValueError: messages must not

# (name, call(selection), error, message)
FLUENT = [
    ("glob-empty-class", lambda s: s.glob("[^]"), PatternError, r"glob '\[\^\]': the character class '\[\^\]' is empty"),
    ("glob-empty", lambda s: s.glob("[]"), PatternError, r"glob '\[\]': the character class"),
    ("glob-list", lambda s: s.glob(["a"]), PatternError, r"a glob must be a non-empty string, got list \['a'\]"),
    ("glob-huge-int", lambda s: s.glob(BIG), PatternError, r"a glob must be a non-empty string, got int <int object>"),
    ("glob-long-list", lambda s: s.glob(list(range(100))), PatternError, r"a glob must be a non-empty string, got list \[0, 1, 2, .*…\(390 characters\)$"),
    ("glob-surrogate", lambda s: s.glob("a\udcff"), PatternError, r"glob 'a\\udcff': the character '\\udcff' is a lone surrogate, not text .* at 1$"),
    ("name-list", lambda s: s.name(["a"]), PatternError, r"a name pattern must be a string, got list \['a'\]"),
    ("name-empty", lambda s: s.name(""), PatternError, r"an empty regex matches every name; select every module with all"),  # printed name://, which does not parse
    ("name-slice", lambda s: s.name(slice(1)), PatternError, r"a name pattern must be a string, got slice"),
    ("name-recursion", lambda s: s.name(r"(?0){e<=1}"), PatternError, r"invalid regex /\(\?0\)\{e<=1\}/: recursive patterns"),
    ("name-repeat", lambda s: s.name("a{4294967294}"), PatternError, r"invalid regex /a\{4294967294\}/: the counted repeat"),
    ("name-flags", lambda s: s.name("(?a)(?L)x"), PatternError, r"invalid regex /\(\?a\)\(\?L\)x/: the regex engine rejects it \(ValueError"),
    ("where-re-surrogate", lambda s: s.where(re.compile("\ud800")), PatternError, r"invalid regex /\\ud800/: the character '\\ud800' is a lone surrogate"),
    ("layers-int", lambda s: s.layers(10**20), LayerSpecError, r"layer index 100000000000000000000 is out of range"),
    ("layers-huge-int", lambda s: s.layers(BIG), LayerSpecError, r"layer index 2\*\*16609… is out of range"),
    ("layers-string", lambda s: s.layers("9" * 5000), LayerSpecError, r"layer index 999999999999…\(5000 digits\) is out of range"),
    ("layers-range", lambda s: s.layers(range(0, 10**30)), LayerSpecError, r"layer index 999999999999…\(30 digits\) is out of range"),
    ("layers-stepped-range-huge", lambda s: s.layers(range(0, 10**30, 7)), LayerSpecError, r"layer index 999999999999…\(30 digits\) is out of range"),
    ("layers-stepped-range-long", lambda s: s.layers(range(0, 10**6, 2)), LayerSpecError, r"range\(0, 1000000, 2\) lists 500,000 blocks, more than the 10,000"),
    ("layers-stepped-range-longest", lambda s: s.layers(range(2**63 - 1, -(2**63) + 1, -1)), LayerSpecError, r"range\(9223372036854775807, -9223372036854775807, -1\) lists more than 2\*\*63 blocks"),
    ("layers-slice", lambda s: s.layers(slice(0, 10**20)), LayerSpecError, r"layer index 99999999999999999999 is out of range"),
    ("layers-non-ascii-digit", lambda s: s.layers("٣"), LayerSpecError, r"bad layer range '٣' in '٣'; write A\.\.B, A\.\., \.\.B or N"),
    ("layers-nested-lists", lambda s: s.layers([[[1]]]), LayerSpecError, r"cannot read \[\[1\]\] as a layer spec: a list inside a list inside a list"),
    ("layers-within-surrogate", lambda s: s.layers(0, within="\ud800"), SpecError, r"a layers 'within' container name holds the lone surrogate '\\ud800'"),
    ("type-with-space", lambda s: s.type("a b"), UnknownNameError, r"a type is a class or a class name such as 'Linear', got 'a b'"),
    ("type-surrogate", lambda s: s.type("\udcff"), SpecError, r"a type name holds the lone surrogate '\\udcff' at position 0"),
    ("doubling", lambda s: functools.reduce(lambda a, _: a - a.leaf(), range(20), s.linear()), SpecError,
     r"this selector holds 131,069 nodes when printed, more than the limit of 100,000\. A selection used twice in one step"),
    ("under-surrogate", lambda s: s.under("\ud800"), SpecError, r"an under: module name holds the lone surrogate '\\ud800' at position 0"),
]


@pytest.mark.parametrize("name, call, error, message", FLUENT, ids=[c[0] for c in FLUENT])
def test_fluent_chain_raises_targetsel_errors(demo, name, call, error, message):
    with pytest.raises(error, match=r"^" + message):
        call(select(demo))


class _Unprintable:
    def __call__(self, name, module):
        return True

    def __repr__(self):
        raise RuntimeError("no repr")


def test_regression_where_returning_a_tensor(demo):
    """`if tensor:` raised torch's RuntimeError from evaluation, outside the guard around the call."""
    import torch

    with pytest.raises(ts.TargetselError, match=r"^where\(.*<lambda>\) returned a Tensor that is neither true nor false on module "
                                                r"'vision_tower' \(RuntimeError: Boolean value of Tensor with more than one value"):
        select(demo).where(lambda name, module: torch.ones(2)).names()


def test_regression_where_callable_with_a_failing_repr(demo):
    sel = select(demo).linear().where(_Unprintable())
    assert str(sel.selector) == "linear & <where <_Unprintable object>: a Python callable, not serialisable>"
    assert len(sel.names()) == len(select(demo).linear().names())


def test_nested_layer_lists_one_level_deep_still_work(demo):
    assert select(demo).layers([[0, 1], 5]).selector == select(demo).layers([0, 1, 5]).selector


# Found by the fluent fuzzing in selection.py: a non-string component name reached `did_you_mean`,
# and repr() of an int past 4300 digits raises inside the error message itself.
SELECTION_PY = [
    ("component-not-a-string", lambda s: s.component(3), UnknownNameError),
    ("type-huge-int", lambda s: s.type(BIG), ts.TargetselError),
    ("under-huge-int", lambda s: s.under(BIG), ts.TargetselError),
    ("where-huge-int", lambda s: s.where(BIG), ts.TargetselError),
]


@pytest.mark.parametrize("name, call, error", SELECTION_PY, ids=[c[0] for c in SELECTION_PY])
def test_regression_foreign_exceptions_in_selection_py(demo, name, call, error):
    with pytest.raises(error):
        call(select(demo))


# ---------------------------------------------------------------------------- the nesting limit


# (name, build(selection of the demo, levels) -> Selection of exactly `levels` levels)
DEEP_FLUENT = [
    ("not", lambda s, k: functools.reduce(lambda a, _: ~a, range(k), s.linear())),
    ("difference", lambda s, k: functools.reduce(lambda a, _: a - s.glob("**.fc1"), range(k), s.linear())),
    ("and-or", lambda s, k: functools.reduce(lambda a, i: (a | s.leaf()) if i % 2 else (a & s.frozen()), range(k), s.layers("0..1"))),
    ("under", lambda s, k: functools.reduce(lambda a, _: s.under(a), range(k), s.type("Linear"))),
    ("outermost", lambda s, k: functools.reduce(lambda a, _: a.outermost(), range(k), s.linear())),
]


@pytest.mark.parametrize("name, build", DEEP_FLUENT, ids=[c[0] for c in DEEP_FLUENT])
def test_a_selector_at_the_limit_does_everything(demo, name, build):
    """`parse(q)` succeeds iff str, select, JSON, pickling and the round trip do: at MAX_DEPTH all work."""
    sel = build(select(demo), MAX_DEPTH)
    selector = sel.selector
    assert selector.root.nesting == MAX_DEPTH
    text = str(selector)
    assert parse_uncached(text) == selector
    assert N.Selector.model_validate_json(selector.model_dump_json()) == selector  # past pydantic's JSON parser limit for and-or
    assert N.Selector.model_validate(selector.model_dump()) == selector
    assert pickle.loads(pickle.dumps(selector)) == selector
    assert select(demo, text).names() == sel.names()
    repr(sel)


@pytest.mark.parametrize("name, build", DEEP_FLUENT, ids=[c[0] for c in DEEP_FLUENT])
def test_regression_chained_difference_recursion(demo, name, build):
    """One level past the limit is refused where it is built (was RecursionError, PydanticSerializationError)."""
    with pytest.raises(SpecError, match=rf"^this selector nests more than {MAX_DEPTH} levels deep, the limit\. .*a - \(b \| c \| …\)"):
        build(select(demo), MAX_DEPTH + 1)


def _parens(k):
    """k parenthesised levels of `(glob:a & … - glob:b | glob:c)`: three selector levels each."""
    q = "linear"
    for _ in range(k):
        q = f"(glob:a & {q} - glob:b | glob:c)"
    return q


# (query, column of the caret) — QuerySyntaxError "the query nests deeper than 100 levels"
DEEP_QUERIES = [
    ("linear" + " - glob:x" * 101, 6 + 100 * 9 + 1),  # the 101st '-'
    ("!" * 101 + "linear", 100),
    ("under:(" * 101 + "linear" + ")" * 101, 700 + 6),
    ("(" * 101 + "linear" + ")" * 101, 100),
    (_parens(34), len(_parens(34)) - len(" - glob:b | glob:c)") + 1),  # 34 parentheses, 102 levels
]


@pytest.mark.parametrize("query, column", DEEP_QUERIES, ids=["difference-chain", "not", "under", "parentheses", "mixed"])
def test_queries_past_the_limit_point_at_the_level_that_exceeds_it(query, column):
    with pytest.raises(QuerySyntaxError, match=rf"^the query nests deeper than {MAX_DEPTH} levels at column {column}\n") as info:
        parse_uncached(query)
    assert "write a long difference a - b - c - … as a - (b | c | …)" in str(info.value)


@pytest.mark.parametrize(
    "query",
    ["linear" + " - glob:x" * 100, "!" * 100 + "linear", _parens(33), "linear" + " | glob:x" * 1000, "linear" + " & glob:x" * 1000],
    ids=["difference-chain", "not", "mixed", "long-or", "long-and"],
)
def test_queries_at_the_limit_round_trip(demo, query):
    selector = parse_uncached(query)
    assert selector.root.nesting <= MAX_DEPTH
    assert parse_uncached(str(selector)) == selector
    assert N.Selector.model_validate_json(selector.model_dump_json()) == selector
    assert pickle.loads(pickle.dumps(selector)) == selector
    select(demo, query).names()


# ---------------------------------------------------------------------------- node structures and spec files


def _nots(k):
    data = {"kind": "linear"}
    for _ in range(k):
        data = {"kind": "not", "item": data}
    return data


SPECS = [
    ("deep.json", "[" * 100_000 + "]" * 100_000, r": the JSON nests too deeply to read; a selector nests at most 100 levels"),
    ("deep.yaml", "[" * 100_000 + "]" * 100_000, r": the YAML nests too deeply to read; a selector nests at most 100 levels"),
    ("nots.json", json.dumps(_nots(150)),
     r": 1 problem\(s\) in the selector structure: not\.item\.not\.item … .* \(\d+ steps\): this selector nests more than 100 levels deep"),
    ("deeper.json", json.dumps(_nots(400)), r": 1 problem\(s\) in the selector structure: root: the selector structure nests more than 204 levels"),
    ("regex.json", json.dumps({"kind": "and", "items": [{"kind": "linear"}, {"kind": "name", "pattern": "(?0){e<=1}"}]}),
     r": 1 problem\(s\) in the selector structure: and\.items\.1\.name\.pattern: invalid regex /\(\?0\)\{e<=1\}/: recursive patterns"),
]


@pytest.mark.parametrize("filename, text, message", SPECS, ids=[s[0] for s in SPECS])
def test_spec_files_raise_spec_errors(tmp_path, filename, text, message):
    path = tmp_path / filename
    path.write_text(text)
    with pytest.raises(SpecError, match=r"^" + re.escape(str(path)) + message):
        load_spec(path)


def test_model_validate_json_past_every_json_parser_is_a_validation_error():
    with pytest.raises(ValidationError, match=r"Invalid JSON: recursion limit exceeded"):
        N.Selector.model_validate_json("[" * 100_000 + "]" * 100_000)


def test_model_validate_keeps_pydantic_contract_with_our_message():
    with pytest.raises(ValidationError, match=r"this selector nests more than 100 levels deep"):
        N.Selector.model_validate(_nots(150))
    with pytest.raises(ValidationError, match=r"the selector structure nests more than 204 levels"):
        N.Selector.model_validate(_nots(400))


def test_building_a_node_directly_raises_the_validators_error():
    with pytest.raises(PatternError, match=r"^invalid regex /\(/: missing \) at position 1"):
        N.NameRegex(pattern="(")
    with pytest.raises(SpecError, match=r"^invalid Layers: ranges: Input should be a valid tuple"):
        N.Layers(ranges="x")
    with pytest.raises(SpecError, match=r"^invalid Selector: "):
        N.Selector("linear")


# ---------------------------------------------------------------------------- the command line

# (argv, stderr start) — in-process; exit code 2 and a message, never a traceback
CLI = [
    (["show", "demo", "glob:[]"], r"targetsel: error: glob '\[\]': the character class '\[\]' is empty"),
    (["show", "demo", r"name:/(?V0)(?V1)a/"], r"targetsel: error: bad regex: it turns on both VERSION0"),
    (["show", "demo", "layers:99999999999999999999"], r"targetsel: error: layer index 99999999999999999999 is out of range"),
    (["show", "demo", "linear" + " - glob:x" * 101], r"targetsel: error: the query nests deeper than 100 levels at column 907"),
    (["check", "demo", "!" * 101 + "linear"], r"targetsel: error: the query nests deeper than 100 levels at column 100"),
    (["show", "demo", r"name:/vision\G{e<=1}/"], r"targetsel: error: regex /vision\\G\{e<=1\}/ failed inside the regex engine"),
]


@pytest.mark.parametrize("argv, message", CLI, ids=[a[2][:30] for a, _ in CLI])
def test_cli_bad_queries_exit_2_without_a_traceback(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert re.match(message, err), err
    assert "Traceback" not in err


def test_cli_undecodable_argv_bytes_exit_2_in_a_subprocess():
    """Bytes that are not UTF-8 reach Python as lone surrogates; printing them must not fail either."""
    result = subprocess.run(
        [sys.executable, "-m", "targetsel", "show", "demo", b"under:\xff"], capture_output=True, timeout=180,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"},
    )
    err = result.stderr.decode("utf-8", "backslashreplace")
    assert result.returncode == 2, err
    assert err.startswith("targetsel: error: the character '\\udcff' is a lone surrogate, not text at column 6")
    assert "Traceback" not in err


def test_cli_internal_error_is_one_line_and_exit_3(monkeypatch, capsys):
    def broken(ns):
        raise KeyError("boom")

    monkeypatch.setattr(cli, "_show", broken)
    assert cli.main(["show", "demo"]) == 3
    err = capsys.readouterr().err
    assert re.match(r"^targetsel: internal error: KeyError: 'boom' \(raised at test_foreign_exceptions\.py:\d+\)\n"
                    r"This is a bug: please report it with the command line you ran\.\n$", err), err


def test_cli_interrupt_exits_130(monkeypatch, capsys):
    def interrupted(ns):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_show", interrupted)
    assert cli.main(["show", "demo"]) == 130
    assert capsys.readouterr().err == "targetsel: interrupted\n"
