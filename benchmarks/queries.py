"""One further query per kind of atom, on a model whose index is already built (bench.py's P2 table).

Each row is timed twice against the model's walk:
- **repeated**: the same query again, best of N — what a notebook or a training script re-running a
  cell pays; an index remembers what each pattern matched, so this reads masks;
- **new pattern**: the query on an index that has not seen its patterns yet (`forget_patterns`
  drops what the index remembers per regex, glob, `under:` name and type, and the grad-state sums)
  — what a user exploring with a regex never typed before pays.

Rounds alternate a walk and the query, best of each: load on the shared machine falls on both alike,
and each figure is one run right after a walk, in the caches the walk left, as a further query in a
real script meets them (the grad-state rows read every parameter's `requires_grad`, and pay those
cache misses; a query run twice back to back would measure its own warm caches instead).
"""

from __future__ import annotations

import operator
from typing import Callable

from torch import nn

from targetsel import select
from targetsel.model.index import get_index
from targetsel.model.matches import forget_patterns

# (kind, how the query is written): the five rows first, then one row per remaining kind.
QUERIES: list[tuple[str, str, Callable]] = [
    ("type + regex", 'select(m).type(nn.Linear).name(r"self_attn\\.(q|v)_proj$")',
     lambda m: select(m).type(nn.Linear).name(r"self_attn\.(q|v)_proj$")),
    ("regex over all names", 'select(m).name(r"(gate|router)$")', lambda m: select(m).name(r"(gate|router)$")),
    ("glob", 'select(m).linear().glob("**.self_attn.{q,v}_proj")', lambda m: select(m).linear().glob("**.self_attn.{q,v}_proj")),
    ("under (selection) + layers", '"linear & under:(glob:model.layers.*.self_attn) & layers:-8.."',
     lambda m: select(m, "linear & under:(glob:model.layers.*.self_attn) & layers:-8..")),
    ("trainable + layers", 'select(m).trainable().linear().layers("0..3")', lambda m: select(m).trainable().linear().layers("0..3")),
    ("regex over all names, not literal", 'select(m).name(r"experts\\.\\d+\\.down_proj$")',
     lambda m: select(m).name(r"experts\.\d+\.down_proj$")),
    ("regex matching every name", 'select(m).name(".")', lambda m: select(m).name(".")),
    ("glob over all names", '"glob:**.experts.*.down_proj"', lambda m: select(m, "glob:**.experts.*.down_proj")),
    ("type", 'select(m).type("LayerNorm")', lambda m: select(m).type("LayerNorm")),
    ("linear", '"linear"', lambda m: select(m, "linear")),
    ("under (name)", '"under:self_attn"', lambda m: select(m, "under:self_attn")),
    ("layers", 'select(m).layers("0..3")', lambda m: select(m).layers("0..3")),
    ("component", '"component:head"', lambda m: select(m, "component:head")),
    ("frozen", "select(m).frozen()", lambda m: select(m).frozen()),
    ("mixed", "select(m).mixed()", lambda m: select(m).mixed()),
    ("where (query string)", 'select(m).where("linear & glob:**.q_proj")', lambda m: select(m).where("linear & glob:**.q_proj")),
    ("not / minus", '"linear & !glob:**.experts.** - under:shared_experts"',
     lambda m: select(m, "linear & !glob:**.experts.** - under:shared_experts")),
    ("or of atoms", '"type:LayerNorm | name:/gate$/ | layers:0 & glob:**.up_proj"',
     lambda m: select(m, "type:LayerNorm | name:/gate$/ | layers:0 & glob:**.up_proj")),
]


def measure_atoms(model: nn.Module, walk: Callable, timed: Callable, repeat: int) -> list[dict]:
    """Every row of QUERIES on `model` (its index built), with some parameters frozen for the grad-state rows."""
    layers = model.model.layers
    frozen = list(layers[len(layers) // 2].parameters()) + [layers[-1].mlp.gate.weight]
    for p in frozen:
        p.requires_grad_(False)
    try:
        index = get_index(model)
        rows = []
        for kind, written, query in QUERIES:
            def once(query=query):
                query(model).names()

            once()
            # Interleaved rounds, best of each: load on the shared machine falls on the walk and the query alike.
            walks, repeats, news = [], [], []
            for _ in range(max(2, repeat)):  # a walk right before each figure: neither runs in the other's warm caches
                walks.append(timed(lambda: walk(model), 1))
                repeats.append(timed(once, 1))  # after the query ran once before the rounds: its patterns are remembered
                walks.append(timed(lambda: walk(model), 1))
                news.append(timed(once, 1, setup=lambda: forget_patterns(get_index(model))))
            t_walk, repeated, new = min(walks), min(repeats), min(news)
            rows.append({"kind": kind, "query": written, "n": len(query(model)), "repeated": repeated / t_walk,
                         "new": new / t_walk, "repeated_ms": repeated * 1e3, "new_ms": new * 1e3})
        assert get_index(model) is index, "the index was rebuilt while measuring further queries"
        return rows
    finally:
        for p in frozen:
            p.requires_grad_(True)


def measure_grad_floor(model: nn.Module, walk: Callable, timed: Callable, repeat: int) -> dict:
    """The floor of the grad-state rows: every parameter's `requires_grad` read as targetsel reads
    it, and nothing else, in rounds beside a walk (as the rows are measured)."""
    params = get_index(model).params
    read = operator.attrgetter("requires_grad")
    walks, reads = [], []
    for _ in range(max(2, repeat)):
        walks.append(timed(lambda: walk(model), 1))
        reads.append(timed(lambda: bytearray(map(read, params)), 1))
    return {"parameters": len(params), "ratio": min(reads) / min(walks)}


def atoms_table(atoms: dict, target: float) -> str:
    lines = [f"P2 — a further query on the built index of the {atoms['model']} ({atoms['modules']:,} modules), per kind of atom, "
             f"against a walk measured beside it (target ≤ {target:g}×). *Repeated*: the same query again (the index "
             "remembers what each pattern matched); *new pattern*: patterns the index has not seen yet.", "",
             "| kind | query | selected | repeated | new pattern |", "|---|---|---:|---:|---:|"]
    for r in atoms["rows"]:
        def mark(x):
            return "✓" if x <= target else "✗"

        lines.append(f"| {r['kind']} | `{r['query']}` | {r['n']:,} | {r['repeated']:.3f}× {mark(r['repeated'])} "
                     f"| {r['new']:.3f}× {mark(r['new'])} |")
    floor = atoms.get("grad_floor")
    if floor is not None:
        lines += ["", f"The grad-state rows (`frozen`, `mixed`, and `trainable` over every module) read `requires_grad` "
                  f"afresh at each query, by design: torch tells no one when `requires_grad_()` is called, so a cached "
                  f"flag could be stale. Reading the {floor['parameters']:,} flags and doing nothing else costs "
                  f"**{floor['ratio']:.3f}×** the walk here: each parameter's tensor is cold in the CPU cache after a walk, "
                  f"and this is the floor of those rows."]
    return "\n".join(lines)
