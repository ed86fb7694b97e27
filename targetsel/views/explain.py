"""`Selection.explain(name)`: why one module is in a selection or not, clause by clause.

    >>> print(select(model, "linear & trainable").explain("vision_tower.layers.0.mlp.fc1"))
    vision_tower.layers.0.mlp.fc1: not selected by 'linear & trainable'
      ✓ linear — a Linear(256→1024)
      ✗ trainable — 0 of 2 parameters require grad (inside the frozen vision_tower)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from targetsel.query import nodes as N
from targetsel.errors import UnknownNameError, closest
from targetsel.model.evaluate import EvalContext, evaluate, under_roots


@dataclass(frozen=True)
class Clause:
    query: str  # the clause, as a query
    kept: bool  # does the clause hold for the module
    why: str
    depth: int = 0

    def __str__(self) -> str:
        mark = "✓" if self.kept else "✗"
        return f"{'  ' * (self.depth + 1)}{mark} {self.query}" + (f" — {self.why}" if self.why else "")


@dataclass(frozen=True)
class Explanation:
    name: str
    query: str
    selected: bool
    clauses: tuple[Clause, ...] = field(default=())

    def __bool__(self) -> bool:
        return self.selected

    def __str__(self) -> str:
        head = f"{self.name}: {'selected' if self.selected else 'not selected'} by {self.query!r}"
        return "\n".join([head, *(str(c) for c in self.clauses)])


def explain(selection, name: str) -> Explanation:
    index = selection._index()
    pos = index.position(name) if isinstance(name, str) else None
    if not pos:  # None, or 0 (the root, which no selection holds)
        near = closest(str(name), [n for n in index.names if n], n=3)
        raise UnknownNameError(
            f"explain({name!r}): {type(selection.model).__name__} ({index.size - 1} modules) has no module named "
            f"{name!r}" + (f"; did you mean {', '.join(repr(n) for n in near)}?" if near else "")
            + (" (the root module is never selected)" if pos == 0 else "")
        )
    ctx = EvalContext(index)
    universe = index.universe()
    clauses: list[Clause] = []

    def holds(node) -> bool:
        return bool(evaluate(node, ctx, universe)[pos])

    def visit(node, depth: int) -> None:
        kept = holds(node)
        if isinstance(node, (N.And, N.Or)):
            inner = depth
            if not (depth == 0 and isinstance(node, N.And)):  # the top-level & chain is the clause list itself
                clauses.append(Clause(N.to_query(node), kept, "all of:" if isinstance(node, N.And) else "any of:", depth))
                inner = depth + 1
            for item in node.items:
                visit(item, inner)
            return
        if isinstance(node, N.Not):
            clauses.append(Clause(N.to_query(node), kept, "the clause below does not hold" if kept else "the clause below holds", depth))
            visit(node.item, depth + 1)
            return
        if isinstance(node, N.Diff):
            clauses.append(Clause(N.to_query(node), kept, "in the left part, not in the right" if kept else
                                  ("in the right part" if holds(node.left) else "not in the left part"), depth))
            visit(node.left, depth + 1)
            visit(node.right, depth + 1)
            return
        clauses.append(Clause(N.to_query(node), kept, _why(node, kept, index, pos, ctx), depth))

    visit(selection._node, 0)
    return Explanation(name=name, query=selection.query, selected=bool(selection._mask()[pos]), clauses=tuple(clauses))


def _why(node, kept: bool, index, pos: int, ctx) -> str:
    from targetsel.views.display import shape_of

    module = index.modules[pos]
    cls = type(module).__name__
    if isinstance(node, N.Flag):
        kind = node.kind
        if kind in ("trainable", "frozen", "mixed"):
            total, requiring = ctx.grad()
            t, g = int(total[pos]), int(requiring[pos])
            if t == 0:
                return "it has no parameters"
            text = f"{g} of {t} parameters require grad"
            if g == 0:
                from targetsel.views.diagnose import frozen_root

                root = frozen_root(index, pos, total, requiring)
                if root != pos:
                    text += f" (inside the frozen {index.names[root]})"
            return text
        if kind == "linear":
            shape = shape_of(module)
            if kept:
                return f"a {cls}({shape})" if shape else f"a {cls}"
            if pos == index.output_head_position():
                return "the output head (get_output_embeddings()), which linear never selects"
            return f"a {cls}, not a layer PEFT's all-linear wraps"
        if kind == "leaf":
            n = index.n_children[pos]
            return "no child modules" if n == 0 else f"{n} child module(s)"
        if kind == "outermost":
            return "no selected ancestor in its group" if kept else "an ancestor is selected too"
        return ""
    if isinstance(node, N.TypeIs):
        if not kept:
            return f"a {cls}, not {'exactly ' if node.exact else ''}a {node.name}"
        return f"a {cls}" if cls == node.name.rsplit(".", 1)[-1] else f"{cls} is a subclass of {node.name}"
    if isinstance(node, N.NameRegex):
        return "the name matches the regex" if kept else "the name does not match the regex"
    if isinstance(node, N.Glob):
        return "the name matches the glob" if kept else "the name does not match the glob"
    if isinstance(node, N.Under):
        if node.prefix is not None:
            roots = [r for r in under_roots(index, node.prefix) if r < pos < index.ends[r]]
            return f"inside {index.names[roots[0]]}" if roots else f"not inside any module named {node.prefix!r}"
        return "inside a module the sub-query selects" if kept else "not inside any module the sub-query selects"
    if isinstance(node, N.Layers):
        container, block, length = index.block_info()
        if container[pos] < 0:
            return "not inside a numbered block"
        where = f"block {block[pos]} of {index.names[container[pos]]} ({length[pos]} blocks)"
        return where if kept else f"{where}, outside {node.ranges and N.to_query(node).split(':', 1)[1]}"
    if isinstance(node, N.Component):
        from targetsel.model.components import component_roots

        roots = component_roots(index)[node.name]
        if kept:
            return f"inside the {node.name} component ({', '.join(roots)})"
        return f"not in the {node.name} component" + (f" ({', '.join(roots)})" if roots else " (this model has none)")
    if isinstance(node, N.Where):
        return f"{node.label}(name, module) returned {kept}"
    return ""
