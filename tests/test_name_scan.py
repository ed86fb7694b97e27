"""Bulk name matching (query/regex_shape.py, query/name_table.py) answers exactly what one regex
call per name answers: literal shapes by string tests, the rest by one scan over joined names."""

from __future__ import annotations

import time

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from targetsel.errors import PatternError, RegexTimeoutError
from targetsel.query.globs import compile_glob, glob_names
from targetsel.query.name_table import NameTable, named
from targetsel.query.patterns import compile_regex, search_names
from targetsel.query.regex_shape import shape

# Names a model can hold: dotted paths, numbers, unicode digits and letters, case pairs that fold
# together (K, the Kelvin sign, k), spaces, tabs, brackets, an empty root name.
ODD_NAMES = ["", "a", "ab", "aaaa", "abab", "model", "model.norm", "lm_head", "q_proj", "gate", "router", "_", "0", "12",
             "Q_PROJ", "K", "k", "\u212a", "ß", "SS", "ǅ", "é.ü", "x y", "a b", "a\tb", "a-b", "[x]", "a]b", "a{2}",
             "layers.٣", "layers.¹", "a.b.c", "emb", "model.layers.0.self_attn.q_proj", "model.layers.12.mlp.gate",
             "model.layers.3.mlp.experts.7.down_proj", "vision_tower.blocks.1.attn.qkv"]
# A model's worth of names, so that full-table scans (a text few names hold) run too.
MOE_NAMES = [""] + [f"model.layers.{layer}.{part}" for layer in range(12) for part in
                    ["self_attn", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp",
                     "mlp.gate", *[f"mlp.experts.{e}.{p}" for e in range(16) for p in ("gate_proj", "up_proj", "down_proj")]]]
NAME_SETS = {"odd": ODD_NAMES, "moe": MOE_NAMES, "both": ODD_NAMES + MOE_NAMES}

REGEXES = [
    # literal, anchored, alternations, classes: exact string tests
    "q_proj", "proj$", "^model", r"^model\.norm$", r"(gate|router)$", r"self_attn\.(q|v)_proj$", r"self_attn\.[qkv]_proj",
    r"layers\.1[0-9]\.self_attn", r"^(?:lm_head|model\.norm)$", r"a$|^b", "", "^", "$", r"(?:)", r"colou?r", r"a{2}", r"(ab){1,2}$",
    r"experts\.(1|11)\.up_proj$", r"^$",
    # filters then one scan
    ".", r"experts\.\d+\.down_proj$", r"\d{2}", r"\d+\.mlp", r"^\w+$", r"^model\.layers\.\d+\.mlp\.gate$", r".*_proj$", r"[^.]+$",
    r"\.\d\.", r"[^a-z]", r"\s", r"\S+\s\S+", r"\W", r"\D$", r"[\s.]", r"[^\S]", r"[^\d.]+$", r"[^]a]", r"[]a]", r"[a-]", r"[\-a]",
    # lookarounds, anchors inside, word boundaries, backreferences, atomic and possessive groups
    r"(?<=\.)gate$", r"(?<!\.)gate", r"proj(?=$)", r"^(?!model)", r"(?<![a-z])\d", r"\bgate\b", r"\Bate", r"(a)\1", r"(?P<x>b)(?P=x)",
    r"(?>a+)b", r"a++b", r"a*+$", r"x*", r"^.{0,3}$", r"(?:a|ab)(?:c|bcd)", r"a(?#comment)b",
    # case-insensitive, ASCII and other flags
    r"(?i)q_PROJ$", r"(?i)k", r"(?i)ss", r"(?i)[k]", r"(?a)\w+$", r"(?s).", r"(?m)^gate$", r"(?i)(?s)^K.$",
    # unicode
    "é", r"\d", r"^layers\.\d$", "ǅ", "[à-ÿ]", r"ß|SS",
    # syntax the analysis leaves to the engine (fuzzy, properties, POSIX, scoped flags, V1 sets, …)
    r"(?:gate){e<=1}", r"\p{L}+\.", r"[[:digit:]]", r"(?i:K)", r"(?V1)[[a-z]--[aeiou]]", r"\Agate\Z", r"\x41", r"\N{LATIN SMALL LETTER A}",
    r"(?x) g a t e", r"a{,2}b", r"(a)(?(1)b|c)", r"\G\w", r"(?r)gate",
]


def per_name(pattern: str, names: list[str], positions: list[int]) -> list[int]:
    search = compile_regex(pattern).search
    return [i for i in positions if search(names[i]) is not None]


@pytest.mark.parametrize("names", list(NAME_SETS))
@pytest.mark.parametrize("pattern", REGEXES)
def test_bulk_regex_equals_one_search_per_name(pattern, names):
    names = NAME_SETS[names]
    table = NameTable(names)
    everything = list(range(len(names)))
    some = everything[1::3]
    for positions in (everything, some, []):
        assert search_names(pattern, names, positions, table) == per_name(pattern, names, positions), positions[:5]
    assert search_names(pattern, names, everything) == per_name(pattern, names, everything)  # no table given


