"""`targetsel.errors` helpers: `with_context` (a copy of an error with more said) and `hinted`."""

from __future__ import annotations

import pickle

import pytest

import models
import targetsel as ts
from targetsel.errors import TargetselError, UnknownNameError, hinted, with_context


class _TwoPartError(TargetselError, ValueError):
    """An error class whose constructor takes no message: `type(exc)(message)` cannot rebuild it."""

    def __init__(self, what: str, count: int):
        super().__init__(f"{what}: {count} found")
        self.what, self.count = what, count


# (error, its attributes to keep)
ERRORS = [
    (_TwoPartError("classes", 3), {"what": "classes", "count": 3}),
    (ts.PreflightError("2 errors", findings=["a", "b"]), {"findings": ["a", "b"]}),
    (ts.PeftRejectionError("PEFT refuses", peft_error="ValueError: no"), {"peft_error": "ValueError: no"}),
    (UnknownNameError("no module named 'x'"), {}),
    (hinted(UnknownNameError, "unknown component 'visoin'", "did you mean `vision`?"),
     {"reason": "unknown component 'visoin'", "hint": "did you mean `vision`?"}),
]


@pytest.mark.parametrize("error, attributes", ERRORS, ids=[type(e).__name__ for e, _ in ERRORS])
def test_with_context_copies_class_attributes_and_message(error, attributes):
    before = str(error)
    copied = with_context(error, "\n  in query: type:x")
    assert type(copied) is type(error) and copied is not error
    assert str(copied) == before + "\n  in query: type:x"
    assert {k: getattr(copied, k) for k in attributes} == attributes
    assert str(error) == before  # the original is left as it was


@pytest.mark.parametrize("error", [ERRORS[1][0], ERRORS[2][0], ERRORS[3][0]], ids=lambda e: type(e).__name__)
def test_a_copy_with_context_pickles_with_it(error):
    copied = with_context(error, " (more)")
    again = pickle.loads(pickle.dumps(copied))
    assert type(again) is type(error) and str(again) == str(error) + " (more)"


def test_select_adds_the_query_to_a_model_error():
    with pytest.raises(UnknownNameError) as info:
        ts.select(models.demo(), "linear & type:Lineer")
    assert type(info.value) is UnknownNameError
    assert str(info.value).endswith("did you mean `Linear` (classes in this model)?\n  in query: linear & type:Lineer")


@pytest.mark.parametrize("hint, message", [
    ("did you mean `vision`?", "unknown component 'visoin'; did you mean `vision`?"),
    ("", "unknown component 'visoin'"),
])
def test_hinted_keeps_reason_and_hint_apart(hint, message):
    error = hinted(UnknownNameError, "unknown component 'visoin'", hint)
    assert isinstance(error, UnknownNameError) and str(error) == message
    assert (error.reason, error.hint) == ("unknown component 'visoin'", hint)
