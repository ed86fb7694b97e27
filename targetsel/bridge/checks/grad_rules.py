"""Rules about `requires_grad`: frozen modules PEFT would adapt anyway, and `trainable` on a frozen model."""

from __future__ import annotations

import re

import torch

from targetsel.bridge.checks.registry import Finding, finding, rule
from targetsel.bridge.checks.subject import EMPTY, Subject
from targetsel.query import nodes as N
from targetsel.model.wrappers import class_name, user_class


@rule("frozen-target", "warning")
def frozen_target(s: Subject) -> list[Finding]:
    """Selected modules whose parameters are all frozen; PEFT adapts them anyway."""
    from targetsel.views.reasons import frozen_root

    total, requiring = (t.tolist() for t in s.grad)  # plain lists: indexing a tensor costs µs per module
    by_design = set(_frozen_by_design(s))
    frozen = [i for i in s.positions if total[i] > 0 and requiring[i] == 0 and i not in by_design]
    if not frozen:
        return []
    roots = list(dict.fromkeys(frozen_root(s.index, i, total, requiring) for i in frozen))
    outer = [s.index.names[r] for r in roots if r not in frozen]
    inside = f", all inside the frozen {s.grouped(outer, 3)}" if outer and len(outer) <= 3 else ""
    if by_design:  # `trainable` would also drop the quantized layers, which never require grad
        leave_out = (f"- under:{outer[0]} (not & trainable: that also drops the {len(by_design)} quantized layers, "
                     "whose packed weights never require grad)" if outer else "- the frozen modules by name")
        chain = "select(model).linear()" + (f".where('!under:{outer[0]}')" if outer else "")
    else:
        leave_out = "add .trainable() (& trainable)" + (f" or - under:{outer[0]}" if outer else "")
        chain = "select(model).linear().trainable()"
    fix = s.fix(
        selection=f"Leave them out: {leave_out}.",
        config="A name-only target_modules cannot tell them apart from the trainable modules of the same name: build the "
               f"targets with targetsel.bridge.patch(config, {chain})"
               + (f", or set exclude_modules=r\"{re.escape(outer[0])}" + r'\..*"' if outer else "") + ".",
    )
    message = (
        f"{len(frozen)} of the {len(s.positions)} selected modules have every parameter frozen "
        f"(requires_grad=False){inside}: {s.grouped([s.index.names[i] for i in frozen])}. PEFT matches by name and "
        f"gives them trainable {s.method} adapters anyway, so the part you froze gets trained. {fix}"
    )
    return [finding("frozen-target", message, s, frozen)]


def _frozen_by_design(s: Subject) -> list[int]:
    """Selected quantized layers that are frozen only because their packed weights cannot require grad.

    A quantized base is frozen by design (QLoRA trains adapters beside it). It still counts as frozen on
    purpose when it sits inside a region the user froze: the outermost frozen ancestor holds float
    weights outside quantized layers that could train (a frozen vision tower's norms), and other parts
    of the model still train. (A quantized layer's own float bias may load frozen: transformers 4.x.)
    """
    from targetsel.model.quantized import quantized_mask, quantized_positions, trainable_storage
    from targetsel.views.reasons import frozen_root

    total, requiring = s.grad
    frozen = [i for i in quantized_positions(s.index, s.positions) if total[i] > 0 and requiring[i] == 0]
    if not frozen or not bool(s.index.requires_grad_vector().any()):
        return frozen  # nothing of the model trains: the QLoRA set-up (prepare_model_for_kbit_training)
    modules = s.index.modules
    in_quantized = {id(p) for i in quantized_mask(s.index).nonzero().flatten().tolist()
                    for p in modules[i].parameters(recurse=False)}
    could_train = s.index.subtree_sum(torch.tensor(
        [trainable_storage(p) and id(p) not in in_quantized for p in s.index.params], dtype=torch.float64))
    return [i for i in frozen if could_train[frozen_root(s.index, i, total, requiring)] == 0]


@rule("quantized-base", "info")
def quantized_base(s: Subject) -> list[Finding]:
    """Selected quantized layers: frozen by design, adapted by PEFT's quantized LoRA layers (QLoRA)."""
    positions = _frozen_by_design(s)
    if not positions:
        return []
    by_class: dict[type, list[int]] = {}
    for i in positions:
        by_class.setdefault(type(s.index.modules[i]), []).append(i)
    parts = []
    for cls, ps in by_class.items():
        wrapper = s.probes[cls].wrapper
        parts.append(f"{user_class(cls).__name__} ×{len(ps)}" + (f" → {wrapper.__module__}.{wrapper.__qualname__}" if wrapper else ""))
    message = (
        f"{len(positions)} selected module(s) are quantized layers ({'; '.join(parts)}): "
        f"{s.grouped([s.index.names[i] for i in positions])}. Their packed weights never require grad — a quantized "
        f"base is frozen by design — and get_peft_model trains only the {s.method} weights it puts beside them (QLoRA). "
        "Nothing to change; `trainable` never selects them, so select them with `linear` or `quantized`."
    )
    return [finding("quantized-base", message, s, positions)]


@rule("all-frozen", "info", runs_on=(EMPTY,))
def all_frozen(s: Subject) -> list[Finding]:
    """`trainable` on a model whose parameters are all frozen: select before freezing."""
    if s.resolution is None:
        return []
    if not any(isinstance(n, N.Flag) and n.kind == "trainable" for n in N.walk(s.resolution.node)):
        return []
    n_params = len(s.index.params)
    if n_params == 0 or bool(s.index.requires_grad_vector().any()):
        return []
    return [
        finding(
            "all-frozen",
            f"trainable() ran on {class_name(s.model)}, whose {n_params} parameters all have requires_grad=False, "
            "so it keeps nothing. If you froze the base model before selecting (get_peft_model and "
            "prepare_model_for_kbit_training freeze it too), select first, then freeze; or select by what the "
            "modules are (.linear() - .under('vision_tower')) instead of by grad state.",
            s,
        )
    ]
