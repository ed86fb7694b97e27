"""The rule registry: codes, findings, `check()` and `enforce()`.

A rule is a function `Subject -> list[Finding]` registered with `@rule(code, severity)`; the code's
spelling is part of the API. Findings are reported errors first, then warnings, then infos, and
within a severity in the order the codes were registered (checks/__init__.py imports the rule
modules in that order; tests/bridge/checks/test_registry.py pins it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from torch import nn

from targetsel.bridge.checks.subject import EMPTY, REJECTED, SELECTED, Subject, subject_for, subject_of
from targetsel.errors import EmptySelectionError, ModulesToSaveOverlapError, NestedTargetsError, PreflightError, TargetselWarning
from targetsel.model.ranks import warn_once
from targetsel.model.resolution import Resolution

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class CodeInfo:
    severity: str
    peft_fails: bool  # True: PEFT raises or crashes, so `strict=False` cannot downgrade it


@dataclass(frozen=True)
class Finding:
    """One preflight finding. `modules` are module names in model order."""

    code: str
    severity: str
    message: str
    modules: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"{self.severity} [{self.code}] {self.message}"

    def to_dict(self) -> dict:
        return {"code": self.code, "severity": self.severity, "message": self.message, "modules": list(self.modules)}


Rule = Callable[[Subject], list[Finding]]

# Every code, in registration order; `report_order()` sorts it by severity.
CODES: dict[str, CodeInfo] = {}
# (rule, the subject states it runs on), in registration order.
_RULES: list[tuple[Rule, frozenset]] = []


def rule(code: str, severity: str, *, peft_fails: bool = False, runs_on=(SELECTED,)):
    """Register the decorated function as the rule that reports `code`.

    `peft_fails`: PEFT raises or crashes on what the rule finds (so `strict=False` cannot downgrade
    it). `runs_on`: the subject states the rule looks at — SELECTED (something is targeted), EMPTY
    (nothing is), REJECTED (nothing is, because get_peft_model raises on the config first).
    """
    if severity not in SEVERITIES:
        raise AssertionError(f"rule {code!r}: severity must be one of {SEVERITIES}, not {severity!r}")
    if code in CODES:
        raise AssertionError(f"rule {code!r} is registered twice")

    def register(fn: Rule) -> Rule:
        CODES[code] = CodeInfo(severity, peft_fails)
        _RULES.append((fn, frozenset(runs_on)))
        _sort_codes()
        return fn

    return register


def _sort_codes() -> None:
    ordered = sorted(CODES.items(), key=lambda kv: SEVERITIES.index(kv[1].severity))  # stable: registration order
    CODES.clear()
    CODES.update(ordered)


def finding(code: str, message: str, subject: Subject, positions: Sequence[int] = ()) -> Finding:
    """A finding of `code` naming the modules at `positions` (model order, each once)."""
    names = tuple(subject.index.names[i] for i in sorted(set(positions)))
    return Finding(code, CODES[code].severity, message, names)


def check(model: nn.Module, target, *, config: Any = None) -> list[Finding]:
    """Findings about what PEFT would do with `target` on `model`, errors first.

    `target` is a `Selection`, a query string, or a PEFT config (then the checked set is what PEFT
    would target, `verify(model, config)`). The method-dependent checks (what the method can wrap,
    its adapter prefix, `modules_to_save`) follow `config=` — e.g. `check(model, sel,
    config=IA3Config(...))` — or the target config itself; without either, LoRA's defaults apply.
    """
    return run(subject_for(model, target, config))


def check_resolution(res: Resolution, config: Any) -> list[Finding]:
    """`check()` of a selection already resolved (patch() holds one): no second evaluation."""
    return run(subject_of(res, config))


def run(subject: Subject) -> list[Finding]:
    findings: list[Finding] = []
    state = subject.state
    for fn, runs_on in _RULES:
        if state in runs_on:
            findings += fn(subject)
    order = {code: i for i, code in enumerate(CODES)}
    findings.sort(key=lambda f: order[f.code])  # CODES is in report order: by severity, then registration
    return findings


# ---------------------------------------------------------------------------- acting on findings (patch)

# The classes patch() raises, by the code of its first error; anything else is a PreflightError.
_ERROR_CLASSES = {
    "empty-selection": EmptySelectionError,
    "nested-targets": NestedTargetsError,
    "modules-to-save-overlap": ModulesToSaveOverlapError,
    "modules-to-save-wraps": ModulesToSaveOverlapError,
}


def enforce(findings: Sequence[Finding], *, strict: bool = True, what: str = "patch()", stacklevel: int = 3) -> list[Finding]:
    """Raise for errors, warn once for each warning; return the errors that `strict=False` downgraded.

    The raised class is that of the first error (`EmptySelectionError`, `NestedTargetsError`,
    `ModulesToSaveOverlapError`, else `PreflightError`); its message starts with that error's
    message and lists the others; `.findings` holds them all.
    """
    errors = [f for f in findings if f.severity == "error"]
    downgraded = [] if strict else [f for f in errors if not CODES[f.code].peft_fails]
    errors = [f for f in errors if f not in downgraded]
    if errors:
        first = errors[0]
        text = first.message
        if len(errors) > 1:
            text += f"\n\n{len(errors) - 1} more error(s) found by {what} before get_peft_model:\n" + "\n".join(
                f"  [{f.code}] {f.message}" for f in errors[1:]
            )
        if strict and any(not CODES[f.code].peft_fails for f in errors):
            text += f"\n({what.rstrip('()')}(..., strict=False) turns modules-to-save-overlap into a warning.)"
        raise _ERROR_CLASSES.get(first.code, PreflightError)(text, findings)
    for f in [*downgraded, *(f for f in findings if f.severity == "warning")]:
        warning = TargetselWarning(f"[{f.code}] {f.message}")
        warning.finding = f  # type: ignore[attr-defined]
        warn_once(warning, stacklevel=stacklevel)  # raised on every rank, printed on rank 0 (model/ranks.py)
    return downgraded
