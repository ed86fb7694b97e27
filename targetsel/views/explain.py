"""`Selection.explain(name)`: why one module is in a selection or not, clause by clause.

    >>> print(select(model, "linear & trainable").explain("vision_tower.layers.0.mlp.fc1"))
    vision_tower.layers.0.mlp.fc1: not selected by 'linear & trainable'
      ✓ linear — a Linear(256→1024)
      ✗ trainable — 0 of 2 parameters require grad (inside the frozen vision_tower)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from targetsel.query import nodes as N
from targetsel.errors import UnknownNameError
from targetsel.model.evaluate import EvalContext, evaluate
from targetsel.model.resolution import Resolution
from targetsel.text.suggest import suggest
from targetsel.views.reasons import why_one


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


def explain(res: Resolution, name: str) -> Explanation:
    index = res.index
    pos = index.position(name) if isinstance(name, str) else None
    if not pos:  # None, or 0 (the root, which no selection holds)
        hint = suggest(str(name), [n for n in index.names if n], show=repr)
        raise UnknownNameError(
            f"explain({name!r}): {res.model_class} ({res.module_count} modules) has no module named "
            f"{name!r}" + (f"; {hint}" if hint else "")
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
        clauses.append(Clause(N.to_query(node), kept, why_one(node, kept, ctx, pos), depth))

    visit(res.node, 0)
    return Explanation(name=name, query=res.query, selected=bool(res.mask[pos]), clauses=tuple(clauses))
