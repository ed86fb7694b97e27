"""The regex builder counts ASCII digits only: `\\d` in PEFT's `re.fullmatch` takes any Unicode digit.

A module name may hold any character but '.', so `layers.٣` (ARABIC-INDIC DIGIT THREE) sits next to
`layers.3` on a real model. Python's `re` — which PEFT uses, with default flags — lets `\\d` match
'٣', '३' and '３' (Unicode Nd), but not '¹' (No), although `'¹'.isdigit()` is True. Each case below
pins one of those differences.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from hypothesis import given, note
from hypothesis import strategies as st
from peft import LoraConfig, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

import targetsel as ts
from targetsel.views.targets import _check_exact
from targetsel.text.grouping import group_names
from targetsel.query.globs import glob_to_regex
from targetsel.text.names_regex import int_range_regex, int_set_regex, names_regex

ARABIC_3, DEVANAGARI_3, FULLWIDTH_3, SUPERSCRIPT_1 = "\u0663", "\u0969", "\uff13", "\u00b9"  # ٣ ३ ３ ¹
UNICODE_DIGITS = ARABIC_3 + DEVANAGARI_3 + FULLWIDTH_3 + SUPERSCRIPT_1 + "\u0660\u0967\u00b2"  # + ٠ १ ²


# ---------------------------------------------------------------------------- integer ranges

RANGES = [
    (0, 9, "[0-9]"),
    (0, 63, "(?:[0-9]|[1-5][0-9]|6[0-3])"),
    (10, 99, "[1-9][0-9]"),
    (100, 999, "[1-9][0-9]{2}"),
    (0, 255, "(?:[0-9]|[1-9][0-9]|1[0-9]{2}|2[0-4][0-9]|25[0-5])"),
    (7, 7, "7"),
    (3, 4, "[34]"),
]


@pytest.mark.parametrize("lo, hi, expected", RANGES, ids=[f"{lo}..{hi}" for lo, hi, _ in RANGES])
def test_int_range_regex_is_ascii_and_exact(lo, hi, expected):
    pattern = int_range_regex(lo, hi)
    assert pattern == expected
    assert "\\d" not in pattern
    assert [i for i in range(1200) if re.fullmatch(pattern, str(i))] == list(range(lo, hi + 1))
    # every single Unicode digit that `\d` would take is refused
    assert not any(re.fullmatch(pattern, c) for c in UNICODE_DIGITS)


@pytest.mark.parametrize("values, expected", [
    ({0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, "[0-9]"),
    ({0, 1, 2, 5}, "(?:[0-2]|5)"),
    ({11, 12, 13, 40}, "(?:1[1-3]|40)"),
])
def test_int_set_regex(values, expected):
    assert int_set_regex(values) == expected


@pytest.mark.parametrize("lo, hi", [(-1, 3), (5, 4)])
def test_int_range_regex_refuses_bad_ranges(lo, hi):
    with pytest.raises(ValueError, match=rf"^bad integer range {lo}\.\.{hi}$"):
        int_range_regex(lo, hi)


def test_names_regex_needs_a_name():
    with pytest.raises(ValueError, match=r"^names_regex needs at least one name$"):
        names_regex([])


# ---------------------------------------------------------------------------- whole names

# (id, names, selected): names_regex(selected) must fullmatch exactly `selected` among `names`.
NAME_SETS = [
    ("ascii-run-vs-arabic", [f"layers.{i}" for i in range(10)] + [f"layers.{ARABIC_3}"], [f"layers.{i}" for i in range(10)]),
    ("arabic-only", [f"layers.{i}" for i in range(10)] + [f"layers.{ARABIC_3}"], [f"layers.{ARABIC_3}"]),
    ("fullwidth-and-devanagari", ["h.3", f"h.{FULLWIDTH_3}", f"h.{DEVANAGARI_3}", "h.4"], ["h.3", "h.4"]),
    ("superscript", ["x.1", f"x.{SUPERSCRIPT_1}", "x.2"], ["x.1", "x.2"]),
    ("two-digit-run", [f"b.{i}.fc" for i in range(100)] + [f"b.1{ARABIC_3}.fc", f"b.{ARABIC_3}{ARABIC_3}.fc"],
     [f"b.{i}.fc" for i in range(100)]),
    ("three-digit-run", [f"e.{i}" for i in range(100, 1000)] + [f"e.1{FULLWIDTH_3}3"], [f"e.{i}" for i in range(100, 1000)]),
    ("mixed-kept", ["l.0", "l.1", f"l.{ARABIC_3}", f"l.{SUPERSCRIPT_1}"], ["l.0", "l.1", f"l.{SUPERSCRIPT_1}"]),
]


@pytest.mark.parametrize("names, selected", [c[1:] for c in NAME_SETS], ids=[c[0] for c in NAME_SETS])
def test_names_regex_does_not_take_unicode_digits(names, selected):
    pattern = names_regex(selected)
    assert "\\d" not in pattern
    assert [n for n in names if re.fullmatch(pattern, n)] == selected


# ---------------------------------------------------------------------------- the regression, end to end


def _non_ascii_digit_model() -> nn.Module:
    with torch.device("meta"):
        m = nn.Module()
        m.layers = nn.ModuleDict()
        for key in [*(str(i) for i in range(12)), ARABIC_3, DEVANAGARI_3, FULLWIDTH_3, SUPERSCRIPT_1, f"1{ARABIC_3}"]:
            block = nn.Module()
            block.fc = nn.Linear(2, 2)
            block.out = nn.Linear(2, 2)
            m.layers[key] = block
        m.head = nn.Linear(2, 2)
    return m


def _is_ascii_block(name: str) -> bool:
    parts = name.split(".")
    return len(parts) > 1 and parts[1].isascii() and parts[1].isdigit()


# (id, predicate on (name, module)) over _non_ascii_digit_model; `.leaf()` keeps the targets wrappable.
NON_ASCII_SELECTIONS = [
    ("ascii-blocks", lambda n, m: _is_ascii_block(n)),
    ("ascii-blocks-fc", lambda n, m: _is_ascii_block(n) and n.endswith(".fc")),
    ("all-but-arabic-3", lambda n, m: f".{ARABIC_3}." not in n),
    ("unicode-blocks", lambda n, m: n.startswith("layers.") and not _is_ascii_block(n)),
    ("block-3-only", lambda n, m: n.startswith("layers.3.")),
    ("superscript-and-ascii-3", lambda n, m: n.startswith(("layers.3.", f"layers.{SUPERSCRIPT_1}."))),
]


def _peft_wraps(target_modules) -> list[str]:
    model = _non_ascii_digit_model()  # fresh: get_peft_model edits the model in place
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=target_modules), low_cpu_mem_usage=True)
    base = peft_model.base_model.model
    return [n for n, module in base.named_modules() if isinstance(module, BaseTunerLayer)]


@pytest.mark.parametrize("form", ["list", "suffixes", "regex", "auto"])
@pytest.mark.parametrize("predicate", [c[1] for c in NON_ASCII_SELECTIONS], ids=[c[0] for c in NON_ASCII_SELECTIONS])
def test_regression_non_ascii_digit_names(predicate, form):
    """`layers.٣` next to `layers.3`: the regex form used `\\d`, which took '٣', and `auto` raised an internal error."""
    model = _non_ascii_digit_model()
    selection = ts.select(model).leaf().where(predicate)
    names = selection.names()
    assert names  # every case selects something
    value = selection.to_peft(form)
    if isinstance(value, str):
        assert "\\d" not in value
    assert _peft_wraps(value) == names


@pytest.mark.parametrize("kind, advice", [
    ("regex", "use form='suffixes' or form='list' meanwhile"),
    ("suffixes", "use form='regex' meanwhile"),
    ("list", "use form='regex' meanwhile"),
])
def test_an_inexact_form_is_an_internal_error_that_points_at_another_form(kind, advice):
    names = ["", "layers.3", f"layers.{ARABIC_3}"]
    with pytest.raises(AssertionError, match=rf"^internal error: the {kind} form is not exact for 1 module\(s\), "
                       rf"e\.g\. \['layers\.{ARABIC_3}'\]\. Please report this with the model; {re.escape(advice)}\.$"):
        _check_exact(kind, [False, True, True], [False, True, False], names)


def test_display_groups_unicode_digit_blocks_as_words():
    model = _non_ascii_digit_model()
    patterns = [g.pattern for g in group_names(ts.select(model).leaf().names())]
    assert patterns == [
        "layers.{0..11}.{fc,out}",
        f"layers.{{{ARABIC_3},{DEVANAGARI_3},{FULLWIDTH_3},{SUPERSCRIPT_1},1{ARABIC_3}}}.{{fc,out}}",
        "head",
    ]


# ---------------------------------------------------------------------------- properties

# Model-like name sets: blocks keyed by ASCII numbers (a run 0..k, so ranges get built, plus strays,
# some non-canonical like '07') next to keys of Unicode digits, each block with a few leaves.
BLOCK_KEYS = st.one_of(
    st.sampled_from(UNICODE_DIGITS),
    st.integers(0, 130).map(str),
    st.text(alphabet="0123456789" + UNICODE_DIGITS, min_size=1, max_size=3),
    st.sampled_from(["attn", f"fc{ARABIC_3}", "fc1"]),
)
LEAVES = st.sets(st.sampled_from(["fc", "out", f"fc{ARABIC_3}", "fc1", "0", ARABIC_3]), min_size=1, max_size=3)


@st.composite
def name_sets(draw) -> list[str]:
    keys = {str(i) for i in range(draw(st.integers(0, 24)))} | draw(st.sets(BLOCK_KEYS, min_size=1, max_size=12))
    leaves = draw(LEAVES)
    names = {f"layers.{k}.{leaf}" for k in keys for leaf in leaves} | {f"layers.{k}" for k in keys}
    return sorted(names)


def _has_ascii_number(name: str) -> bool:
    return any(seg.isascii() and seg.isdigit() for seg in name.split("."))


@given(name_sets(), st.data())
def test_names_regex_fullmatches_exactly_the_selected_names(names, data):
    rule = data.draw(st.sampled_from(["ascii", "unicode", "subset"]))
    if rule == "ascii":  # integer runs go in, their Unicode-digit neighbours stay out
        selected = [n for n in names if _has_ascii_number(n)]
    elif rule == "unicode":
        selected = [n for n in names if not _has_ascii_number(n)]
    else:
        selected = data.draw(st.lists(st.sampled_from(names), min_size=1, unique=True))
    if not selected:
        return
    pattern = names_regex(selected)
    note(f"rule={rule} pattern={pattern!r}")
    assert "\\d" not in pattern
    assert {n for n in names if re.fullmatch(pattern, n)} == set(selected)


@given(name_sets())
def test_display_groups_paste_back_as_exact_globs(names):
    for group in group_names(names):
        glob = re.compile(glob_to_regex(group.pattern))
        assert [n for n in names if glob.fullmatch(n)] == sorted(group.names), group.pattern
