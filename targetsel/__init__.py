"""targetsel — choose which modules of a PyTorch model get PEFT adapters, precisely and provably.

    >>> from targetsel import select, patch
    >>> LoraConfig(target_modules=select(model).trainable().type(nn.Linear).names())
    >>> config = patch(LoraConfig(r=16), select(model, "linear & trainable"))
"""

from .errors import (  # the error base class comes first: everything else raises its subclasses
    ConfigError,
    EmptySelectionError,
    LayerSpecError,
    ModelLoadError,
    ModelMismatchError,
    ModulesToSaveOverlapError,
    NestedTargetsError,
    NotAModuleError,
    NotSerialisableError,
    PatternError,
    PreflightError,
    QuerySyntaxError,
    RegexTimeoutError,
    SelectionError,
    SpecError,
    TargetselError,
    TargetselWarning,
    UnknownNameError,
)
from .nodes import Selector
from .patch import patch
from .selection import Selection, select
from .verify import verify

__version__ = "0.1.0"

# Parts that live in their own modules and are imported on first use.
_LAZY = {
    "Audit": ".audit",
    "Drift": ".lock",
    "Explanation": ".explain",
    "Finding": ".checks",
    "ParameterSelection": ".parameters",
    "audit": ".audit",
    "check": ".checks",
    "check_lock": ".lock",
    "load_spec": ".query",
    "parse": ".query",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'targetsel' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "Audit",
    "ConfigError",
    "Drift",
    "EmptySelectionError",
    "Explanation",
    "Finding",
    "LayerSpecError",
    "ModelLoadError",
    "ModelMismatchError",
    "ModulesToSaveOverlapError",
    "NestedTargetsError",
    "NotAModuleError",
    "NotSerialisableError",
    "ParameterSelection",
    "PatternError",
    "PreflightError",
    "QuerySyntaxError",
    "RegexTimeoutError",
    "Selection",
    "SelectionError",
    "Selector",
    "SpecError",
    "TargetselError",
    "TargetselWarning",
    "UnknownNameError",
    "audit",
    "check",
    "check_lock",
    "load_spec",
    "parse",
    "patch",
    "select",
    "verify",
]
