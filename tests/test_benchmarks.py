"""Smoke run of benchmarks/bench.py on its smallest size. Timings are reported, never asserted."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("targetsel_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smallest_size_runs_and_reports_every_figure(bench):
    result = bench.run(["1k"], real=False, repeat=1, p5=False)
    (row,) = result["rows"]
    assert {"model", "modules", "walk_s", "P1", "P2", "P3_chars", "P3_value", "P3_exact", "P4", "index_MiB_per_100k"} <= set(row)
    assert row["modules"] == sum(1 for _ in bench.build_moe(*bench.SIZES["1k"]).named_modules()) - 1
    assert row["P3_exact"] is True and row["P3_chars"] <= 200
    value = row["P3_value"]
    assert isinstance(value, str) and value.startswith("^")  # one anchored regex for the routed experts
    table = bench.table(result)
    assert table.splitlines()[0].startswith("| model | modules |") and "per-expert MoE 1k" in table


def test_routed_experts_config_is_small_at_full_size_layout(bench):
    """The P3 layout (61 layers × 256 experts) compiles to ≤ 200 characters; checked on names only, fast."""
    from targetsel.text.names_regex import names_regex

    names = [f"model.layers.{l}.mlp.experts.{e}.{p}" for l in range(30, 61) for e in range(256) for p in ("gate_proj", "up_proj", "down_proj")]
    assert len("^" + names_regex(names) + "$") <= 200


def test_main_quick_prints_the_table(bench, capsys):
    assert bench.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "P5 — `get_peft_model`" in out and "| per-expert MoE 1k" in out
    json.dumps(out)
