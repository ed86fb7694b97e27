"""Check rules about what the installed PEFT does around matching — judged by a dry run of PEFT.

A config's targets are what the user wrote; what `get_peft_model` adapts can differ: its
transformers-5 MoE conversion rewrites targets (shared experts and dense MLPs become fused-expert
parameters, a regex becomes bare leaf names), the Mamba guard and the conversion raise, the
`modules_to_save` suffix rule wraps a target's parent, `ensure_weight_tying` and `layer_replication`
add modules, `trainable_token_indices` adds token layers. Each rule here reads the `Injection` of
the checked config (`Subject.outcome`) and reports the difference with the modules that made it.
"""

from __future__ import annotations

from targetsel.bridge.checks.registry import Finding, finding, rule
from targetsel.bridge.checks.subject import REJECTED, SELECTED, Subject
from targetsel.bridge.probe import probe_config
from targetsel.text.grouping import short_repr

# Messages of errors other rules already explain (the method's dispatch, nested targets).
_EXPLAINED_ELSEWHERE = ("is not supported", "Currently, only the following modules")


@rule("peft-rejects", "error", peft_fails=True, runs_on=(SELECTED, REJECTED))
def peft_rejects(s: Subject) -> list[Finding]:
    """get_peft_model would raise on this config and model (Mamba guard, MoE conversion, target conflicts)."""
    outcome = s.outcome
    if outcome is None:  # a selection: no dry run of a config to read, but the Mamba guard reads names
        return _mamba_guard(s)
    if outcome.error is None:
        return []
    if any(w in outcome.error for w in _EXPLAINED_ELSEWHERE) or "not a valid target" in outcome.error:
        return []  # unsupported-type / container-target / parameter-and-module-target say it better
    fix = advice_for_peft_error(outcome.error)
    return [finding("peft-rejects", f"get_peft_model would raise {outcome.error.rstrip('.')}. {fix}", s, s.positions)]


def _mamba_guard(s: Subject) -> list[Finding]:
    """For a selection: PEFT's Mamba guard refuses some leaf names for LoRA."""
    from targetsel.bridge.verify import peft_rewrites

    leaves = {}
    for i in s.positions:
        leaves.setdefault(s.index.names[i].rpartition(".")[2], []).append(i)
    why = peft_rewrites(s.model, sorted(leaves), [s.index.names[i] for i in s.positions]) if leaves else None
    if why is None or "Mamba" not in why:
        return []
    hit = [i for leaf, ps in leaves.items() if leaf in ("out_proj", "conv1d") for i in ps]
    return [finding(
        "peft-rejects",
        f"{why.rstrip('.')}. {len(hit)} selected module(s): {s.grouped([s.index.names[i] for i in hit])}. "
        "Leave them out (- glob:**.out_proj - glob:**.conv1d).",
        s, hit,
    )]


def advice_for_peft_error(error: str, *, selection: bool = False) -> str:
    """What to do about an error get_peft_model would raise; `selection`: the targets come from one."""
    if "Mamba" in error:
        return ("Leave those modules out" + (" (e.g. - glob:**.out_proj - glob:**.conv1d)" if selection else
                " of the targets (for a selection: - glob:**.out_proj - glob:**.conv1d)") + ".")
    if "Cannot convert PEFT target" in error:
        return ("PEFT's transformers-5 MoE conversion reads these names as expert projections: leave them out, or "
                "target the fused experts with targetsel's .parameters()"
                + ("." if selection else "; targetsel.bridge.patch refuses what PEFT cannot adapt."))
    if "is not supported" in error:
        return "Keep the layers the method wraps: add .linear() (& linear in a query)."
    if "modules_to_save" in error or "ModulesToSaveWrapper" in error:
        return "Remove the adapted modules (or their parents) from modules_to_save."
    return "Change the selection or the config so that PEFT accepts it." if selection else (
        "Change the targets or the config fields named above.")


@rule("peft-rewrites-targets", "error")
def peft_rewrites_targets(s: Subject) -> list[Finding]:
    """PEFT rewrites the targets before matching (its transformers-5 MoE conversion) and adapts something else:
    what the user's names match vs what PEFT adapts after rewriting them."""
    outcome = s.outcome
    if outcome is None or outcome.error is not None:
        return []
    from targetsel.bridge.verify import name_matches

    as_written = name_matches(s.model, s.config, convert=False)
    written = {s.index.names[i] for i in as_written}
    adapted = set(outcome.modules)
    lost = [s.index.names[i] for i in as_written if s.index.names[i] not in adapted]
    moved = list(outcome.parameters)
    asked = set(getattr(s.config, "target_parameters", None) or ())
    moved = [p for p in moved if not any(p == a or p.endswith("." + a) for a in asked)]
    extra = [n for n in outcome.modules if n not in written and not _added_by_fields(s, n)]
    if not (lost or moved or extra) or outcome.target_modules == _as_written(s.config.target_modules):
        return []
    parts = []
    if lost:
        parts.append(f"{len(lost)} module(s) the targets name get no adapter ({s.grouped(lost, 4)})")
    if extra:
        parts.append(f"{len(extra)} module(s) they do not name get one ({s.grouped(extra, 4)})")
    if moved:
        parts.append(f"{len(moved)} fused expert parameter(s) are adapted instead ({s.grouped(moved, 3)})")
    model_type = getattr(getattr(s.model, "config", None), "model_type", "?")
    message = (
        f"PEFT's transformers-5 MoE conversion rewrites target_modules for {model_type!r} models before matching "
        f"(to {short_repr(outcome.target_modules)}): " + "; ".join(parts) + ". Build the targets with "
        "targetsel.bridge.patch(config, select(model, ...)), which picks a form PEFT keeps or refuses, and target fused "
        "experts with .parameters()."
    )
    positions = [s.index.position(n) for n in lost + extra]
    return [finding("peft-rewrites-targets", message, s, [p for p in positions if p])]


