"""The reproductions in docs/peft-behaviours.md, run as they are written.

Each ```python block of that page is a self-contained snippet ending with `assert` statements
that pin a PEFT behaviour targetsel guards against. When an upgrade of peft (or transformers)
changes one of them, its test fails here, named after its heading: the page and targetsel's guard
for that behaviour both need a look.
"""

from __future__ import annotations

import ast
import re
import warnings
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "peft-behaviours.md"

_FENCE = re.compile(r"^```python\n(.*?)^```\s*$", re.S | re.M)
_HEADING = re.compile(r"^## (.+)$", re.M)


def _slug(heading: str, limit: int = 48) -> str:
    words = re.sub(r"[^a-z0-9]+", " ", heading.lower()).split()
    out = ""
    for word in words:
        if out and len(out) + 1 + len(word) > limit:
            break
        out = f"{out}-{word}" if out else word
    return out


def snippets() -> list[tuple[str, str]]:
    """(id, code) for every ```python block, the id taken from the nearest heading above it."""
    text = DOC.read_text(encoding="utf-8")
    headings = [(m.start(), m.group(1).strip()) for m in _HEADING.finditer(text)]
    out: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for match in _FENCE.finditer(text):
        above = [h for pos, h in headings if pos < match.start()]
        base = _slug(above[-1]) if above else "preamble"
        seen[base] = seen.get(base, 0) + 1
        # pad with blank lines so that a failing assert reports its line in the .md file
        padding = "\n" * text.count("\n", 0, match.start(1))
        out.append((base if seen[base] == 1 else f"{base}-{seen[base]}", padding + match.group(1)))
    return out


SNIPPETS = snippets()


def test_page_has_a_snippet_per_behaviour():
    text = DOC.read_text(encoding="utf-8")
    numbered = [h for h in _HEADING.findall(text) if re.match(r"\d+\. ", h)]
    assert len(numbered) >= 9
    ids = {sid for sid, _ in SNIPPETS}
    for heading in numbered:
        assert _slug(heading) in ids, f"no ```python reproduction under '## {heading}'"


@pytest.mark.parametrize("code", [c for _, c in SNIPPETS], ids=[i for i, _ in SNIPPETS])
def test_snippet_ends_with_asserts(code):
    tree = ast.parse(code)
    assert tree.body and isinstance(tree.body[-1], ast.Assert), "a reproduction must end with the asserts that pin it"


@pytest.mark.parametrize("code", [c for _, c in SNIPPETS], ids=[i for i, _ in SNIPPETS])
def test_peft_behaviour_still_holds(code):
    namespace = {"__name__": "peft_behaviour_snippet"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the snippets record the warnings they pin themselves
        exec(compile(code, str(DOC), "exec"), namespace)
