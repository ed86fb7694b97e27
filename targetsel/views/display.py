"""How a selection looks: ten readable lines for 40k modules, in a terminal, a notebook or a log.

Rows group modules that share class, shape and grad state, and within those, names that differ
only in numeric segments or sibling alternatives (`model.layers.{0..31}.self_attn.{q,k,v,o}_proj`,
the same patterns `.glob()` accepts). The canonical query heads every form, so what is shown can
be pasted back; a per-layer strip (views/coverage.py) shows which layers hold selected modules. Imported lazily by `Selection.__repr__` / `_repr_html_` / `__rich__`.

Speed matters because a repr runs on every notebook cell: one pass over the selected positions
reads each module's class and shape; grad state, parameter counts and the distinct-parameter
total come from the index's arrays; only the names of each (class, shape, state) bucket go
through `group_names`.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Optional

import torch

from targetsel.model.quantized import buffer_weight_numels, buffer_weight_subtree, logical_numel
from targetsel.model.resolution import Resolution
from targetsel.text.grouping import group_names
from targetsel.views.coverage import layer_strips, shown_strips, strip_cells, strip_lines
from targetsel.views.shapes import _check_rank, _measure, _measure_for, lora_layer_params, lora_params, shape_of  # noqa: F401  (re-exported: display is where users found them)

MAX_ROWS = 12  # text and rich: rows, the "… N more groups" line included; 14 lines with header and totals
MAX_HTML_ROWS = 40  # a notebook table can afford more before it scrolls

COLUMNS = ("group", "count", "class", "shape", "grad state", "parameters")
_RIGHT = ("count", "parameters")  # numbers right-aligned, in every form
# Grad state colours: rich's terminal names, and CSS colours that read on light and dark notebook themes.
RICH_STATE_STYLE = {"trainable": "green", "frozen": "cyan", "mixed": "yellow"}
HTML_STATE_COLOUR = {"trainable": "#2e7d32", "frozen": "#00838f", "mixed": "#b26a00", "—": "#888888"}
_STATES = ("trainable", "frozen", "mixed", "—")  # "—": the module uses no parameters


@dataclass(frozen=True)
class Row:
    pattern: str
    count: int
    cls: str
    shape: str
    state: str
    params: int  # parameter elements the row's modules use, summed module by module

    def to_dict(self) -> dict:
        return {"pattern": self.pattern, "count": self.count, "class": self.cls, "shape": self.shape,
                "grad_state": self.state, "params": self.params}


@dataclass(frozen=True)
class Summary:
    query: str
    model_class: str
    selected: int
    modules: int
    params: int  # distinct parameter elements the selection uses (tied weights once)
    model_params: int
    rows: tuple[Row, ...]
    lora_per_rank: int = 0  # LoRA parameters at r=1; LoRA's count is linear in r

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


# --------------------------------------------------------------------- shapes and LoRA sizes
# Per class, one function module → (shape text, LoRA parameters at r=1). Chosen once per class,
# so the per-module cost is a couple of attribute reads.


def _param_sizes(index) -> torch.Tensor:
    sizes = index._cached.get("display_param_sizes")
    if sizes is None:
        sizes = index._cached["display_param_sizes"] = torch.tensor(
            [logical_numel(p) for p in index.params], dtype=torch.int64)
    return sizes


def _distinct_params(index, mask: torch.Tensor) -> int:
    """Elements of the distinct parameters registered anywhere inside a selected module's subtree (and
    the logical weights quantized layers there keep in buffers)."""
    covered = mask | index.ancestors_mask(mask)
    in_buffers = int(buffer_weight_numels(index)[covered].sum())
    if not index.params:
        return in_buffers
    reg_pos, reg_param = index._reg_pos_t(), index._reg_param_t()
    registered = (index._reg_sign_t() > 0) & covered[reg_pos]  # -1 entries only correct subtree sums
    used = torch.zeros(len(index.params), dtype=torch.bool)
    used[reg_param[registered]] = True
    return int(_param_sizes(index)[used].sum()) + in_buffers


def summarize(res: Resolution) -> Summary:
    index, mask = res.index, res.mask
    pos_t = mask.nonzero().flatten()
    total, requiring = index.grad_counts()
    t, g = total[pos_t], requiring[pos_t]
    state_t = torch.where(t == 0, 3, torch.where(g == t, 0, torch.where(g == 0, 1, 2)))
    positions = pos_t.tolist()
    states = state_t.tolist()
    numels = (index.param_numels() + buffer_weight_subtree(index))[pos_t].tolist()  # logical sizes
    class_ids = index.class_ids_tensor()[pos_t].tolist()
    measures = [_measure_for(cls) for cls in index.classes]
    modules, names = index.modules, index.names

    buckets: dict[tuple, list[int]] = {}  # (class id, shape, state) → offsets into `positions`
    lora_unit = 0
    for k, (i, cid, state) in enumerate(zip(positions, class_ids, states)):
        try:
            shape, unit = measures[cid](modules[i])
        except (AttributeError, TypeError, ValueError):
            shape, unit = "", 0
        lora_unit += unit
        key = (cid, shape, state)
        bucket = buckets.get(key)
        if bucket is None:
            buckets[key] = [k]
        else:
            bucket.append(k)

    rows: list[tuple[int, Row]] = []
    for (cid, shape, state), offsets in buckets.items():
        offset_of = {names[positions[k]]: k for k in offsets}
        for group in group_names(list(offset_of)):
            members = [offset_of[n] for n in group.names]
            rows.append((positions[members[0]], Row(
                group.pattern, len(members), index.classes[cid].__name__, shape, _STATES[state],
                int(sum(numels[k] for k in members)))))
    rows.sort(key=lambda pair: pair[0])  # model order of each row's first module
    return Summary(
        query=res.query,
        model_class=res.model_class,
        selected=len(positions),
        modules=index.size - 1,
        params=_distinct_params(index, mask),
        model_params=(int(_param_sizes(index).sum()) if index.params else 0) + int(buffer_weight_numels(index).sum()),
        rows=tuple(r for _, r in rows),
        lora_per_rank=lora_unit,
    )


def summary_rows(res: Resolution) -> list[dict]:
    """The grouped rows as plain data (pattern, count, class, shape, grad_state, params), model order."""
    return [row.to_dict() for row in summarize(res).rows]


# --------------------------------------------------------------------- renderers


def _header(s: Summary) -> str:
    return f"Selection({s.query!r}) — {s.selected} of {s.modules} modules of {s.model_class}"


def _totals(s: Summary, r: Optional[int]) -> str:
    text = f"{s.selected} modules · {human(s.params)} parameters ({s.share:.1%} of {human(s.model_params)})"
    if r:
        text += f" · LoRA r={r} adds {human(r * s.lora_per_rank)}"
    return text


def _more(rest: tuple[Row, ...]) -> str:
    return f"… {len(rest)} more groups ({sum(r.count for r in rest)} modules)"


def _cut(rows: tuple[Row, ...], max_rows: int) -> tuple[tuple[Row, ...], tuple[Row, ...]]:
    """(shown, rest): at most `max_rows` lines in all, so a cut leaves one line for '… N more'."""
    if len(rows) <= max_rows:
        return rows, ()
    keep = max(max_rows - 1, 1)
    return rows[:keep], rows[keep:]


def _empty_text(res: Resolution) -> str:
    from targetsel.views.diagnose import explain_empty

    return explain_empty(res)


def _kind(row: Row) -> str:
    return f"{row.count} × {row.cls}({row.shape})" if row.shape else f"{row.count} × {row.cls}"


def render_text(res: Resolution, r: Optional[int] = 16, max_rows: int = MAX_ROWS) -> str:
    """Plain, aligned, no ANSI: header with the query, one line per group, the per-layer strip, totals."""
    if r:
        _check_rank(r)
    s = summarize(res)
    lines = [_header(s)]
    if not s.rows:
        return "\n".join(lines + ["  " + _empty_text(res)])
    strip = strip_lines(layer_strips(res.index, res.mask))  # the strip's lines count against max_rows
    shown, rest = _cut(s.rows, max(max_rows - len(strip), 2))
    width = min(max(len(row.pattern) for row in shown), 72)
    kinds = [_kind(row) for row in shown]
    kind_width = max(len(k) for k in kinds)
    for row, kind in zip(shown, kinds):
        pattern = row.pattern if len(row.pattern) <= width else row.pattern[: width - 1] + "…"
        lines.append(f"  {pattern:<{width}}  {kind:<{kind_width}}  {row.state:<9}  {human(row.params):>6} params")
    if rest:
        lines.append("  " + _more(rest))
    lines += ["  " + line for line in strip]
    lines.append(_totals(s, r))
    return "\n".join(lines)


def render_html(res: Resolution, r: Optional[int] = 16, max_rows: int = MAX_HTML_ROWS) -> str:
    """A real <table>: the query as caption, the COLUMNS as <thead>, the per-layer strip and the totals as
    <tfoot>; numbers right-aligned and the grad state coloured, as rich does; all text escaped."""
    if r:
        _check_rank(r)
    s = summarize(res)
    e = html.escape
    caption = (f"<caption style='text-align:left'><code>{e(s.query)}</code> — {s.selected} of {s.modules} "
               f"modules of {e(s.model_class)}</caption>")
    if not s.rows:
        return f"<table class='targetsel'>{caption}<tbody><tr><td>{e(_empty_text(res))}</td></tr></tbody></table>"
    head = "".join(f"<th{_align(h)}>{h}</th>" for h in COLUMNS)
    body = []
    shown, rest = _cut(s.rows, max_rows)
    right = " style='text-align:right'"
    for row in shown:
        body.append(
            f"<tr><td style='text-align:left'><code>{e(row.pattern)}</code></td><td{right}>{row.count}</td>"
            f"<td>{e(row.cls)}</td><td>{e(row.shape)}</td>"
            f"<td style='color:{HTML_STATE_COLOUR.get(row.state, HTML_STATE_COLOUR['—'])}'>{e(row.state)}</td>"
            f"<td{right}>{human(row.params)}</td></tr>"
        )
    if rest:
        body.append(f"<tr><td colspan='{len(COLUMNS)}'>{e(_more(rest))}</td></tr>")
    foot = "".join(f"<tr><td colspan='{len(COLUMNS)}' style='text-align:left'>{text}</td></tr>"
                   for text in [*_html_strips(res), e(_totals(s, r))])
    return f"<table class='targetsel'>{caption}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody><tfoot>{foot}</tfoot></table>"


def _align(column: str) -> str:
    return " style='text-align:right'" if column in _RIGHT else ""


def _html_strips(res: Resolution) -> list[str]:
    """The per-layer strip as HTML rows' contents: covered cells coloured as trainable adapters."""
    shown, more = shown_strips(layer_strips(res.index, res.mask))
    out = []
    for st in shown:
        colour = HTML_STATE_COLOUR["trainable"]
        cells = re.sub("▮+", lambda m: f"<span style='color:{colour}'>{m.group()}</span>", html.escape(strip_cells(st)))
        out.append(f"layers: <code>{html.escape(st.container)}</code> <span class='targetsel-layers'>{cells}</span>")
    if more:
        out[-1] += f" · {more} more stack(s) with adapters"
    return out


def render_rich(res: Resolution, r: Optional[int] = 16, max_rows: int = MAX_ROWS):
    """A rich Table (title: the query; caption: totals or why it is empty). Colour only for grad state,
    which rich drops under NO_COLOR or on a non-terminal."""
    from rich.markup import escape
    from rich.table import Table

    if r:
        _check_rank(r)
    s = summarize(res)
    table = Table(title=escape(_header(s)), title_justify="left", show_edge=False, caption_justify="left")
    for column in COLUMNS:
        table.add_column(column, justify="right" if column in _RIGHT else "left", overflow="fold")
    if not s.rows:
        table.caption = escape(_empty_text(res))
        return table
    style = RICH_STATE_STYLE
    shown, rest = _cut(s.rows, max_rows)
    for row in shown:
        table.add_row(escape(row.pattern), str(row.count), escape(row.cls), escape(row.shape),
                      f"[{style.get(row.state, 'dim')}]{row.state}[/]", human(row.params))
    if rest:
        table.add_row(f"… {len(rest)} more groups", str(sum(x.count for x in rest)), "", "", "", "")
    table.caption = escape("\n".join([*strip_lines(layer_strips(res.index, res.mask)), _totals(s, r)]))
    return table
