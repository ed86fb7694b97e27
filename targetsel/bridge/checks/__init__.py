"""Preflight checks: what PEFT would do wrong, silently, with a selection or a config — said before `get_peft_model`.

Both incidents behind targetsel were silent. PEFT matches by name, so it put adapters on a vision
tower the user had frozen; and it wraps any `nn.Linear` subclass as a plain Linear, so
InternLM-XComposer2's PLoRA layers (their own `Plora_A`/`Plora_B` children, `forward(x, im_mask)`)
lost their own training. `check(model, target)` looks at what would be targeted and returns
`Finding`s with a stable `code`, a `severity` and a message that says what happened, how many,
and what to do instead. `patch()` runs it: errors raise, warnings are emitted once each.

Layout: `registry.py` (codes, `Finding`, `@rule`, `check`, `enforce`), `subject.py` (what a rule
reads), and the rules by theme. What a method can wrap is asked from PEFT itself (bridge/probe.py).
A new check is a function decorated with `@rule("its-code", severity)` in the module of its theme.
The rule modules are imported below in report order: within a severity, findings are listed in the
order their codes were registered.
"""

from targetsel.bridge.checks.registry import CODES, CodeInfo, Finding, check, check_resolution, enforce, rule
from targetsel.bridge.checks import (  # noqa: F401  (imported to register their rules, in report order)
    selection_rules,
    grad_rules,
    wrap_rules,
    head_rules,
    name_rules,
    peft_rules,
    coverage_rules,
)

__all__ = ["CODES", "CodeInfo", "Finding", "check", "check_resolution", "enforce", "rule"]