GLOBS = ["**.q_proj", "**.self_attn.{q,v}_proj", "model.layers.*.self_attn", "model.layers.{0..3}.self_attn.q_proj", "*",
         "**", "**.**", "model.**", "**.experts.*.down_proj", "**.experts.**", "model.layers.*.mlp.experts.*.*", "*_proj",
         "**.?_proj", "**.[qk]_proj", "**.[!q]_proj", "layers.*", "a.b.c", "**.{gate,router}", "model.layers.1?.mlp",
         "**.experts.{0..9}.up_proj", "[[]x", "*.[!}]*", "é.*", "**.٣", "x y", "a[ -]b"]


@pytest.mark.parametrize("names", list(NAME_SETS))
@pytest.mark.parametrize("glob", GLOBS)
def test_bulk_glob_equals_one_fullmatch_per_name(glob, names):
    names = NAME_SETS[names]
    full = compile_glob(glob).fullmatch
    table = NameTable(names)
    for positions in (list(range(len(names))), list(range(0, len(names), 2))):
        assert glob_names(glob, names, positions, table) == [i for i in positions if full(names[i])]


@pytest.mark.parametrize("pattern, branches, filters", [
    (r"(gate|router)$", ((False, True, frozenset({"gate", "router"})),), None),
    (r"^model\.norm$", ((True, True, frozenset({"model.norm"})),), None),
    (r"a$|^b", ((False, True, frozenset({"a"})), (True, False, frozenset({"b"}))), None),
    (r"layers\.[0-2]\.mlp", ((False, False, frozenset({"layers.0.mlp", "layers.1.mlp", "layers.2.mlp"})),), None),
    (r"experts\.\d+\.down_proj$", None, (("suffix", (".down_proj",)), ("contains", ("experts.",)))),
    (r"^model\.layers\.\d+\.mlp$", None, (("suffix", (".mlp",)), ("prefix", ("model.layers.",)))),
    (r"\bgate\b", None, (("contains", ("gate",)),)),
    (r"(?i)gate", None, ()),  # case-folded: no string test, the scan only
    (r".", None, ()),
])
def test_shape_reads_literal_texts(pattern, branches, filters):
    found = shape(pattern)
    assert found.branches == branches
    if filters is not None:
        assert found.filters == filters


@pytest.mark.parametrize("pattern", [r"(?:gate){e<=1}", r"\p{L}", r"[[:alpha:]]", r"(?i:K)", r"(?V1)a", r"\Agate", r"\x41", r"(?x)a",
                                     r"(a)(?(1)b|c)", r"\G", "a\nb", r"\12", r"(*FAIL)", r"[a&&b]", r"(?|a)"])
def test_shape_leaves_unread_syntax_to_the_engine(pattern):
    assert shape(pattern) is None


@pytest.mark.parametrize("pattern, rewritten", [
    (".", r"(?:[^\n])[^\n]*"),
    (r"[^.]+$", r"(?:[^.\n]+$)[^\n]*"),
    (r"\s\D\W", r"(?:[^\S\n][^\d\n][^\w\n])[^\n]*"),
    (r"[\s.]", r"(?:(?:(?!\n)[\s.]))[^\n]*"),
    (r"[^a-]", r"(?:(?:(?!\n)[^a-]))[^\n]*"),
    (r"(?i)(?s)a.", r"(?:a[^\n])[^\n]*"),
])
def test_line_regex_never_matches_the_separator(pattern, rewritten):
    assert shape(pattern).line_regex == rewritten


def test_names_holding_a_newline_are_searched_one_by_one():
    names = ["a", "b\nc", "c", "bc"]
    table = NameTable(names)
    assert not table.newline_free
    for pattern in (r"b.c", r"b\sc", r"^c", r"b$", r"c$"):
        assert search_names(pattern, names, [0, 1, 2, 3], table) == per_name(pattern, names, [0, 1, 2, 3]), pattern
    assert glob_names("*", names, [0, 1, 2, 3], table) == [0, 1, 2, 3]


NAMED = ["", "a", "b", "ab", "a.b", "b.c", ".b", "b.", "q_proj", "self_attn", "self_attn.q_proj", "mlp.gate", "gate", "0", "12",
         "experts.7", "K", "x y", "a\nb", "model.layers.0.self_attn", "model.norm", "lm_head"]


@pytest.mark.parametrize("names", list(NAME_SETS) + ["with a newline"])
def test_named_is_peft_s_suffix_rule(names):
    """`named` (what `under:NAME` and `layers(within=)` resolve) equals "the full name, or ends with
    '.' + NAME" tested on every name — by the joined-text search, or name by name with a newline."""
    listed = NAME_SETS[names] if names in NAME_SETS else ["", "a", "b\nc", "x.b\nc", "c.b", "b"]
    table = NameTable(listed)
    for name in NAMED + ["b\nc"]:
        expected = [i for i, n in enumerate(listed) if n == name or n.endswith("." + name)]
        assert named(table, name) == expected, name


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["a", "b", "ab", "0", "x"]), min_size=1, max_size=4).map(".".join), max_size=30),
       st.lists(st.sampled_from(["a", "b", "ab", "0", "x"]), min_size=1, max_size=3).map(".".join))
