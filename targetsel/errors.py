"""Every error targetsel raises on purpose derives from `TargetselError`.

The subclasses also derive from the matching builtin (`ValueError`, `TypeError`,
`LookupError`) so that code written against plain Python conventions keeps working.
"""

from __future__ import annotations

from typing import Sequence


class TargetselError(Exception):
    """Base class of every error targetsel raises on purpose."""


class TargetselWarning(UserWarning):
    """A preflight finding that does not stop PEFT, but that you should read."""


class NotAModuleError(TargetselError, TypeError):
    """`select()` was given something that is not a `torch.nn.Module`."""


class PatternError(TargetselError, ValueError):
    """A regex or glob given to `.name()` / `.glob()` (or `name:` / `glob:`) does not compile."""


class RegexTimeoutError(PatternError):
    """A user regex took too long (catastrophic backtracking) and was stopped."""


class LayerSpecError(TargetselError, ValueError):
    """A `.layers()` spec or `layers:` atom is malformed."""


class UnknownNameError(TargetselError, LookupError):
    """A class name, module name or component does not exist in the model."""


class ModelMismatchError(TargetselError, ValueError):
    """Two selections of different models were combined."""


class NotSerialisableError(TargetselError, ValueError):
    """A selector holds a Python callable (`.where(fn)`) and cannot be written as a query or JSON."""


class SelectionError(TargetselError, ValueError):
    """The selection cannot be turned into a PEFT config (empty, nested targets, ...)."""


class PreflightError(SelectionError):
    """`patch()`'s preflight `check()` found errors; `.findings` holds every finding (see `targetsel.check`)."""

    def __init__(self, message: str, findings: Sequence = ()):
        super().__init__(message)
        self.findings = list(findings)

    def __reduce__(self):  # keep pickling (multiprocessing, pytest-xdist) working
        return (type(self), (str(self), self.findings))


class EmptySelectionError(PreflightError):
    """The selection selects no module."""


class NestedTargetsError(PreflightError):
    """A module and one of its descendants are both selected; PEFT crashes on that mid-injection."""


class ConfigError(TargetselError, ValueError):
    """The PEFT config given to `patch()` / `verify()` cannot be honoured exactly."""


class PeftRejectionError(ConfigError):
    """A real `get_peft_model` would raise on this config and model. `.peft_error` is PEFT's own
    exception type and message (`"ValueError: …"`)."""

    def __init__(self, message: str, peft_error: str = ""):
        super().__init__(message)
        self.peft_error = peft_error

    def __reduce__(self):  # keep pickling (multiprocessing, pytest-xdist) working
        return (type(self), (str(self), self.peft_error))


class ModulesToSaveOverlapError(PreflightError, ConfigError):
    """Selected modules are also named by the config's `modules_to_save`; PEFT would skip them silently."""


class ModelRewrittenError(TargetselError, RuntimeError):
    """A selection made before `get_peft_model` was evaluated after it rewrote the model (adapter
    layers, `base_layer`, `lora_A`, …): it would no longer mean what it meant when it was made."""


class ModelLoadError(TargetselError, ValueError):
    """A command-line MODEL names nothing that can be built (bad path, factory, hub id or class)."""


class SpecError(TargetselError, ValueError):
    """A selector spec file (`load_spec`) or a selector structure is invalid."""


class QuerySyntaxError(TargetselError, ValueError):
    """A query string does not parse. `.query` is the query, `.position` the 0-based column."""

    def __init__(self, message: str, query: str, position: int, hint: str | None = None):
        self.query = query
        self.position = max(0, min(position, len(query)))
        self.reason = message
        self.hint = hint
        caret = " " * self.position + "^"
        text = f"{message} at column {self.position}\n    {query}\n    {caret}"
        if hint:
            text += f"\n{hint}"
        super().__init__(text)

    def __reduce__(self):  # keep pickling (multiprocessing, pytest-xdist) working
        return (type(self), (self.reason, self.query, self.position, self.hint))


def closest(word: str, candidates: Sequence[str], n: int = 3) -> list[str]:
    """The candidates nearest to `word` (difflib's ratio), best first."""
    import difflib

    return difflib.get_close_matches(word, list(dict.fromkeys(candidates)), n=n, cutoff=0.5)


def did_you_mean(word: str, candidates: Sequence[str], what: str = "") -> str:
    near = closest(word, candidates)
    if not near:
        return ""
    shown = ", ".join(f"`{c}`" for c in near)
    return f"did you mean {shown}{' ' + what if what else ''}?"
