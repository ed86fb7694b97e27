"""`targetsel.text.suggest`: the one way near spellings are found and proposed ("did you mean …?")."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from targetsel.text.suggest import closest, code, suggest

PACKAGE = Path(__file__).resolve().parents[2] / "targetsel"

# (word, candidates, n, nearest first)
CLOSEST = [
    ("Lineer", ["Linear", "LayerNorm", "Embedding"], 3, ["Linear"]),
    ("trainabel", ["trainable", "frozen", "leaf"], 3, ["trainable"]),
    ("xyz", ["vision", "audio"], 3, []),
    # difflib's ratio first, then the later spelling first among equals
    ("q_prj", ["q_proj", "k_proj", "v_proj", "o_proj"], 3, ["q_proj", "v_proj", "o_proj"]),
    ("q_prj", ["q_proj", "k_proj", "v_proj", "o_proj"], 1, ["q_proj"]),
    ("vison", ["vision", "vision", "vision"], 3, ["vision"]),  # each candidate once
    ("anything", [], 3, []),
]


@pytest.mark.parametrize("word, candidates, n, expected", CLOSEST, ids=[f"{c[0]}-{c[2]}" for c in CLOSEST])
def test_closest(word, candidates, n, expected):
    assert closest(word, candidates, n) == expected


def test_closest_takes_any_iterable_once():
    assert closest("leef", (w for w in ["leaf", "linear"])) == ["leaf"]


# (word, candidates, keyword arguments, sentence)
SUGGEST = [
    ("visoin", ["vision", "audio"], {}, "did you mean `vision`?"),
    ("xyz", ["vision", "audio"], {}, ""),
    ("fc", ["fc1", "fc2"], {}, "did you mean `fc2` or `fc1`?"),
    ("q_prj", ["q_proj", "k_proj", "v_proj", "o_proj"], {}, "did you mean `q_proj`, `v_proj` or `o_proj`?"),
    ("q_prj", ["q_proj", "k_proj", "v_proj", "o_proj"], {"n": 2}, "did you mean `q_proj` or `v_proj`?"),
    ("vison_tower", ["vision_tower", "language_model"], {"show": repr}, "did you mean 'vision_tower'?"),
    ("Lineer", ["Linear"], {"what": "(classes in this model)"}, "did you mean `Linear` (classes in this model)?"),
    ("Lineer", ["Embedding"], {"what": "(classes in this model)"}, ""),
]


@pytest.mark.parametrize("word, candidates, kwargs, expected", SUGGEST, ids=[f"{c[0]}-{len(c[3])}" for c in SUGGEST])
def test_suggest(word, candidates, kwargs, expected):
    assert suggest(word, candidates, **kwargs) == expected


def test_code_quotes_with_backticks():
    assert code("type:") == "`type:`"


def _string_constants(tree: ast.AST):
    """String literals other than docstrings."""
    docstrings = {
        id(node.body[0].value) for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.value


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_did_you_mean_is_written_once(path):
    """No module but text/suggest.py builds "did you mean" or calls difflib itself."""
    if path == PACKAGE / "text" / "suggest.py":
        return
    source = path.read_text()
    tree = ast.parse(source)
    assert not [s for s in _string_constants(tree) if "did you mean" in s.lower()], path
    assert "get_close_matches" not in source and "difflib" not in source, path