def test_named_equals_the_rule_on_random_names(names, name):
    listed = [""] + names
    assert named(NameTable(listed), name) == [i for i, n in enumerate(listed) if n == name or n.endswith("." + name)]


# One search that never ends, and searches that each end but together outlast the budget
# (the engine's own timeout restarts at every match; the scan checks the clock between matches).
@pytest.mark.parametrize("pattern", [r"^(?:.|..|...)*(?<!j)$", r"(?:(a|aa)+c|a+b)"])
def test_the_time_budget_holds_in_the_joined_scan(pattern):
    # 400 names: the whole scan is ~10× the budget on this machine, so no fast machine finishes it
    names = ["a" * 24 + f"b{i}j" for i in range(400)]
    assert shape(pattern) is not None  # the bulk path runs it
    start = time.monotonic()
    with pytest.raises(RegexTimeoutError, match=r"took more than 1s over 400 module names"):
        search_names(pattern, names, list(range(len(names))), NameTable(names))
    assert time.monotonic() - start < 60  # the budget stops it, not the end of the work (timings never fail tests)


def test_engine_failures_while_scanning_are_pattern_errors():
    with pytest.raises(PatternError, match=r"^invalid regex"):
        search_names("(", ["a"], [0], NameTable(["a"]))


REGEX_BITS = ["(", ")", "[", "]", "^", "$", ".", "*", "+", "?", "|", "a", "b", "_proj", "proj", r"\.", r"\d", r"\w", r"\s", r"\W",
              r"\D", r"\S", r"\b", r"\B", "[^.]", "[qkv]", "[a-z]", "[^a]", "(?:", "(?=", "(?!", "(?<=", "(?<!", "(?>", "{2}",
              "{1,3}", "*?", "+?", "*+", "(?i)", "(?s)", r"\1", "(?P<n>", "(?P=n)", "gate", "layers", "experts", "é", "K",
              "0", "[0-9]", r"[\s]", r"[^\S]", "[^]]", "-", "{", "}", " ", "#", "mlp", "(?#c)"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(REGEX_BITS), min_size=1, max_size=7).map("".join), st.sampled_from(list(NAME_SETS)))
def test_random_regexes_bulk_equals_per_name(pattern, names):
    try:
        compile_regex(pattern)
    except PatternError:
        return
    names = NAME_SETS[names]
    everything = list(range(len(names)))
    try:
        expected = per_name(pattern, names, everything)
    except (TimeoutError, RuntimeError, regex.error):
        return
    assert search_names(pattern, names, everything, NameTable(names)) == expected


DIGIT_NAMES = ["", "a", "x1", "x12", "x٣", "layers.7.mlp", "layers.70.mlp", "layers.007.mlp", "e9.up_proj", "0", "00", "12a34",
               "vision.blocks.3.fc1", "vision.blocks.31.fc2", "q4_proj", "h100", "x2", "layers.8.mlp", "layers.71.mlp",
               "vision.blocks.4.fc1", "h200", "x99"]


@pytest.mark.parametrize("pattern, blind", [
    (r"\d", True), (r"^\w+\.\d+\.mlp$", True), (r"x\d{2}$", True), (r"[^0-9]$", True), (r"\D+", True), (".", True),
    (r"x1", False), (r"[0-5]", False), (r"(\d)\1", False), (r"[\D5]", False), (r"fc[12]", False), (r"\d+[a-z]", True),
])
def test_digit_blind_regexes_match_a_name_iff_its_form(pattern, blind):
    from targetsel.query.patterns import digit_blind

    assert digit_blind(pattern) is blind
    forms, form_of = NameTable(DIGIT_NAMES).forms()
    assert len(forms) < len(DIGIT_NAMES) and all(forms[f] == n.translate(str.maketrans("123456789", "0" * 9))
                                                   for n, f in zip(DIGIT_NAMES, form_of))
    if blind:
        search = compile_regex(pattern).search
        assert [bool(search(forms[f])) for f in form_of] == [bool(search(n)) for n in DIGIT_NAMES]


@pytest.mark.parametrize("query", ["name:/\\d+\\.mlp$/", "name:/./", "glob:**.mlp", "glob:layers.*.mlp", "name:/x\\d$/",
                                   "glob:*", "name:/^\\D*$/", "name:/layers\\.7\\./", "glob:layers.{7,70}.mlp"])
def test_selecting_through_forms_equals_matching_each_name(query):
    """The model layer matches digit-blind patterns on the names' forms (model/matches.py)."""
    from torch import nn

    from targetsel import select
    from targetsel.query.parser import parse

    model = nn.Module()
    for i in range(40):
        block = nn.Module()
        block.mlp = nn.Linear(1, 1, device="meta")
        model.add_module(f"x{i}", block)
    atom = parse(query).root
    test = (compile_regex(atom.pattern).search if atom.kind == "name" else compile_glob(atom.pattern).fullmatch)
    assert select(model, query).names() == [n for n, _ in model.named_modules() if n and test(n)]
