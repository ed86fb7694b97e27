"""`targetsel.text.runs`: integer runs, name templates and row merging, shared by exact regexes
(`names_regex`) and display groups (`grouping`)."""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from targetsel.text.grouping import group_names, int_set_text
from targetsel.text.names_regex import int_set_alternatives, int_set_regex, names_regex
from targetsel.text.runs import cartesian_blocks, fill_template, int_runs, merge_rows, split_name

TEXT = Path(__file__).resolve().parents[2] / "targetsel" / "text"

INT_RUNS = [
    ([], []),
    ([3], [(3, 3)]),
    ([5, 0, 1, 2], [(0, 2), (5, 5)]),
    ([1, 1, 2, 2], [(1, 2)]),
    ([0, 2, 4], [(0, 0), (2, 2), (4, 4)]),
    (range(10, 40), [(10, 39)]),
]


@pytest.mark.parametrize("values, runs", INT_RUNS, ids=[str(r) for _, r in INT_RUNS])
def test_int_runs(values, runs):
    assert int_runs(values) == runs


# One run list, two renderings: the display's integer sets and the regex's.
@pytest.mark.parametrize("values, text, regex", [
    ([7], "7", "7"),
    ([0, 1], "{0,1}", "[01]"),
    (range(0, 32), "{0..31}", "(?:[0-9]|[12][0-9]|3[01])"),
    ([0, 1, 2, 3, 7], "{0..3,7}", "(?:[0-3]|7)"),
])
def test_runs_render_as_text_and_regex(values, text, regex):
    assert int_set_text(values) == text
    assert int_set_regex(values) == regex
    assert int_set_alternatives(values) == tuple(regex[3:-1].split("|")) if regex.startswith("(?:") else (regex,)


SPLITS = [
    ("model.layers.3.mlp", (("model", "layers", None, "mlp"), (3,))),
    ("a.0.b.12", (("a", None, "b", None), (0, 12))),
    ("layers.07", (("layers", "07"), ())),  # not canonical: a word
    ("layers.٣", (("layers", "٣"), ())),  # not ASCII: a word (PEFT's `\d` would take it)
    ("layers.-1", (("layers", "-1"), ())),
    ("", (("",), ())),
]


@pytest.mark.parametrize("name, split", SPLITS, ids=[s[0] or "empty" for s in SPLITS])
def test_split_name(name, split):
    assert split_name(name) == split


BLOCKS = [
    ({()}, [()]),
    ({(1,), (2,), (5,)}, [(frozenset({1, 2, 5}),)]),
    ({(i, j) for i in range(4) for j in range(3)}, [(frozenset(range(4)), frozenset(range(3)))]),  # a full grid
    ({(0, 0), (0, 1), (1, 0)}, [(frozenset({0}), frozenset({0, 1})), (frozenset({1}), frozenset({0}))]),
]


@pytest.mark.parametrize("tuples, blocks", BLOCKS, ids=range(len(BLOCKS)))
def test_cartesian_blocks(tuples, blocks):
    assert cartesian_blocks(frozenset(tuples)) == blocks


@given(st.sets(st.tuples(st.integers(0, 6), st.integers(0, 4), st.integers(0, 3)), min_size=1, max_size=40))
def test_cartesian_blocks_cover_exactly_and_are_disjoint(tuples):
    covered = [t for block in cartesian_blocks(frozenset(tuples)) for t in itertools.product(*block)]
    assert len(covered) == len(set(covered))  # disjoint
    assert set(covered) == tuples  # exact


def test_fill_template_puts_each_slot_in_block_order():
    template, _ = split_name("a.0.b.1")
    block = (frozenset({0, 1}), frozenset({5}))
    cells = fill_template(template, block, lambda word: (word,), lambda numbers: sorted(numbers).__repr__())
    assert cells == (("a",), "[0, 1]", ("b",), "[5]")


# (rows as (cells, payload), merged rows)
MERGES = [
    ("one-position", [((("a",), ("x",)), [1]), ((("b",), ("x",)), [2])], [((("a", "b"), ("x",)), [1, 2])]),
    ("two-differences-stay", [((("a",), ("x",)), [1]), ((("b",), ("y",)), [2])],
     [((("a",), ("x",)), [1]), ((("b",), ("y",)), [2])]),
    ("fixed-cells-never-merge", [((("a",), "{0..3}"), [1]), ((("a",), "{5}"), [2])],
     [((("a",), "{0..3}"), [1]), ((("a",), "{5}"), [2])]),
    ("fixed-cells-must-be-equal", [((("a",), "{0..3}"), [1]), ((("b",), "{0..3}"), [2])], [((("a", "b"), "{0..3}"), [1, 2])]),
    ("lengths-never-merge", [((("a",),), [1]), ((("a",), ("x",)), [2])], [((("a",),), [1]), ((("a",), ("x",)), [2])]),
    ("alternatives-once-in-row-order", [((("b", "a"), ("x",)), [1]), ((("a", "c"), ("x",)), [2])],
     [((("b", "a", "c"), ("x",)), [1, 2])]),
    ("repeats-until-none-merge",
     [((("q",), ("0",)), ["q0"]), ((("k",), ("0",)), ["k0"]), ((("q",), ("1",)), ["q1"]), ((("k",), ("1",)), ["k1"])],
     [((("q", "k"), ("0", "1")), ["q0", "k0", "q1", "k1"])]),
    # The first position where rows can merge wins: a–b merge at 0, so a–c (position 1) no longer can.
    ("first-position-first", [((("a",), ("p",)), [1]), ((("b",), ("p",)), [2]), ((("a",), ("r",)), [3])],
     [((("a",), ("r",)), [3]), ((("a", "b"), ("p",)), [1, 2])]),
    ("empty", [], []),
]


@pytest.mark.parametrize("rows, merged", [m[1:] for m in MERGES], ids=[m[0] for m in MERGES])
def test_merge_rows(rows, merged):
    assert merge_rows(rows) == merged


def test_both_renderers_share_one_merge():
    names = ["m.layers.0.q_proj", "m.layers.1.q_proj", "m.layers.0.k_proj", "m.layers.1.k_proj", "m.head"]
    assert names_regex(names) == r"(?:m\.head|m\.layers\.[01]\.(?:k_proj|q_proj))"
    assert [g.pattern for g in group_names(names)] == ["m.layers.{0,1}.{q,k}_proj", "m.head"]
    assert {n for n in names if re.fullmatch(names_regex(names), n)} == set(names)


@pytest.mark.parametrize("path", sorted(TEXT.glob("*.py")), ids=lambda p: p.name)
def test_text_modules_import_no_private_names_from_each_other(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("targetsel."):
            assert not [a.name for a in node.names if a.name.startswith("_")], (path.name, node.module)
