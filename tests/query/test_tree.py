"""`targetsel.query.tree` and `printing`: nodes told apart by their `kind`, measured and printed without the classes."""

from __future__ import annotations

import pytest

from targetsel.query import nodes as N
from targetsel.query.parser import parse
from targetsel.query.printing import to_query
from targetsel.query.tree import children, measure, walk

LEAF = N.Flag(kind="leaf")
UNDER = N.Under(prefix="vision_tower")
NOT_LEAF = N.Not(item=LEAF)

# (node, its children, (depth, size))
SHAPES = [
    ("flag", LEAF, (), (0, 1)),
    ("under-name", UNDER, (), (0, 1)),
    ("under-selector", N.Under(of=LEAF), (LEAF,), (1, 2)),
    ("and-with-under-name", N.And(items=(LEAF, UNDER)), (LEAF, UNDER), (1, 3)),
    ("not", N.Not(item=UNDER), (UNDER,), (1, 2)),
    ("diff", N.Diff(left=LEAF, right=UNDER), (LEAF, UNDER), (1, 3)),
    ("shared-part-counts-twice", N.Or(items=(NOT_LEAF, NOT_LEAF)), None, (2, 5)),
]


@pytest.mark.parametrize("node, kids, shape", [s[1:] for s in SHAPES], ids=[s[0] for s in SHAPES])
def test_children_and_measure(node, kids, shape):
    if kids is not None:
        assert children(node) == kids
    assert measure(node) == shape == node.shape
    assert list(walk(node))[0] is node and len(list(walk(node))) == shape[1]


def test_measure_without_cached_shapes_agrees():
    """The slow path (parts not measured when built, e.g. plain objects) gives the same shape."""
    class Plain:
        def __init__(self, kind, **parts):
            self.kind = kind
            self.__dict__.update(parts)

    plain = Plain("and", items=(Plain("leaf"), Plain("not", item=Plain("under", prefix="x", of=None))))
    assert measure(plain) == (2, 4) == N.and_(LEAF, N.not_(UNDER)).shape


@pytest.mark.parametrize("query", ["linear & !under:vision_tower", "(a.b | leaf) - frozen".replace("a.b", "glob:a.b"),
                                   'layers:0..3@"x y" | type:=Linear', r"name:/a\/b/ & component:head"])
def test_printing_a_selector_or_its_root_is_the_same(query):
    selector = parse(query)
    assert to_query(selector) == to_query(selector.root) == str(selector)
    assert parse(to_query(selector)) == selector


def test_printing_refuses_what_is_not_a_node():
    with pytest.raises(TypeError, match=r"^not a selector node: 3$"):
        to_query(3)
