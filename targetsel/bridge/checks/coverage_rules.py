"""Coverage lint: entries that match nothing, and adapters spread unevenly over the layers.

Both are silent in PEFT: an entry that matches no module is ignored (only a config matching nothing
at all raises), and a name list that fits one block type leaves the others bare — `q_proj`/`v_proj`
on a hybrid model adapts its few attention layers and none of its Mamba layers. The counts come
from views/coverage.py (selection or config alike: the subject's positions) and
views/dead_operands.py; a config's entries are judged by PEFT's own rules in bridge/config_entries.py.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import torch

from targetsel.bridge.checks.registry import Finding, finding, rule
from targetsel.bridge.checks.subject import Subject
from targetsel.bridge.config_entries import FIELDS, dead_entries
from targetsel.model.wrappers import class_name
from targetsel.text.grouping import int_set_text
from targetsel.views.coverage import StackCoverage, coverage
from targetsel.views.diagnose import nearest_misses_text, selector_words, target_words
from targetsel.views.dead_operands import dead_operands


@rule("dead-entry", "warning")
def dead_entry(s: Subject) -> list[Finding]:
    """Config entries, or parts of a query, that match no module of the model: they do nothing."""
    model = f"{class_name(s.model)} ({s.index.size - 1} modules)"
    if s.from_config:
        return _config_finding(s, dead_entries(s.model, s.config), model)
    # a selection: its own parts, and of the method config only the fields patch() keeps
    return _query_finding(s, model) + _config_finding(s, dead_entries(s.model, s.config, FIELDS[1:]), model)


def _query_finding(s: Subject, model: str) -> list[Finding]:
    parts = dead_operands(s.resolution)
    if not parts:
        return []
    by_role = defaultdict(list)
    for p in parts:
        by_role[p.role].append(p.query)
    listed = "; ".join(f"{role}(s) {', '.join(repr(q) for q in qs)}" for role, qs in by_role.items())
    message = (
        f"{len(parts)} part(s) of the query select no module of {model}: {listed}. They change nothing "
        "— a misspelt name, or a module this model does not have. Fix or drop them."
        + nearest_misses_text(s.index, [w for p in parts for w in selector_words(p.node)])
    )
    return [finding("dead-entry", message, s)]


def _config_finding(s: Subject, dead, model: str) -> list[Finding]:
    if not dead:
        return []
    by_field = defaultdict(list)
    for d in dead:
        by_field[d.field].append(d)
    parts = []
    for field, entries in by_field.items():
        whole = [d.entry for d in entries if not d.part_of]
        alts = [d for d in entries if d.part_of]
        if whole:
            regex = isinstance(getattr(s.config, field), str)
            parts.append(f"{field} {'regex ' + repr(whole[0]) if regex else s.grouped(whole)}")
        if alts:
            parts.append(f"{field} alternative(s) {', '.join(repr(d.entry) for d in alts)} of {alts[0].part_of!r}")
    rule_text = ("PEFT matches a list entry by the full name or a dotted suffix, a string with re.fullmatch, and "
                 "modules_to_save entries with a plain endswith")
    message = (
        f"{len(dead)} config entr{'y matches' if len(dead) == 1 else 'ies match'} no module of {model}: {'; '.join(parts)}. "
        f"{rule_text}; an entry that matches nothing is ignored silently, so what it was meant to do does not "
        "happen. Fix the names or remove the entries."
        + nearest_misses_text(s.index, [w for d in dead for w in target_words(
            d.entry if isinstance(getattr(s.config, d.field), str) else [d.entry])])  # a regex's words, or the entry
    )
    return [finding("dead-entry", message, s)]


@rule("uneven-coverage", "info")
def uneven_coverage(s: Subject) -> list[Finding]:
    """Adapters on some layers of a stack and not others, or on a role in some layers and not others."""
    mask = torch.zeros(s.index.size, dtype=torch.bool)
    mask[torch.tensor(s.positions, dtype=torch.long)] = True
    cov = coverage(s.index, mask, intended_layers=_layers_intended(s))
    refused = _refused_by_peft(s, cov)
    stacks = [replace(st, uncovered_candidates=tuple(i for i in st.uncovered_candidates if i not in refused))
              for st in cov.stacks]
    found = [(st, _stack_text(st, s)) for st in stacks]
    found = [(st, text) for st, text in found if text]
    if not found:
        return []
    components = ", ".join(f"{name} {a}/{c}" for name, (a, c) in cov.components.items() if c)
    actionable = any(st.partial and st.uncovered_candidates or any(g.not_selected for g in st.gaps) for st, _ in found)
    container = found[0][0].container
    leaves = sorted({s.index.names[i].rpartition(".")[2] for st in cov.stacks for i in st.uncovered_candidates
                     if i in refused})
    without = f" - glob:**.{leaves[0] if len(leaves) == 1 else '{' + ','.join(leaves) + '}'}" if leaves else ""
    advice = (" If that is what you meant, nothing is wrong; otherwise " + s.fix(
        selection=f"select by class and place (e.g. linear & under:{container}{without}) instead of by name.",
        config="name the other blocks' layers too, or build the targets with targetsel.bridge.patch(config, "
               "select(model, ...)).")) if actionable else (
        " The model has no such module there: nothing to add, but expect fewer adapters in those layers.")
    model_type = getattr(getattr(s.model, "config", None), "model_type", None)
    message = (
        " ".join(text for _, text in found)
        + (f" By component (selected / modules of the selected classes): {components}." if components.count("/") > 1 else "")
        + (f" Not counted: {', '.join(leaves)}, which PEFT refuses on {model_type!r} models (its Mamba guard raises)."
           if leaves else "")
        + advice
    )
    positions = [i for st, _ in found for i in st.uncovered_candidates]
    return [finding("uneven-coverage", message, s, positions)]


def _refused_by_peft(s: Subject, cov) -> frozenset[int]:
    """Positions of candidates PEFT's Mamba guard would raise on (`out_proj`, `conv1d` of Mamba model
    types, for LoRA-like methods), asked of the installed PEFT for each distinct leaf name: the lint
    must not count as missing what PEFT refuses to adapt, nor suggest selecting it."""
    try:
        from peft.tuners.tuners_utils import _check_lora_target_modules_mamba as guard
    except ImportError:  # older PEFT: no guard
        return frozenset()
    if getattr(s.config, "peft_type", None) is None:
        return frozenset()
    verdicts: dict[str, bool] = {}

    def refuses(leaf: str) -> bool:
        if leaf not in verdicts:
            try:
                guard(s.config, s.model, leaf)
                verdicts[leaf] = False
            except ValueError:
                verdicts[leaf] = True
        return verdicts[leaf]

    return frozenset(i for st in cov.stacks for i in st.uncovered_candidates
                     if refuses(s.index.names[i].rpartition(".")[2]))


def _layers_intended(s: Subject) -> bool:
    """Do the targets restrict layers on purpose? (`layers:` in the query, `layers_to_transform`)"""
    if s.from_config:
        return bool(getattr(s.config, "layers_to_transform", None))
    from targetsel.query.tree import walk

    return any(getattr(n, "kind", None) == "layers" for n in walk(s.resolution.node))


def _stack_text(st: StackCoverage, s: Subject) -> str:
    parts = []
    if st.partial and st.uncovered_candidates:
        uncovered = [x for x in range(st.layers) if x not in set(st.covered)]
        kinds = st.kinds_in(uncovered)
        names = [s.index.names[i] for i in st.uncovered_candidates]
        parts.append(
            f"only {len(st.covered)} of {st.layers} layers get adapters (layers {_runs(st.covered)}); the other "
            f"{len(uncovered)} hold {', '.join(kinds) or 'other'} blocks whose {len(names)} module(s) of the selected "
            f"classes get none: {s.grouped(names, 4)}"
        )
    gaps = defaultdict(list)  # roles with the same missing layers read as one sentence
    for g in st.gaps:
        gaps[(g.not_selected, g.absent)].append(g)
    for (not_selected, absent), group in list(gaps.items())[:4]:
        roles = s.grouped([g.role for g in group], 4)
        adapted = sorted({x for g in group for x in g.adapted})
        text = f"{roles} adapted in {len(adapted)} of {len(st.covered)} covered layers"
        if not_selected:
            text += f"; in layers {_runs(not_selected)} it is there and not selected"
        if absent:
            leaf = group[0].role.rpartition(".")[2]
            text += f"; layers {_runs(absent)} have no {leaf} (their {group[0].kind} block lacks it)"
        parts.append(text)
    if len(gaps) > 4:
        parts.append(f"and {len(gaps) - 4} more role group(s)")
    return f"{st.container} ({st.layers} layers): " + "; ".join(parts) + "." if parts else ""


def _runs(values) -> str:
    return int_set_text(values).strip("{}")
