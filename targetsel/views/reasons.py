"""Why an atom of a selector holds or not — for one module (`explain`) or for a whole set of
candidates none of which it keeps (why a selection is empty). One class per atom kind holds both
texts, so a new query atom adds one class here and nothing in `explain.py` or `diagnose.py`.
"""

from __future__ import annotations

import torch

from targetsel.text.suggest import closest
from targetsel.model.evaluate import EvalContext, under_roots
from targetsel.model.quantized import family_of, quantized_mask
from targetsel.query import nodes as N
from targetsel.model.wrappers import class_name


def why_one(node, kept: bool, ctx: EvalContext, pos: int) -> str:
    """Why `node` holds (`kept`) or not for the module at `pos`."""
    reason = _REASONS.get(type(node))
    return reason.one(node, kept, ctx, pos) if reason else ""


def why_none(node, ctx: EvalContext, before: torch.Tensor) -> str:
    """Why `node` keeps none of the candidates in `before`."""
    reason = _REASONS.get(type(node))
    return reason.none(node, ctx, before) if reason else "no candidate satisfies it"


def frozen_root(index, pos: int, total: torch.Tensor, requiring: torch.Tensor) -> int:
    """The outermost ancestor-or-self of `pos` whose parameters are all frozen (`pos` itself if none above)."""
    root = pos
    p = index.parents[pos]
    while p > 0 and total[p] > 0 and requiring[p] == 0:
        root = p
        p = index.parents[p]
    return root


def _positions(mask: torch.Tensor) -> list[int]:
    return mask.nonzero().flatten().tolist()


class _Flag:
    @staticmethod
    def one(node, kept, ctx, pos):
        from targetsel.views.shapes import shape_of

        index, kind = ctx.index, node.kind
        module = index.modules[pos]
        cls = class_name(module)
        if kind in ("trainable", "frozen", "mixed"):
            total, requiring = ctx.grad()
            t, g = int(total[pos]), int(requiring[pos])
            if t == 0:
                return "it has no parameters"
            text = f"{g} of {t} parameters require grad"
            if g == 0:
                root = frozen_root(index, pos, total, requiring)
                if bool(quantized_mask(index)[pos]):
                    text += " (a quantized layer: its packed weight never requires grad)"
                elif root != pos:
                    text += f" (inside the frozen {index.names[root]})"
            return text
        if kind == "linear":
            shape = shape_of(module)
            if kept:
                return f"a {cls}({shape})" if shape else f"a {cls}"
            if pos == index.output_head_position():
                return "the output head (get_output_embeddings()), which linear never selects"
            family = family_of(module)
            if family is not None:  # a known family the installed PEFT has no LoRA layer for
                return f"a {cls} ({family.label}), which the installed PEFT has no LoRA layer for"
            return f"a {cls}, not a layer PEFT's all-linear wraps"
        if kind == "quantized":
            family = family_of(module)
            if kept:
                return f"a {cls} ({family.label if family else 'quantized'})"
            return f"a {cls}, whose weight is not quantized" if family is None else f"a {cls} ({family.label}), not quantized"
        if kind == "leaf":
            n = index.n_children[pos]
            return "no child modules" if n == 0 else f"{n} child module(s)"
        if kind == "outermost":
            return "no selected ancestor in its group" if kept else "an ancestor is selected too"
        return ""

    @staticmethod
    def none(node, ctx, before):
        index = ctx.index
        if node.kind in ("trainable", "frozen", "mixed"):
            n_params = len(index.params)
            n_trainable = int(index.requires_grad_vector().sum())
            quantized = _quantized_text(index, before) if node.kind == "trainable" else ""
            if quantized:
                return quantized
            if node.kind == "trainable" and n_trainable == 0:
                return (
                    f"every parameter has requires_grad=False ({n_params} parameters). "
                    "If you froze the base model before selecting, select first."
                )
            if node.kind == "frozen" and n_trainable == n_params:
                return "every parameter has requires_grad=True: nothing is frozen yet."
            return f"{n_trainable} of {n_params} parameters require grad, but none of the candidates is {node.kind}."
        if node.kind == "linear":
            return "none of the candidates is a Linear/Conv1D (the output head is never linear() here)."
        if node.kind == "quantized":
            return ("none of the candidates is a quantized layer (bitsandbytes, GPTQ, AWQ, HQQ, EETQ, AQLM, FP8, "
                    "compressed-tensors, torchao). A model built from its config class is not quantized: "
                    "targetsel.cli.loading.load_model(DIR) and `targetsel show DIR` install the layers the "
                    "quantization_config of DIR/config.json names.")
        return "no candidate satisfies it"


