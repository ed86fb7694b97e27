"""The text of an `AdapterReport`: a verdict line, then one grouped line per finding.

Keys are shown by the module they belong to and grouped (`layers.{0..31}.self_attn.{q,v}_proj`),
so a drift across a whole model reads as one line, not a thousand keys.
"""

from __future__ import annotations

from typing import Iterable

from targetsel.bridge.adapter_load import module_of_key
from targetsel.text.grouping import summarize_names

_SHOWN_MISMATCHES = 6  # groups of keys with the same difference


def _modules(keys: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(module_of_key(k) for k in keys))


def _grouped(keys: Iterable[str]) -> str:
    keys = list(keys)
    modules = _modules(keys)
    return f"{len(keys)} key{'s' if len(keys) != 1 else ''} on {len(modules)} module{'s' if len(modules) != 1 else ''}: " \
        + summarize_names(modules)


def render_report(report) -> str:
    """The text of an `AdapterReport` (its `__str__`)."""
    r = report
    origin = f", saved from {r.saved_from}" if r.saved_from else ""
    lines = [f"adapter {r.adapter} ({r.peft_type}, {r.keys} keys in {r.weights_file}{origin}) on {r.model_class}: "
             + _verdict(r)]
    if r.attached:
        lines.append(f"  attaches to {len(r.attached)} module{'s' if len(r.attached) != 1 else ''}: "
                     + summarize_names(list(r.attached)))
    if r.saved_modules:
        lines.append(f"  modules_to_save: {summarize_names(list(r.saved_modules))}")
    if r.error is None:
        lines.append(f"  loads {r.loaded} of {r.keys} keys")
    if r.renamed:
        old, new = _modules(r.renamed), _modules(r.renamed.values())
        lines.append(f"  renamed on load by transformers' conversion mapping ({len(r.renamed)} keys, they load): "
                     f"{summarize_names(old)} → {summarize_names(new)}")
    if r.fused:
        lines.append(f"  fused on load by transformers' conversion ({len(r.fused)} keys into fused-expert layers): "
                     + summarize_names(_modules(r.fused)))
    if r.dead:
        lines.append(f"  DROPPED, no module here: {_grouped(r.dead)}")
    if r.unweighted:
        lines.append(f"  NO WEIGHTS for {len(r.unweighted)} targeted module{'s' if len(r.unweighted) != 1 else ''} "
                     f"(they keep their fresh initialisation): {summarize_names(list(r.unweighted))}")
    if r.mismatches:
        lines += _mismatch_lines(r.mismatches)
    if r.unmatched_targets:
        lines.append(f"  target_modules entries that match no module here: {', '.join(r.unmatched_targets)}")
    if r.translation is not None:
        lines += _translation_lines(r)
    elif r.dead:
        lines.append("  no known rename (transformers' conversion mapping, base-model prefix) or prefix rewrite "
                     "explains the dropped keys: the adapter was trained on another architecture")
    if r.error:
        lines.append(f"  ERROR: PeftModel.from_pretrained raises {r.error.splitlines()[0][:300]}")
    return "\n".join(lines)


def _verdict(r) -> str:
    if r.ok:
        return "ok, every saved key loads"
    if r.error:
        return f"loading fails ({r.dropped} of {r.keys} keys do not reach the model)"
    parts = []
    if r.dropped:
        parts.append(f"{r.dropped} of {r.keys} saved keys would be dropped")
    if r.unweighted:
        parts.append(f"{len(r.unweighted)} targeted module{'s' if len(r.unweighted) != 1 else ''} get no weights")
    return ", ".join(parts)


def _translation_lines(r) -> list[str]:
    t = r.translation
    old, new = _modules(t.names), _modules(t.names.values())
    lines = [
        f"  RENAME explains {len(t.names)} dropped key{'s' if len(t.names) != 1 else ''}: {t.rule}",
        f"    {summarize_names(old)} → {summarize_names(new)}",
        f"    load with PeftModel.from_pretrained(model, {r.adapter!r}, key_mapping={dict(t.key_mapping)!r})",
    ]
    if t.still_dead:
        lines.append(f"    even then {_grouped(t.still_dead)} stay dropped")
    if t.still_mismatched:
        lines.append(f"    even then {len(t.still_mismatched)} keys land on layers of another shape")
    return lines


def _mismatch_lines(mismatches) -> list[str]:
    """Mismatched keys grouped by what differs, with why it differs."""
    by_detail: dict[str, list[str]] = {}
    for m in mismatches:
        by_detail.setdefault(m.detail, []).append(m.key.removeprefix("base_model.model."))
    n = len(mismatches)
    lines = [f"  SHAPE MISMATCH, {n} key{'s' if n != 1 else ''} (torch refuses to load them):"]
    for detail, keys in list(by_detail.items())[:_SHOWN_MISMATCHES]:
        lines.append(f"    {detail}: {summarize_names(keys, limit=4)}")
    if len(by_detail) > _SHOWN_MISMATCHES:
        rest = sum(len(k) for k in list(by_detail.values())[_SHOWN_MISMATCHES:])
        lines.append(f"    … and {rest} more keys")
    details = " ".join(by_detail)
    if "rank × experts" in details:
        lines.append("    rank × experts differs: the config's r, or the number of experts of this model, is not the saved one")
    elif "rank" in details:
        lines.append("    a rank differs: the config's r / rank_pattern gives this module another rank than was saved")
    if any(not d.startswith("rank") for d in by_detail):
        lines.append("    a layer size differs: the adapter was trained on a model with other dimensions")
    return lines
