"""How a selection looks: ten readable lines for 40k modules, in a terminal, a notebook or a log.

Rows group modules that share class, shape and grad state, and within those, names that differ
only in numeric segments or sibling alternatives (`model.layers.{0..31}.self_attn.{q,k,v,o}_proj`,
the same patterns `.glob()` accepts). The canonical query heads every form, so what is shown can
be pasted back. Imported lazily by `Selection.__repr__` / `_repr_html_` / `__rich__`.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Optional

from torch import nn

from .grouping import group_names

MAX_ROWS = 12


@dataclass(frozen=True)
class Row:
    pattern: str
    count: int
    cls: str
    shape: str
    state: str
    params: int

    def to_dict(self) -> dict:
        return {"pattern": self.pattern, "count": self.count, "class": self.cls, "shape": self.shape,
                "grad_state": self.state, "params": self.params}


@dataclass(frozen=True)
class Summary:
    query: str
    model_class: str
    selected: int
    modules: int
    params: int  # distinct parameter elements the selection uses
    model_params: int
    rows: tuple[Row, ...]

    @property
    def share(self) -> float:
        return self.params / self.model_params if self.model_params else 0.0


def human(n: float) -> str:
    """2.15B, 12.6M, 4.2K, 512."""
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            value = n / size
            return f"{value:.3g}{unit}" if value < 100 else f"{value:.0f}{unit}"
    return str(int(n))


def shape_of(module: nn.Module) -> str:
    """Linear(4096→4096), Conv1D(768→2304), Embedding(32000×4096), Conv2d(3→64, 14×14), LayerNorm(4096)."""
    if isinstance(module, nn.Embedding):
        return f"{module.num_embeddings}×{module.embedding_dim}"
    in_f, out_f = getattr(module, "in_features", None), getattr(module, "out_features", None)
    if isinstance(in_f, int) and isinstance(out_f, int):
        return f"{in_f}→{out_f}"
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):  # transformers' GPT-2 layer: weight (nx, nf)
        return f"{module.weight.shape[0]}→{module.nf}"
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = "×".join(str(k) for k in module.kernel_size)
        return f"{module.in_channels}→{module.out_channels}, {kernel}"
    normalized = getattr(module, "normalized_shape", None)
    if normalized is not None:
        return "×".join(str(d) for d in normalized)
    return ""


def lora_layer_params(module: nn.Module, r: int) -> int:
    """Parameters LoRA at rank r adds to one layer: r × (fan-in + fan-out) for the layers LoRA wraps.

    Linear-like layers (anything with integer in_features/out_features, quantized ones included)
    and transformers' Conv1D: r·(in+out); Embedding: r·(num+dim); Conv: r·(in·k + out) (lora_A is
    a conv with the layer's kernel, lora_B a 1×1 conv). Other modules get no LoRA weights: 0.
    """
    if isinstance(module, nn.Embedding):
        return r * (module.num_embeddings + module.embedding_dim)
    in_f, out_f = getattr(module, "in_features", None), getattr(module, "out_features", None)
    if isinstance(in_f, int) and isinstance(out_f, int):
        return r * (in_f + out_f)
    if type(module).__name__ == "Conv1D" and hasattr(module, "nf"):
        return r * (module.weight.shape[0] + module.nf)
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = 1
        for k in module.kernel_size:
            kernel *= k
        return r * (module.in_channels * kernel // module.groups + module.out_channels)
    return 0


def lora_params(selection, r: int) -> int:
    """The parameters LoRA at rank `r` adds to the selected modules."""
    from .errors import TargetselError

    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise TargetselError(f"lora_params(r): r is a positive integer rank, got {r!r}")
    return sum(lora_layer_params(m, r) for m in selection.modules().values())


def summarize(selection) -> Summary:
    index = selection._index()
    positions = selection._mask().nonzero().flatten().tolist()
    total, requiring = index.grad_counts()
    numels = index.param_numels()
    keyed: dict[tuple, list[int]] = {}
    for i in positions:
        module = index.modules[i]
        t, g = int(total[i]), int(requiring[i])
        state = "—" if t == 0 else "trainable" if g == t else "frozen" if g == 0 else "mixed"
        keyed.setdefault((type(module).__name__, shape_of(module), state), []).append(i)
    rows = []
    for (cls, shape, state), members in keyed.items():
        by_name = {index.names[i]: i for i in members}
        for group in group_names(list(by_name)):
            rows.append((by_name[group.names[0]], Row(group.pattern, len(group.names), cls, shape, state,
                                                      int(sum(float(numels[by_name[n]]) for n in group.names)))))
    rows.sort(key=lambda pair: pair[0])  # model order
    return Summary(
        query=selection.query,
        model_class=type(selection.model).__name__,
        selected=len(positions),
        modules=index.size - 1,
        params=_distinct_params(selection, positions),
        model_params=int(sum(p.numel() for p in index.params)),
        rows=tuple(r for _, r in rows),
    )


def _distinct_params(selection, positions) -> int:
    seen: set[int] = set()
    count = 0
    index = selection._index()
    for i in positions:
        for p in index.modules[i].parameters():
            if id(p) not in seen:
                seen.add(id(p))
                count += p.numel()
    return count


def summary_rows(selection) -> list[dict]:
    return [row.to_dict() for row in summarize(selection).rows]


# ---------------------------------------------------------------------------- renderers


def _header(s: Summary) -> str:
    return f"Selection({s.query!r}) — {s.selected} of {s.modules} modules of {s.model_class}"


def _totals(s: Summary, r: Optional[int], lora: Optional[int]) -> str:
    text = f"{s.selected} modules · {human(s.params)} parameters ({s.share:.1%} of {human(s.model_params)})"
    if r is not None and lora is not None:
        text += f" · LoRA r={r} adds {human(lora)}"
    return text


def _empty_text(selection) -> str:
    from .diagnose import explain_empty

    return explain_empty(selection)


def render_text(selection, r: Optional[int] = 16, max_rows: int = MAX_ROWS) -> str:
    s = summarize(selection)
    lines = [_header(s)]
    if not s.rows:
        return "\n".join(lines + ["  " + _empty_text(selection)])
    shown = s.rows[:max_rows]
    width = min(max(len(row.pattern) for row in shown), 72)
    kinds = [f"{row.count} × {row.cls}({row.shape})" if row.shape else f"{row.count} × {row.cls}" for row in shown]
    kind_width = max(len(k) for k in kinds)
    for row, kind in zip(shown, kinds):
        pattern = row.pattern if len(row.pattern) <= width else row.pattern[: width - 1] + "…"
        lines.append(f"  {pattern:<{width}}  {kind:<{kind_width}}  {row.state:<9}  {human(row.params):>6} params")
    if len(s.rows) > max_rows:
        rest = s.rows[max_rows:]
        lines.append(f"  … {len(rest)} more groups ({sum(r.count for r in rest)} modules)")
    lines.append(_totals(s, r, lora_params(selection, r) if r else None))
    return "\n".join(lines)


def render_html(selection, r: Optional[int] = 16, max_rows: int = 40) -> str:
    s = summarize(selection)
    e = html.escape
    caption = f"<caption style='text-align:left'><code>{e(s.query)}</code> — {s.selected} of {s.modules} modules of {e(s.model_class)}</caption>"
    if not s.rows:
        return f"<table class='targetsel'>{caption}<tbody><tr><td>{e(_empty_text(selection))}</td></tr></tbody></table>"
    head = "".join(f"<th>{h}</th>" for h in ("group", "count", "class", "shape", "grad state", "parameters"))
    body = []
    for row in s.rows[:max_rows]:
        body.append(
            "<tr>" + f"<td style='text-align:left'><code>{e(row.pattern)}</code></td><td>{row.count}</td>"
            f"<td>{e(row.cls)}</td><td>{e(row.shape)}</td><td>{e(row.state)}</td><td>{human(row.params)}</td>" + "</tr>"
        )
    if len(s.rows) > max_rows:
        rest = s.rows[max_rows:]
        body.append(f"<tr><td colspan='6'>… {len(rest)} more groups ({sum(r.count for r in rest)} modules)</td></tr>")
    foot = f"<tfoot><tr><td colspan='6' style='text-align:left'>{e(_totals(s, r, lora_params(selection, r) if r else None))}</td></tr></tfoot>"
    return f"<table class='targetsel'>{caption}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody>{foot}</table>"


def render_rich(selection, r: Optional[int] = 16, max_rows: int = MAX_ROWS):
    from rich.table import Table

    s = summarize(selection)
    table = Table(title=_header(s), title_justify="left", caption=None, show_edge=False)
    for column, justify in (("group", "left"), ("count", "right"), ("class", "left"), ("shape", "left"),
                            ("grad state", "left"), ("parameters", "right")):
        table.add_column(column, justify=justify, overflow="fold")
    if not s.rows:
        table.caption = _empty_text(selection)
        return table
    style = {"trainable": "green", "frozen": "cyan", "mixed": "yellow"}
    for row in s.rows[:max_rows]:
        table.add_row(row.pattern, str(row.count), row.cls, row.shape, f"[{style.get(row.state, 'dim')}]{row.state}[/]",
                      human(row.params))
    if len(s.rows) > max_rows:
        rest = s.rows[max_rows:]
        table.add_row(f"… {len(rest)} more groups", str(sum(x.count for x in rest)), "", "", "", "")
    table.caption = _totals(s, r, lora_params(selection, r) if r else None)
    table.caption_justify = "left"
    return table
