"""The parts of a query that match nothing on the model: a selection's dead entries.

`glob:**.q_proj | glob:**.v_projj` selects the `q_proj`s and looks like it selects two kinds; `linear -
glob:**.lm_haed` looks like it leaves the head out. A union operand, a subtracted or negated part that
selects no module of the whole model is the selection's counterpart of a config entry that matches
nothing (bridge/config_entries.py). Each part is judged on its own, on the whole model, so a part
that matches modules elsewhere is never called dead.
"""

from __future__ import annotations

from typing import NamedTuple

from targetsel.model.evaluate import select_mask
from targetsel.model.resolution import Resolution
from targetsel.query.printing import to_query
from targetsel.query.tree import walk


class DeadPart(NamedTuple):
    role: str  # "union operand", "subtracted part" or "negated part"
    query: str  # the part as a query
    node: object  # the part as a selector node


def dead_operands(res: Resolution) -> list[DeadPart]:
    """The union operands, subtracted and negated parts of `res.node` that select no module of the model."""
    out: list[DeadPart] = []
    seen = set()
    for node in walk(res.node):
        kind = getattr(node, "kind", None)
        parts = ([("union operand", i) for i in node.items] if kind == "or" else
                 [("subtracted part", node.right)] if kind == "diff" else
                 [("negated part", node.item)] if kind == "not" else [])
        for role, part in parts:
            text = to_query(part)
            if text in seen:
                continue
            seen.add(text)
            if not bool(select_mask(part, res.index)[1:].any()):  # the root is never a target
                out.append(DeadPart(role, text, part))
    return out
