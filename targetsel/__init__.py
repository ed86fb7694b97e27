"""targetsel — choose which modules of a PyTorch model get PEFT adapters, precisely and provably.

    >>> from targetsel import select, patch
    >>> LoraConfig(target_modules=select(model).trainable().type(nn.Linear).names())
    >>> config = patch(LoraConfig(r=16), select(model, "linear & trainable"))

`import targetsel` imports neither torch nor peft: every public name is served on first use by the
module `__getattr__` below, so `targetsel --version` and `--help` answer at once and a process that
only needs the query language (or the error classes) never pays for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from targetsel.version import __version__

# Public name → the module that defines it, imported on first use. No public name is the name of a
# top-level submodule (errors, version, selection, demo, cli, text, query, model, views, bridge):
# importing a submodule sets the package attribute of its own name, which would shadow a public
# name of that spelling. Submodules of bridge/ (patch, verify, audit) set attributes of
# `targetsel.bridge`, never of `targetsel`. tests/test_public_api.py holds every name to this.
_ERRORS = (
    "AuditError", "ExportError", "AdapterFileError",
    "ConfigError", "EmptySelectionError", "LayerSpecError", "ModelLoadError", "ModelMismatchError",
    "ModelRewrittenError", "ModulesToSaveOverlapError", "NestedTargetsError", "NotAModuleError",
    "NotSerialisableError", "PatternError", "PeftRejectionError", "PreflightError", "QuerySyntaxError",
    "RegexTimeoutError", "SelectionError", "SpecError", "TargetselError", "TargetselWarning", "UnknownNameError",
)
_LAZY = {
    **{name: "targetsel.errors" for name in _ERRORS},
    "Audit": "targetsel.bridge.audit",
    "audit": "targetsel.bridge.audit",
    "Drift": "targetsel.views.lock",
    "check_lock": "targetsel.views.lock",
    "Explanation": "targetsel.views.explain",
    "Finding": "targetsel.bridge.checks",
    "check": "targetsel.bridge.checks",
    "check_adapter": "targetsel.bridge.adapter_check",
    "AdapterReport": "targetsel.bridge.adapter_check",
    "Injection": "targetsel.bridge.injection",
    "ParameterSelection": "targetsel.views.parameters",
    "TargetselCallback": "targetsel.bridge.callback",
    "Resolved": "targetsel.selection",
    "Selection": "targetsel.selection",
    "select": "targetsel.selection",
    "Selector": "targetsel.query.nodes",
    "load_spec": "targetsel.query.parser",
    "parse": "targetsel.query.parser",
    "patch": "targetsel.bridge.patch",
    "dry_run": "targetsel.bridge.verify",
    "verify": "targetsel.bridge.verify",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'targetsel' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ serves these names
    from targetsel.bridge.adapter_check import AdapterReport, check_adapter
    from targetsel.bridge.audit import Audit, audit
    from targetsel.bridge.callback import TargetselCallback
    from targetsel.bridge.checks import Finding, check
    from targetsel.bridge.injection import Injection
    from targetsel.bridge.patch import patch
    from targetsel.bridge.verify import dry_run, verify
    from targetsel.errors import (
        AuditError,
        AdapterFileError,
        ConfigError,
        EmptySelectionError,
        ExportError,
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
    from targetsel.query.parser import load_spec, parse
    from targetsel.selection import Resolved, Selection, select
    from targetsel.views.explain import Explanation
    from targetsel.views.lock import Drift, check_lock
    from targetsel.views.parameters import ParameterSelection

__all__ = [
    "AdapterFileError",
    "AdapterReport",
    "Audit",
    "AuditError",
    "ExportError",
    "TargetselCallback",
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
    "check_adapter",
    "check_lock",
    "dry_run",
    "load_spec",
    "parse",
    "patch",
    "select",
    "verify",
]
