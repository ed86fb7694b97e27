"""Rules about the shape of the selection itself: nothing selected, or one target inside another."""

from __future__ import annotations

import torch

from targetsel.bridge.checks.registry import Finding, finding, rule
from targetsel.bridge.checks.subject import EMPTY, Subject
from targetsel.bridge.match_fields import set_fields, without
from targetsel.model.wrappers import class_name


@rule("empty-selection", "error", peft_fails=True, runs_on=(EMPTY,))
def empty_selection(s: Subject) -> list[Finding]:
    """Nothing is selected; names the clause that emptied it and the nearest misses."""
    from targetsel.views.diagnose import explain_empty, nearest_misses_text, selector_words, target_words

    if s.resolution is not None:
        text = explain_empty(s.resolution)
        words = selector_words(s.resolution.node)
        return [finding("empty-selection", text + nearest_misses_text(s.index, words), s)]
    cfg = s.config
    text = (
        f"{type(cfg).__name__}(target_modules={cfg.target_modules!r}) targets none of the "
        f"{s.index.size - 1} modules of {class_name(s.model)}"
    )
    cleared = _without_removing_fields(s)
    if cleared:
        text += f"; without {cleared[0]} it would target {len(cleared[1])}: {s.grouped(cleared[1], 4)}"
    text += "; get_peft_model would raise ValueError."
    text += nearest_misses_text(s.index, target_words(cfg.target_modules))
    return [finding("empty-selection", text + " Name modules that exist, or build the targets with targetsel.bridge.patch(config, select(model, ...)).", s)]


def _without_removing_fields(s: Subject):
    """For an empty config target: (field text, names) when clearing the fields that remove targets
    (exclude_modules, modules_to_save, layers_to_transform/layers_pattern) makes PEFT target some."""
    from targetsel.bridge.verify import verify

    present = [f for group in set_fields(s.config, removing_only=True) for f in group]
    if not present:
        return None
    try:
        names = verify(s.model, without(s.config, present))
    except Exception:
        return None
    if not names:
        return None
    return ", ".join(present), names


def nested_pairs(index, mask: torch.Tensor) -> list[tuple[int, int]]:
    """(ancestor, descendant) position pairs of selected modules, nearest selected ancestor for each descendant."""
    inner = (index.ancestors_mask(mask) & mask).nonzero().flatten().tolist()
    selected = mask.tolist()
    pairs = []
    for i in inner:
        p = index.parents[i]
        while p > 0 and not selected[p]:
            p = index.parents[p]
        pairs.append((p, i))
    return pairs


def _mask_of(s: Subject) -> torch.Tensor:
    if s.resolution is not None:
        return s.resolution.mask
    mask = torch.zeros(s.index.size, dtype=torch.bool)
    if s.positions:
        mask[torch.tensor(s.positions, dtype=torch.long)] = True
    return mask


@rule("nested-targets", "error", peft_fails=True)
def nested_targets(s: Subject) -> list[Finding]:
    """A module and one of its descendants are both selected (PEFT crashes mid-injection)."""
    pairs = nested_pairs(s.index, _mask_of(s))
    if not pairs:
        return []
    names = s.index.names
    shown = "\n".join(f"  {names[a]}  ⊃  {names[d]}" for a, d in pairs[:8])
    more = f"\n  … and {len(pairs) - 8} more" if len(pairs) > 8 else ""
    fix = s.fix(
        selection="Keep one level: add .leaf() (innermost) or .outermost() (outermost), or & leaf / & outermost in a query.",
        config="Name only one level in target_modules (the layers, e.g. q_proj), or build the targets with "
               "targetsel.bridge.patch(config, select(model, ...).leaf()).",
    )
    message = (
        f"{len(pairs)} selected module(s) sit inside another selected module; PEFT would wrap the outer "
        f"one and then crash (AttributeError) reaching the inner one:\n{shown}{more}\n{fix}"
    )
    return [finding("nested-targets", message, s, [p for pair in pairs for p in pair])]
