"""Query fuzzing (issue 8.2): grammar-aware generation, mutation and raw text.

For any input, `parse()` either returns a Selector that round-trips through `str` and JSON, or
raises `QuerySyntaxError` whose position lies inside the query; nothing else ever escapes.
Profiles: "ci" a few hundred inputs; TARGETSEL_PROFILE=slow ≥ 100,000 (10,000 examples × 10
inputs each for generation and mutation, plus raw text).
"""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from targetsel import QuerySyntaxError, TargetselError
from targetsel.query import nodes as N
from targetsel.query.parser import parse_uncached

ATOMS = [
    "trainable", "frozen", "mixed", "linear", "leaf", "outermost", "all", "TRAINABLE", "Linear",
    "type:Linear", "type:=PLoRA", "type:torch.nn.modules.linear.Linear", r"name:/q_proj$/", r"name:/a\/b/",
    r"name:/(up|down)_proj/", "glob:**.{q,k,v}_proj", "glob:layers.{0..3}.*", 'glob:"odd name.*"', "under:vision_tower",
    "under:(type:Linear & leaf)", 'under:"a-b"', "layers:0..3", "layers:-4..", "layers:5", "layers:0,2..3@layers",
    "component:vision", "component:head",
]
OPERATORS = [" & ", "&", " and ", " | ", "|", " OR ", " - ", "-"]
NOISE = list("&|!-()\"/:@=.,{}[]*?\\ ") + ["and", "not", "or", "layers:", "name:/", "type:", "under:("]


@st.composite
def queries(draw, depth=3):
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        atom = draw(st.sampled_from(ATOMS))
        return draw(st.sampled_from(["", "!", "not ", "! "])) + atom
    left = draw(queries(depth=depth - 1))
    right = draw(queries(depth=depth - 1))
    text = left + draw(st.sampled_from(OPERATORS)) + right
    return f"({text})" if draw(st.booleans()) else text


@st.composite
def mutated(draw):
    text = draw(queries())
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "truncate"]))
        piece = draw(st.sampled_from(NOISE) | st.text(string.printable, max_size=2))
        if op == "insert":
            text = text[:i] + piece + text[i:]
        elif op == "delete":
            text = text[:i] + text[i + 1 :]
        elif op == "replace":
            text = text[:i] + piece + text[i + 1 :]
        else:
            text = text[:i]
    return text


def check_one(query: str) -> bool:
    """The fuzzing oracle; True when the query parsed."""
    try:
        selector = parse_uncached(query)
    except QuerySyntaxError as exc:
        assert exc.query == query
        assert 0 <= exc.position <= max(len(query) - 1, 0), (query, exc.position)
        assert str(exc).splitlines()[1] == "    " + query.splitlines()[0] if query and "\n" not in query else True
        return False
    except TargetselError as exc:  # pragma: no cover - the oracle's failure message
        raise AssertionError(f"{type(exc).__name__} escaped parse({query!r}); only QuerySyntaxError may") from exc
    text = str(selector)
    assert parse_uncached(text) == selector, (query, text)
    assert str(parse_uncached(text)) == text
    assert N.Selector.model_validate_json(selector.model_dump_json()) == selector
    return True


@given(st.lists(queries(), min_size=10, max_size=10))
def test_generated_queries_parse_and_round_trip(batch):
    assert all(check_one(q) for q in batch)  # generated from the grammar: every one is valid


@given(st.lists(mutated(), min_size=10, max_size=10))
def test_mutated_queries_parse_or_fail_cleanly(batch):
    for q in batch:
        check_one(q)


TOKENS = NOISE + list(string.ascii_letters[:8]) + list("0123456789") + ATOMS[:6]


@given(st.lists(st.lists(st.sampled_from(TOKENS), max_size=14).map("".join), min_size=10, max_size=10))
def test_token_soup(batch):
    for q in batch:
        check_one(q)


@given(st.text(max_size=60))
def test_arbitrary_text(query):
    check_one(query)
