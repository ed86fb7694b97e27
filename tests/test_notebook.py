"""The notebook one-liner (issue 6): examples/quickstart.ipynb executed by a real Jupyter kernel."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "quickstart.ipynb"


def test_quickstart_notebook_shows_tables():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # The kernel is a new process: let it import this checkout even where it is not pip-installed.
    root = str(NOTEBOOK.parent.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])])
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    table = code[1].outputs[0]["data"]
    html = table["text/html"]
    assert html.startswith("<table") and "<th>grad state</th>" in html
    assert "<code>linear &amp; trainable</code>" in html  # the canonical query is the caption
    assert "language_model.layers.{0..5}.self_attn.{q,k,v,o}_proj" in html
    assert "Selection('linear &amp; trainable')" not in html and "Selection('linear & trainable')" in table["text/plain"]
    findings = "".join(o.get("text", "") for o in code[2].outputs)
    assert "error nested-targets" in findings and "warning subclass-target" in findings
    safe = code[3].outputs[0]["data"]["text/html"]
    assert "<code>linear &amp; trainable - (type:PLoRA | under:(type:PLoRA))</code>" in safe
    printed = "".join(o.get("text", "") for o in code[4].outputs)
    assert "modules, LoRA r=16 adds" in printed
    assert not [o for c in code for o in c.outputs if o.get("output_type") == "error"]