def _as_written(targets):
    return sorted(targets) if isinstance(targets, (set, frozenset)) else targets


def _added_by_fields(s: Subject, name: str) -> bool:
    return bool(getattr(s.config, "layer_replication", None) or getattr(s.config, "ensure_weight_tying", False))


@rule("parameter-and-module-target", "error", peft_fails=True)
def parameter_and_module_target(s: Subject) -> list[Finding]:
    """A parameter is targeted through target_parameters on a module that target_modules also adapts."""
    outcome = s.outcome
    if outcome is None or outcome.error is None or "not a valid target" not in outcome.error:
        return []
    params = list(getattr(s.config, "target_parameters", None) or [])
    names = [s.index.names[i] for i in s.positions]
    both = [n for n in names if any(f"{n}.{p.rpartition('.')[2]}".endswith(p) for p in params)]
    message = (
        f"target_parameters={short_repr(params)} names parameters of module(s) that target_modules also adapts"
        + (f" ({s.grouped(both, 4)})" if both else "")
        + "; get_peft_model raises ValueError (a layer is either wrapped or has a parameter wrapped, not both). "
        "Drop those modules from target_modules or their parameters from target_parameters."
    )
    return [finding("parameter-and-module-target", message, s, [s.index.position(n) for n in both])]


@rule("modules-to-save-wraps", "error", peft_fails=True)
def modules_to_save_wraps(s: Subject) -> list[Finding]:
    """modules_to_save's suffix rule wraps a target or a module around one; adapter names change and reloading
    breaks. (`_set_trainable` wraps every module whose name ends with an entry — no dot boundary.)"""
    from targetsel.bridge.verify import effective_modules_to_save

    entries = effective_modules_to_save(s.config)
    if not entries or not s.positions:
        return []
    names, parents = s.index.names, s.index.parents
    suffixes = tuple(entries)
    wrapped = {i for i in range(1, len(names)) if names[i].endswith(suffixes)}
    excluded = _excluded_by_peft(s, entries)
    hits, around = [], []
    for i in s.positions:
        p = i if i not in excluded else parents[i]  # a target PEFT itself skips is modules-to-save-overlap
        while p > 0:
            if p in wrapped:
                hits.append(i)
                around.append(p)
                break
            p = parents[p]
    if not hits:
        return []
    shown_wrapped = sorted(dict.fromkeys(names[p] for p in around))
    message = (
        f"modules_to_save={entries!r} (PEFT matches its entries with a plain endswith, no dot boundary"
        + (", and task_type adds the task head" if len(entries) > len(getattr(s.config, "modules_to_save", None) or []) else "")
        + f") wraps {s.grouped(shown_wrapped, 3)}, which is or holds {len(hits)} target(s): {s.grouped([names[i] for i in hits])}. "
        "PEFT then copies the adapted layer into the wrapper: adapter names change "
        "(…modules_to_save.default…), get_peft_model may raise, and the saved adapter does not reload onto the same "
        "modules. Rename the entry to the full module name, or leave those modules out of the targets."
    )
    return [finding("modules-to-save-wraps", message, s, hits)]


def _excluded_by_peft(s: Subject, entries: list[str]) -> set[int]:
    """Selected positions PEFT's matcher skips as modules_to_save (its dot-bounded rule)."""
    from peft.tuners.tuners_utils import _ExcludedModule, check_target_module_exists

    cfg = probe_config(s.config, ".*")
    cfg.modules_to_save = list(entries)
    return {i for i in s.positions if isinstance(check_target_module_exists(cfg, s.index.names[i]), _ExcludedModule)}


@rule("peft-adds-targets", "warning")
def peft_adds_targets(s: Subject) -> list[Finding]:
    """Config fields (ensure_weight_tying, layer_replication) make PEFT adapt modules the targets do not name."""
    outcome = s.outcome
    if outcome is None or outcome.error is not None:
        return []
    from targetsel.bridge.verify import name_matches

    named = {s.index.names[i] for i in name_matches(s.model, s.config)}
    extra = [n for n in outcome.modules if n not in named]
    if not extra:
        return []
    fields = [f for f in ("ensure_weight_tying", "layer_replication") if getattr(s.config, f, None)]
    message = (
        f"{', '.join(fields) or 'The config'} makes PEFT adapt {len(extra)} module(s) that target_modules does not "
        f"name: {s.grouped(extra)}. "
        + ("ensure_weight_tying adds the modules tied to a targeted embedding (lm_head ↔ embed_tokens). " if "ensure_weight_tying" in fields else "")
        + ("layer_replication copies layers before matching, so the targets match the copies too. " if "layer_replication" in fields else "")
        + "Expect them in the adapter; audit() after get_peft_model compares against this full set."
    )
    return [finding("peft-adds-targets", message, s, [])]


@rule("trainable-tokens", "info")
def trainable_tokens(s: Subject) -> list[Finding]:
    """trainable_token_indices adds trainable-token layers to embeddings."""
    outcome = s.outcome
    if outcome is None or not outcome.tokens:
        return []
    message = (
        f"trainable_token_indices adds a trainable-token layer to {s.grouped(list(outcome.tokens), 3)}: those "
        "token rows train in full, beside the adapters; they are saved with the adapter."
    )
    return [finding("trainable-tokens", message, s, [])]

