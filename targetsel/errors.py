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


class ExportError(ConfigError):
    """A trainer's own config keys cannot make it adapt exactly the selection (`Selection.export`), or
    the trainer is unknown; the message says why and the closest exact alternative."""


class AuditError(TargetselError, RuntimeError):
    """At train start the live model's adapters are not the intended ones (`TargetselCallback`).
    `.report` is the text the callback printed."""

    def __init__(self, message: str, report: str = ""):
        super().__init__(message)
        self.report = report

    def __reduce__(self):  # keep pickling (multiprocessing, pytest-xdist) working
        return (type(self), (str(self), self.report))


class ModelRewrittenError(TargetselError, RuntimeError):
    """A selection made before `get_peft_model` was evaluated after it rewrote the model (adapter
    layers, `base_layer`, `lora_A`, …): it would no longer mean what it meant when it was made."""


class ModelLoadError(TargetselError, ValueError):
    """A command-line MODEL names nothing that can be built (bad path, factory, hub id or class)."""


class AdapterFileError(ConfigError):
    """A saved adapter cannot be read: no adapter_config.json or weights file, a corrupt safetensors
    header, or a weights format whose keys cannot be read without loading its data."""


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


def hinted(error_class: type, reason: str, hint: str):
    """`error_class("reason; hint")` that also keeps `.reason` and `.hint` apart, so that the query
    parser can show the reason at a column and the hint below it."""
    error = error_class(f"{reason}; {hint}" if hint else reason)
    error.reason, error.hint = reason, hint
    return error


def with_context(error: BaseException, context: str) -> BaseException:
    """A copy of `error` — same class, same attributes — whose message ends with `context`.

    The copy is made without calling the class's constructor, which may take other arguments than
    a message (`PreflightError(message, findings)`, `PeftRejectionError(message, peft_error)`); their
    `__reduce__` rebuilds from `str(error)`, so the copy pickles with its context.
    """
    copied = type(error).__new__(type(error))
    copied.__dict__.update(error.__dict__)
    copied.args = (f"{error}{context}",)
    return copied
