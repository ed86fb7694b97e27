"""Plain rendering of a selection (the rich/HTML views build on the same grouping)."""

from __future__ import annotations


def render_text(selection) -> str:
    names = selection.names()
    head = f"Selection({selection.query!r}) — {len(names)} module(s) of {type(selection.model).__name__}"
    shown = "\n".join(f"  {n}" for n in names[:20])
    more = f"\n  … {len(names) - 20} more" if len(names) > 20 else ""
    return head + ("\n" + shown + more if names else "")


def render_html(selection) -> str:
    import html

    return "<pre>" + html.escape(render_text(selection)) + "</pre>"