def _quantized_text(index, before: torch.Tensor) -> str:
    """Why `trainable` keeps none of `before` when quantized layers are among them ('' when none is)."""
    positions = _positions(before & quantized_mask(index))
    if not positions:
        return ""
    kinds: dict[str, int] = {}
    for i in positions:
        name = class_name(index.modules[i])
        kinds[name] = kinds.get(name, 0) + 1
    listed = ", ".join(f"{k} ×{v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])[:4])
    return (
        f"{len(positions)} of the {int(before.sum())} candidates are quantized layers ({listed}), whose packed "
        "weights never require grad: a quantized base model is frozen by design, and QLoRA trains adapters beside "
        "those weights. Select them by what they are, not by grad state: `linear` or `quantized`, minus what you "
        "froze on purpose (e.g. `linear - under:vision_tower`)."
    )


class _Pattern:
    @staticmethod
    def one(node, kept, ctx, pos):
        what = "regex" if isinstance(node, N.NameRegex) else "glob"
        return f"the name matches the {what}" if kept else f"the name does not match the {what}"

    @staticmethod
    def none(node, ctx, before):
        cand = [ctx.index.names[i] for i in _positions(before)[:2000]]
        probe = node.pattern.strip("^$.*") or node.pattern
        near = closest(probe, cand, n=3)
        return "no candidate name matches" + (f"; closest names: {', '.join(near)}" if near else "")


class _Type:
    @staticmethod
    def one(node, kept, ctx, pos):
        cls = class_name(ctx.index.modules[pos])
        if not kept:
            return f"a {cls}, not {'exactly ' if node.exact else ''}a {node.name}"
        return f"a {cls}" if cls == node.name.rsplit(".", 1)[-1] else f"{cls} is a subclass of {node.name}"

    @staticmethod
    def none(node, ctx, before):
        kinds: dict[str, int] = {}
        for i in _positions(before):
            cls = class_name(ctx.index.modules[i])
            kinds[cls] = kinds.get(cls, 0) + 1
        top = ", ".join(f"{k} ×{v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])[:5])
        return f"no candidate is a {node.name}; the candidates are {top}"


class _Under:
    @staticmethod
    def one(node, kept, ctx, pos):
        index = ctx.index
        if node.prefix is not None:
            roots = [r for r in under_roots(index, node.prefix) if r < pos < index.ends[r]]
            return f"inside {index.names[roots[0]]}" if roots else f"not inside any module named {node.prefix!r}"
        return "inside a module the sub-query selects" if kept else "not inside any module the sub-query selects"

    @staticmethod
    def none(node, ctx, before):
        return "none of the candidates lies inside " + (repr(node.prefix) if node.prefix else f"({N.to_query(node.of)})")


class _Layers:
    @staticmethod
    def one(node, kept, ctx, pos):
        index = ctx.index
        container, block, length = index.block_info()
        if container[pos] < 0:
            return "not inside a numbered block"
        where = f"block {block[pos]} of {index.names[container[pos]]} ({length[pos]} blocks)"
        return where if kept else f"{where}, outside {node.ranges and N.to_query(node).split(':', 1)[1]}"

    @staticmethod
    def none(node, ctx, before):
        container, _, length = ctx.index.block_info()
        lengths = sorted({length[i] for i in _positions(before) if container[i] >= 0})
        if not lengths:
            return "none of the candidates sits inside a numbered block (a ModuleList-like container)"
        return f"no candidate's block index is in that range (block containers here have {lengths} blocks)"


class _Component:
    @staticmethod
    def one(node, kept, ctx, pos):
        from targetsel.model.components import component_roots

        roots = component_roots(ctx.index)[node.name]
        if kept:
            return f"inside the {node.name} component ({', '.join(roots)})"
        return f"not in the {node.name} component" + (f" ({', '.join(roots)})" if roots else " (this model has none)")

    @staticmethod
    def none(node, ctx, before):
        from targetsel.model.components import component_roots

        roots = component_roots(ctx.index)
        if not roots[node.name]:
            present = ", ".join(f"{c} ({', '.join(r)})" for c, r in roots.items() if r) or "none"
            return (
                f"this model has no {node.name} component (looked for a {node.name}_config sub-model, the "
                f"embeddings and common module names); its components: {present}"
            )
        return f"none of the candidates is inside the {node.name} component ({', '.join(roots[node.name])})"


class _Where:
    @staticmethod
    def one(node, kept, ctx, pos):
        return f"{node.label}(name, module) returned {kept}"

    @staticmethod
    def none(node, ctx, before):
        return "no candidate satisfies it"


_REASONS = {N.Flag: _Flag, N.NameRegex: _Pattern, N.Glob: _Pattern, N.TypeIs: _Type, N.Under: _Under,
            N.Layers: _Layers, N.Component: _Component, N.Where: _Where}
