"""The notebook one-liner: examples/quickstart.ipynb executed by a real Jupyter kernel.

The kernel runs the interpreter running this test, whatever kernelspecs the machine has: a
"python3" spec is written to a temporary JUPYTER_PATH (searched before the user's and the
system's), so a fresh venv from `pip install -e ".[test]"` needs no `ipykernel install` step
and never picks up another Python that lacks this checkout.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "examples" / "quickstart.ipynb"


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    spec_dir = tmp_path_factory.mktemp("jupyter") / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (targetsel tests)",
        "language": "python",
    }))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(spec_dir.parent.parent))
        mp.setenv("HF_HUB_OFFLINE", "1")
        # The kernel is a new process: let it import this checkout even where it is not pip-installed.
        mp.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
        nb = nbformat.read(NOTEBOOK, as_version=4)
        client = NotebookClient(nb, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(NOTEBOOK.parent)}})
        client.execute()
    assert client.km is None or client.km.kernel_spec.argv[0] == sys.executable
    return [c for c in nb.cells if c.cell_type == "code"]


def _display(cell) -> dict:
    (out,) = [o for o in cell.outputs if o.get("output_type") == "execute_result"]
    return out["data"]


def _printed(cell) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream" and o.get("name") == "stdout")


def test_no_cell_raised(executed):
    assert not [o for c in executed for o in c.outputs if o.get("output_type") == "error"]


def test_query_one_liner_shows_a_table(executed):
    data = _display(executed[1])
    html = data["text/html"]
    assert html.startswith("<table") and "<thead><tr><th>group</th><th style='text-align:right'>count</th><th>class</th>" in html
    assert "<code>linear &amp; trainable</code>" in html  # the canonical query is the caption
    assert ("<code>language_model.layers.{0..5}.self_attn.{q,k,v,o}_proj</code></td><td style='text-align:right'>24</td>"
            "<td>PLoRA</td>") in html  # numbers right-aligned, as in the terminal
    assert "<td style='color:#2e7d32'>trainable</td>" in html  # the grad state coloured, as in the terminal
    # the per-layer strip sits in the footer, above the totals
    assert ("<td colspan='6' style='text-align:left'>layers: <code>language_model.layers</code> <span class='targetsel-layers'>"
            "<span style='color:#2e7d32'>▮▮▮▮▮▮</span> 6/6</span></td>") in html
    assert re.search(r"92 modules · [\d.]+M parameters \([\d.]+% of [\d.]+M\) · LoRA r=16 adds", html)
    # plain text stays for consoles and logs: the query unescaped on the first line
    assert data["text/plain"].splitlines()[0] == "Selection('linear & trainable') — 92 of 177 modules of DemoVLM"


def test_check_cell_names_the_incidents(executed):
    printed = _printed(executed[2])
    assert "error nested-targets" in printed and "warning subclass-target" in printed


def test_fluent_chain_shows_its_canonical_query(executed):
    html = _display(executed[3])["text/html"]
    assert "<code>under:vision_tower &amp; linear &amp; layers:-2..</code>" in html
    assert "<code>vision_tower.layers.{2,3}.self_attn.{q,k,v,out}_proj</code></td><td style='text-align:right'>8</td>" in html
    assert "<td style='color:#00838f'>frozen</td>" in html and ">trainable</td>" not in html
    assert "layers: <code>vision_tower.layers</code> <span class='targetsel-layers'>▯▯<span style='color:#2e7d32'>▮▮</span> 2/4 (2,3)</span>" in html
    assert "  layers: vision_tower.layers ▯▯▮▮ 2/4 (2,3)" in _display(executed[3])["text/plain"].splitlines()


def test_patch_cells(executed):
    safe = _display(executed[4])["text/html"]
    assert "<code>linear &amp; trainable - (type:PLoRA | under:(type:PLoRA))</code>" in safe
    assert "Plora" not in safe
    # r·(in+out) by hand: projector 256→512 and 512→512, 12 × 512→1536, 6 × 1536→512
    lora = 16 * ((256 + 512) + (512 + 512) + 12 * (512 + 1536) + 6 * (1536 + 512))
    assert _printed(executed[5]) == f"20 modules, LoRA r=16 adds {lora:,} parameters\n"
    # config.target_modules: the shortest exact form here is the suffix set
    assert ast.literal_eval(_display(executed[5])["text/plain"]) == {"linear_1", "linear_2", "gate_proj", "up_proj", "down_proj"}
