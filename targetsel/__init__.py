"""targetsel — choose which modules of a PyTorch model get PEFT adapters, precisely and provably.

    >>> from targetsel import select, patch
    >>> LoraConfig(target_modules=select(model).trainable().type(nn.Linear).names())
    >>> config = patch(LoraConfig(r=16), select(model, "linear & trainable"))
"""

from targetsel.errors import (  # the error base class comes first: everything else raises its subclasses
    ConfigError,
    EmptySelectionError,
    LayerSpecError,
    ModelLoadError,
    ModelMismatchError,
    ModelRewrittenError,
    ModulesToSaveOverlapError,
    NestedTargetsError,
    NotAModuleError,
    NotSerialisableError,
    PatternError,
    PeftRejectionError,
    PreflightError,
    QuerySyntaxError,
    RegexTimeoutError,
    SelectionError,
    SpecError,
    TargetselError,
    TargetselWarning,
    UnknownNameError,
)
from targetsel.query.nodes import Selector
from targetsel.bridge.patch import patch
from targetsel.selection import Resolved, Selection, select
from targetsel.bridge.verify import dry_run, verify
from targetsel.bridge.injection import Injection

# A public name that is also a submodule's name (patch, verify, audit) is imported here, eagerly:
# the first import of a submodule sets the package attribute of that name to the module, which
# would shadow a name served lazily by __getattr__ (`from targetsel import audit` gave the module
# once patch() had imported targetsel.bridge.audit). tests/test_public_api.py holds every name to this.
from targetsel.bridge.audit import Audit, audit

from targetsel.version import __version__  # noqa: E402

# Parts that live in their own modules and are imported on first use; no name here is a submodule's.
_LAZY = {
    "Drift": ".views.lock",
    "Explanation": ".views.explain",
    "Finding": ".bridge.checks",
    "ParameterSelection": ".views.parameters",
    "check": ".bridge.checks",
    "check_lock": ".views.lock",
    "load_spec": ".query.parser",
    "parse": ".query.parser",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'targetsel' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "Audit",
    "ConfigError",
    "Drift",
    "EmptySelectionError",
    "Explanation",
    "Injection",
    "Finding",
    "LayerSpecError",
    "ModelLoadError",
    "ModelMismatchError",
    "ModelRewrittenError",
    "ModulesToSaveOverlapError",
    "NestedTargetsError",
    "NotAModuleError",
    "NotSerialisableError",
    "ParameterSelection",
    "PatternError",
    "PeftRejectionError",
    "PreflightError",
    "QuerySyntaxError",
    "RegexTimeoutError",
    "Resolved",
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
    "dry_run",
    "load_spec",
    "parse",
    "patch",
    "select",
    "verify",
]
