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
    result = bench.run(["1k"], real=False, repeat=1, p5=False, fresh=2)
    (row,) = result["rows"]
    assert {"model", "modules", "walk_s", "P1", "P1_fresh", "P2", "P3_chars", "P3_value", "P3_exact", "P4", "patch",
            "patch_parts", "index_MiB_per_100k"} <= set(row)
    assert list(row["patch_parts"]) == list(bench.PATCH_PARTS) and all(x > 0 for x in row["patch_parts"].values())
    assert len(row["P1_fresh"]) == 2 and row["P1"] == min(row["P1_fresh"])
    assert row["modules"] == sum(1 for _ in bench.build_moe(*bench.SIZES["1k"]).named_modules()) - 1
    assert row["P3_exact"] is True and row["P3_chars"] <= 200
    value = row["P3_value"]
    assert isinstance(value, str) and value.startswith("^")  # one anchored regex for the routed experts
    # every kind of atom has its named row, each timed repeated and with patterns new to the index
    from queries import QUERIES

    atoms = result["atoms"]["rows"]
    assert [r["kind"] for r in atoms] == [kind for kind, _, _ in QUERIES] and all(r["n"] >= 0 for r in atoms)
    assert {"regex over all names", "glob", "type", "under (name)", "layers", "component", "frozen", "mixed", "trainable + layers",
            "where (query string)", "not / minus", "or of atoms"} <= {r["kind"] for r in atoms}
    assert all(r["repeated"] > 0 and r["new"] > 0 for r in atoms)
    floor = result["atoms"]["grad_floor"]
    assert floor["parameters"] == len(list(bench.build_moe(*bench.SIZES["1k"]).parameters())) and floor["ratio"] > 0
    table = bench.table(result)
    assert table.splitlines()[0].startswith("| model | modules |") and "per-expert MoE 1k" in table
    assert "| regex over all names |" in table and "P1 on 2 fresh" in table
    assert f"Reading the {floor['parameters']:,} flags and doing nothing else costs **{floor['ratio']:.3f}×**" in table
    assert "(again " in table  # a first patch() and a further one


def test_growth_table_reports_cost_per_module(bench):
    rows = [{"modules": 1000, "walk_s": 0.002, "P1": 0.9}, {"modules": 100_000, "walk_s": 0.3, "P1": 0.8}]
    lines = bench.growth_lines(rows)
    assert "| 1,000 | 2.00 | 1.80 | 0.90× |" in lines and "| 100,000 | 3.00 | 2.40 | 0.80× |" in lines
    assert lines[-1] == "From 1,000 to 100,000 modules a first query's cost per module changes 1.33× (the walk's own: 1.50×)."


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


def test_table_says_where_patch_time_goes_on_the_target_size(bench):
    parts = dict(zip(bench.PATCH_PARTS, (0.5, 0.75, 0.5)))
    row = {"model": "per-expert MoE 63k (61×256)", "modules": 63_384, "walk_s": 0.25, "P1": 0.9, "P2": 0.02,
           "patch": 2.0, "patch_again": 1.5, "patch_parts": parts, "index_MiB_per_100k": 50.0}
    small = {**row, "model": "per-expert MoE 1k (6×40)", "modules": 1_055}
    text = bench.table({"rows": [small, row]})
    (line,) = [ln for ln in text.splitlines() if ln.startswith("Where `patch()`")]
    assert "per-expert MoE 63k" in line and all(f"{label} {x:.2f}×" in line for label, x in parts.items())
    assert "a first call (2.00×) builds the per-index tables it needs" in line and ", 0.50×;" in line
    assert "| 2.00× ✓ (again 1.50×) |" in text
    assert line.endswith("(together 1.75×; building the new config and the form loop cost the rest).")


@pytest.fixture(scope="module")
def cli(bench):  # loading bench.py put benchmarks/ on sys.path
    import cli_timings

    return cli_timings


def test_cli_table_names_every_command_with_its_floor(cli):
    rows = [{"label": label, "seconds": 1.0 + i, "peak_MiB": 10.0, "exit": 0, "target": target, "floor": floor}
            for i, (label, _, target, _, floor) in enumerate(cli.COMMANDS)]
    rows[1]["imports_torch"] = False
    text = cli.table(rows)
    for label, args, target, _, floor in cli.COMMANDS:
        assert f"| {label}" in text
    version = next(ln for ln in text.splitlines() if ln.startswith("| `targetsel --version`"))
    assert version == "| `targetsel --version` — imports torch: no ✓ | ≤ 0.3 s | 2.00 ✗ | +1.00 | 10 | 0 |"


@pytest.mark.parametrize("args", [["--version"], ["--help"]])
def test_cli_version_and_help_never_import_torch(cli, args):
    assert args[0] in cli.NO_TORCH  # the rows the benchmark checks the same way
    assert cli._imports_torch(args, cli._env({})) is False


def test_imports_torch_sees_a_command_that_builds_a_model(cli):
    assert cli._imports_torch(["show", "demo", "linear"], cli._env({})) is True
