"""`targetsel show MODEL adapter_config.json`: what a saved PEFT config adapts on a model, grouped.

The adapted set is what a real `get_peft_model` would wrap (`dry_run`: PEFT's own matching, its
MoE conversion, `modules_to_save`, `target_parameters`), shown with the same rows as a selection —
class, shape, grad state, parameters — followed by `check`'s findings for that config. Exit code 1
when a finding is an error, as `check` does.
"""

from __future__ import annotations

import sys
from typing import Optional

from targetsel.cli.files import read_peft_config
from targetsel.cli.terminal import dump, out, progress


def show_adapter(model, spec: str, fmt: str, rank: Optional[int], model_spec: str) -> int:
    from targetsel.bridge.checks import check
    from targetsel.bridge.verify import dry_run
    from targetsel.selection import select

    config = read_peft_config(spec)
    with progress("checking"):
        injection = dry_run(model, config)
        findings = check(model, config)
    chosen = set(injection.modules)
    sel = select(model).where(lambda name, module: name in chosen)
    res = sel.resolution()
    if fmt in ("list", "regex"):
        if res.names:
            out("\n".join(res.names) if fmt == "list" else sel.regex())
        for f in findings:  # the answer stays on stdout for scripts; what is wrong with it goes to stderr
            print(f"{f.severity} [{f.code}] {f.message.splitlines()[0]}", file=sys.stderr)
    elif fmt in ("json", "yaml"):
        out(dump(_data(res, spec, config, injection, findings, rank, model_spec), fmt))
    else:
        out(_table(res, spec, config, injection, findings, rank))
    return 1 if any(f.severity == "error" for f in findings) else 0


def _data(res, spec: str, config, injection, findings, rank: Optional[int], model_spec: str) -> dict:
    from targetsel.views import display

    data = {
        "model": model_spec,
        "model_class": res.model_class,
        "modules_in_model": res.module_count,
        "config": spec,
        "peft_type": str(getattr(config.peft_type, "value", config.peft_type)),
        "target_modules": _plain(injection.target_modules),
        "count": res.count,
        "groups": display.summary_rows(res),
        "names": list(res.names),
        "parameters": list(injection.parameters),
        "modules_to_save": list(injection.saved),
        "trainable_tokens": list(injection.tokens),
        "peft_error": injection.error,
        "findings": [f.to_dict() for f in findings],
        "errors": sum(f.severity == "error" for f in findings),
        "warnings": sum(f.severity == "warning" for f in findings),
    }
    if rank is not None:
        data["rank"] = rank
        data["lora_params"] = display.lora_params(res, rank)
    return data


def _table(res, spec: str, config, injection, findings, rank: Optional[int]) -> str:
    """The selection table with a header naming the config, then the findings as `check` prints them."""
    from targetsel.views import display

    lines = display.render_text(res, r=rank or 16).splitlines()
    lines[0] = (f"{spec}: {type(config).__name__}(target_modules={_short(_plain(config.target_modules))}) — "
                f"get_peft_model adapts {res.count} of {res.module_count} modules of {res.model_class}")
    if not res.count:
        lines[1:] = ["  no module" + (f": get_peft_model raises {injection.error}" if injection.error else "")]
    lines += _extras(injection) + [""]
    lines += [f"{f.severity} [{f.code}] {f.message}\n" for f in findings]
    counts = {s: sum(f.severity == s for f in findings) for s in ("error", "warning", "info")}
    lines.append(", ".join(f"{n} {s}{'s' if n != 1 and s != 'info' else ''}" for s, n in counts.items())
                 if findings else "no findings")
    return "\n".join(lines)


def _plain(value):
    """A target_modules value as JSON has it: sets sorted into lists."""
    return sorted(value) if isinstance(value, (set, frozenset)) else value


def _extras(injection) -> list[str]:
    lines = []
    for title, names in (("target_parameters", injection.parameters), ("modules_to_save (trained in full)", injection.saved),
                         ("trainable tokens", injection.tokens)):
        if names:
            lines.append(f"also {title}: {_short(list(names), 6)}")
    return lines


def _short(value, limit: int = 8) -> str:
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else list(value)
        shown = ", ".join(repr(v) for v in items[:limit])
        return f"[{shown}{', …' if len(items) > limit else ''}]"
    return repr(value)
