"""targetsel benchmarks: selection cost against one module walk, and the configs handed to PEFT.

    python benchmarks/bench.py                 # sizes 1k … 104k + real architectures + CLI; writes RESULTS.md
    python benchmarks/bench.py --quick         # the smallest size only (the test suite's smoke run)
    python benchmarks/bench.py --sizes 1k,10k  # some sizes only (no RESULTS.md unless --out is given)

Every figure is a ratio measured side by side in one process (absolute times on shared machines
are noise): the reference is one bare `named_modules()` + `named_parameters()` walk of the same
model. Targets, set for the 63k-module per-expert MoE: P1 first query on a fresh model ≤ 1.0× walk
(best of several fresh models); P2 a further query ≤ 0.05×, for every kind of atom (queries.py);
P3 the "routed experts of layers 30–60" config ≤ 200 characters and exact; P4 `verify` ≤ 1×;
`patch` ≤ 3×; P5 `get_peft_model` with targetsel's config ≤ 1.02× a hand-written suffix config.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
import tracemalloc
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from targetsel import patch, select, verify  # noqa: E402
from targetsel.model.index import build_index, forget, get_index  # noqa: E402

TARGETS = {"P1": 1.0, "P2": 0.05, "P3": 200, "P4": 1.0, "patch": 3.0, "P5": 1.02}
# (label, layers, routed experts): 15 + 4 × experts modules a layer, so ≈1k, 10k, 63k and 104k modules
SIZES = {"1k": (6, 40), "10k": (24, 100), "63k": (61, 256), "104k": (100, 256)}
TARGET_SIZE = 60_000  # the issue sets P1, P2, P4 and patch for the ≈63k-module model
ROUTED_GLOB = "glob:model.layers.*.mlp.experts.*.*"


def routed_query(layers: int) -> str:
    """"Routed experts of layers 30–60" on the 61-layer model; the same upper half on smaller ones."""
    return f"layers:{layers // 2}..{layers - 1} & {ROUTED_GLOB}"


ROUTED_QUERY = routed_query(61)


class Expert(nn.Module):
    def __init__(self, d: int, f: int):
        super().__init__()
        self.gate_proj, self.up_proj, self.down_proj = nn.Linear(d, f, bias=False), nn.Linear(d, f, bias=False), nn.Linear(f, d, bias=False)


class Block(nn.Module):
    def __init__(self, d: int, f: int, experts: int):
        super().__init__()
        self.self_attn = nn.Module()
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            self.self_attn.add_module(name, nn.Linear(d, d, bias=False))
        self.mlp = nn.Module()
        self.mlp.gate = nn.Linear(d, experts, bias=False)  # the router
        self.mlp.experts = nn.ModuleList(Expert(d, f) for _ in range(experts))
        self.mlp.shared_experts = Expert(d, f)
        self.input_layernorm, self.post_attention_layernorm = nn.LayerNorm(d), nn.LayerNorm(d)


class PerExpertMoE(nn.Module):
    """A DeepSeek-style MoE with one nn.Linear per expert, as older transformers built them."""

    def __init__(self, layers: int, experts: int, d: int = 64, f: int = 32, vocab: int = 1000):
        super().__init__()
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(vocab, d)
        self.model.layers = nn.ModuleList(Block(d, f, experts) for _ in range(layers))
        self.model.norm = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)

    def get_output_embeddings(self):
        return self.lm_head


def build_moe(layers: int, experts: int) -> nn.Module:
    with torch.device("meta"):
        return PerExpertMoE(layers, experts)


def timed(fn: Callable, repeat: int = 5, setup: Callable | None = None) -> float:
    """Best seconds of `fn()` over `repeat` runs (gc off, as timeit does). The minimum, as timeit
    recommends: on a shared machine slower runs measure the neighbours, not the code."""
    times = []
    for _ in range(repeat):
        if setup:
            setup()
        gc.disable()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
        gc.enable()
    return min(times)


def walk(model: nn.Module) -> None:
    for _ in model.named_modules():
        pass
    for _ in model.named_parameters():
        pass


def first_query(model: nn.Module) -> None:
    select(model, "linear & trainable & layers:-8..").names()


def beside_walk(model: nn.Module, fn: Callable, rounds: int, setup: Callable | None = None) -> tuple[float, float]:
    """(best seconds of `fn()`, best seconds of the model's walk) over `rounds` alternating runs: load
    on the shared machine falls on the figure and its reference alike, so their ratio is fair."""
    walks, runs = [], []
    for _ in range(max(2, rounds)):
        walks.append(timed(lambda: walk(model), 1))
        runs.append(timed(fn, 1, setup=setup))
    return min(runs), min(walks)


def ratio_to_walk(model: nn.Module, fn: Callable, rounds: int, setup: Callable | None = None) -> float:
    t_fn, t_walk = beside_walk(model, fn, rounds, setup)
    return t_fn / t_walk


def measure_p1(models: list[nn.Module], repeat: int) -> list[float]:
    """P1 on each fresh model: its first query (index build + filters + names) against its walk."""
    return [ratio_to_walk(model, lambda: first_query(model), repeat, setup=lambda: forget(model)) for model in models]


def measure(model: nn.Module, label: str, repeat: int = 5, peft_check: bool = True, fresh: int = 1) -> dict:
    from peft.tuners.tuners_utils import _find_minimal_target_modules

    n_modules = sum(1 for _ in model.named_modules()) - 1
    t_first, t_walk = beside_walk(model, lambda: first_query(model), repeat, setup=lambda: forget(model))
    row = {"model": label, "modules": n_modules, "walk_s": t_walk, "P1": t_first / t_walk, "first_s": t_first}
    if fresh > 1 and isinstance(model, PerExpertMoE):
        layers, experts = len(model.model.layers), len(model.model.layers[0].mlp.experts)
        others = [build_moe(layers, experts) for _ in range(fresh - 1)]
        row["P1_fresh"] = measure_p1([model, *others], max(2, repeat // 2))
        row["P1"] = min(row["P1_fresh"])
        del others
        gc.collect()
    get_index(model)
    row["P2"] = ratio_to_walk(model, lambda: select(model, "glob:**.experts.*.down_proj & layers:0..9").names(), repeat)

    layers = getattr(getattr(model, "model", None), "layers", None)
    routed = select(model, routed_query(len(layers))) if isinstance(model, PerExpertMoE) else None
    if routed is not None and not routed.is_empty():
        names = routed.names()
        value = routed.to_peft("auto")
        row["P3_chars"] = len(value) if isinstance(value, str) else len(json.dumps(sorted(value)))
        row["P3_value"] = value if isinstance(value, str) else sorted(value)
        chosen = set(names)
        others = [n for n, _ in model.named_modules() if n and n not in chosen]
        condensed = _find_minimal_target_modules(names, others) if len(names) < 20000 or n_modules < 70000 else None
        row["P3_peft_chars"] = len(json.dumps(sorted(condensed))) if condensed is not None else None
        row["P3_full_list_chars"] = len(json.dumps(names))
        from peft import LoraConfig

        if peft_check:
            # As a user calls it: once, on a model whose index the selection has just built (setup, untimed),
            # so the per-index tables patch() needs (suffix keys, coverage roles, …) are built inside the call.
            row["patch"] = ratio_to_walk(model, lambda: patch(LoraConfig(r=4), routed), max(2, repeat // 2),
                                         setup=lambda: (forget(model), routed.names()))
            row["patch_again"] = ratio_to_walk(model, lambda: patch(LoraConfig(r=4), routed), max(2, repeat // 2))
        config = patch(LoraConfig(r=4), routed) if peft_check else LoraConfig(target_modules=value)
        if peft_check:
            row["patch_parts"] = patch_parts(model, routed, config, max(2, repeat // 2))
        row["P4"] = ratio_to_walk(model, lambda: verify(model, config), max(2, repeat // 2))
        row["P3_exact"] = verify(model, config) == names
    forget(model)
    tracemalloc.start()
    build_index(model)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    row["index_MiB_per_100k"] = peak / 2**20 * 100_000 / max(n_modules, 1)
    get_index(model)
    return row


#: The steps of one `patch()` call, each timed alone on the resolution patch() holds (bridge/patch.py).
PATCH_PARTS = ("target forms (suffixes + regex, each checked exact)", "preflight checks", "PEFT dry run (fast path)")


def patch_parts(model: nn.Module, selection, config, repeat: int) -> dict[str, float]:
    """Where `patch()`'s time goes, each step as a ratio to the walk: the exact target forms it
    compiles, the preflight checks, and the dry run that proves the chosen form with PEFT's rules."""
    from targetsel.bridge.checks import check_resolution
    from targetsel.bridge.verify import dry_run
    from targetsel.views.targets import candidate_forms

    res = selection.resolution()
    steps = (lambda: [candidate_forms(res, kind) for kind in ("suffixes", "regex")],
             lambda: check_resolution(res, config), lambda: dry_run(model, config))
    return {label: ratio_to_walk(model, step, repeat) for label, step in zip(PATCH_PARTS, steps)}


def measure_p5(layers: int = 8, experts: int = 64, repeat: int = 3) -> dict:
    """get_peft_model with targetsel's config vs a hand-written suffix list vs the raw full-name list."""
    from peft import LoraConfig, get_peft_model

    def run(target_modules):
        model = build_moe(layers, experts)
        cfg = LoraConfig(r=4, target_modules=target_modules)
        gc.collect()  # the previous run's adapted model is garbage: collect it here, not inside the next timing
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            get_peft_model(model, cfg)
            return time.perf_counter() - start

    model = build_moe(layers, experts)
    sel = select(model, "linear & glob:**.experts.*.*")
    compiled = sel.to_peft("auto")
    full = sel.names()
    hand = [f"experts.{i}.{p}" for i in range(experts) for p in ("gate_proj", "up_proj", "down_proj")]
    n_modules = sum(1 for _ in model.named_modules()) - 1
    # Interleaved, so that load on the machine falls on all three alike, each round in a rotated order
    # (none always first); best of `repeat`.
    targets = {"compiled": compiled, "hand": hand, "full": full}
    runs: dict[str, list[float]] = {key: [] for key in targets}
    for round_ in range(repeat):
        order = list(targets)[round_ % 3:] + list(targets)[:round_ % 3]
        for key in order:
            runs[key].append(run(targets[key]))
    t_compiled, t_hand, t_full = (min(runs[k]) for k in ("compiled", "hand", "full"))
    return {"modules": n_modules, "targets": len(sel), "compiled": compiled if isinstance(compiled, str) else sorted(compiled),
            "P5_vs_hand": t_compiled / t_hand, "P5_vs_full_list": t_compiled / t_full,
            "compiled_s": t_compiled, "hand_s": t_hand, "full_list_s": t_full}


def real_architectures() -> list[tuple[str, nn.Module]]:
    import transformers

    out = []
    for model_type, auto in (("llama", "AutoModelForCausalLM"), ("qwen2_vl", "AutoModelForImageTextToText"),
                             ("mixtral", "AutoModelForCausalLM")):
        config = transformers.AutoConfig.for_model(model_type)
        with torch.device("meta"):
            model = getattr(transformers, auto).from_config(config)
        out.append((f"{type(model).__name__} (default config)", model))
    return out


def run(sizes: list[str], real: bool = True, repeat: int = 5, p5: bool = True, atoms: bool = True, fresh: int = 3) -> dict:
    """Every figure: one row per model, the atom table on the target size (or the largest asked for)."""
    from queries import measure_atoms, measure_grad_floor

    rows, atom_rows = [], None
    atom_size = "63k" if "63k" in sizes else sizes[-1]
    for label in sizes:
        layers, experts = SIZES[label]
        start = time.perf_counter()
        model = build_moe(layers, experts)
        build_s = time.perf_counter() - start
        row = measure(model, f"per-expert MoE {label} ({layers}×{experts})", repeat, fresh=fresh if label == atom_size else 1)
        row["build_s"] = build_s
        rows.append(row)
        if atoms and label == atom_size:
            atom_rows = {"model": row["model"], "modules": row["modules"], "rows": measure_atoms(model, walk, timed, repeat),
                         "grad_floor": measure_grad_floor(model, walk, timed, repeat)}
        del model
        gc.collect()
    if real:
        for label, model in real_architectures():
            rows.append(measure(model, label, repeat))
    result = {"rows": rows}
    if atom_rows is not None:
        result["atoms"] = atom_rows
    if p5:
        result["p5"] = measure_p5(repeat=7 if repeat > 2 else 1, layers=8 if repeat > 2 else 2, experts=64 if repeat > 2 else 16)
    return result


def verdict(value, target, smaller=True) -> str:
    if value is None:
        return "–"
    return "✓" if (value <= target if smaller else value >= target) else "✗"


def table(result: dict) -> str:
    from queries import atoms_table

    lines = [
        "| model | modules | walk (ms) | P1 first query | P1 (ms) | P2 further query | P3 chars (PEFT condensed / full list) | P4 verify | patch | index MiB / 100k modules |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for r in result["rows"]:
        # ✓/✗ only where a target is set: below ~10k modules a walk takes about a millisecond and
        # a query's fixed cost (parse, a dozen small tensors) is a large share of it.
        judged = r["modules"] >= TARGET_SIZE

        def mark(key):
            return " " + verdict(r[key], TARGETS[key]) if judged else ""

        p3 = f"{r['P3_chars']} {verdict(r['P3_chars'], TARGETS['P3'])}{'' if r.get('P3_exact') else ' NOT EXACT'} ({r.get('P3_peft_chars')} / {r['P3_full_list_chars']})" if "P3_chars" in r else "–"
        p4 = f"{r['P4']:.2f}×{mark('P4')}" if "P4" in r else "–"
        patched = f"{r['patch']:.2f}×{mark('patch')} (again {r['patch_again']:.2f}×)" if "patch" in r else "–"
        lines.append(
            f"| {r['model']} | {r['modules']:,} | {r['walk_s'] * 1e3:.2f} | {r['P1']:.2f}×{mark('P1')} | {r['P1'] * r['walk_s'] * 1e3:.2f} | "
            f"{r['P2']:.3f}×{mark('P2')} | {p3} | {p4} | {patched} | {r['index_MiB_per_100k']:.1f} |"
        )
    for r in result["rows"]:
        if "P1_fresh" in r:
            lines += ["", f"P1 on {len(r['P1_fresh'])} fresh {r['model']} models (each: best of interleaved runs): "
                      + ", ".join(f"{x:.2f}×" for x in r["P1_fresh"]) + f"; best {min(r['P1_fresh']):.2f}× "
                      + verdict(min(r["P1_fresh"]), TARGETS["P1"]) + f" (target ≤ {TARGETS['P1']:g}×)."]
    for r in result["rows"]:
        if "patch_parts" in r and r["modules"] >= TARGET_SIZE:
            parts = r["patch_parts"]
            lines += ["", f"Where `patch()`'s time goes on the {r['model']}: a first call ({r['patch']:.2f}×) builds the "
                      f"per-index tables it needs (suffix keys, coverage roles, the quantized mask), {r['patch'] - r['patch_again']:.2f}×; "
                      f"a further call ({r['patch_again']:.2f}×) is, each step timed alone as a ratio to the walk: "
                      + ", ".join(f"{label} {x:.2f}×" for label, x in parts.items())
                      + f" (together {sum(parts.values()):.2f}×; building the new config and the form loop cost the rest)."]
    lines += growth_lines([r for r in result["rows"] if r["model"].startswith("per-expert")])
    if "atoms" in result:
        lines += ["", atoms_table(result["atoms"], TARGETS["P2"])]
    if "p5" in result:
        p = result["p5"]
        lines += [
            "",
            f"P5 — `get_peft_model` on a {p['modules']:,}-module per-expert MoE, {p['targets']:,} targets: targetsel's config "
            f"`{json.dumps(p['compiled'])[:120]}` vs a hand-written suffix list: **{p['P5_vs_hand']:.3f}×** "
            f"{verdict(p['P5_vs_hand'], TARGETS['P5'])} (target ≤ 1.02×); vs the raw full-name list: **{p['P5_vs_full_list']:.3f}×** "
            f"({p['compiled_s']:.2f} s vs {p['hand_s']:.2f} s vs {p['full_list_s']:.2f} s).",
        ]
    return "\n".join(lines)


def growth_lines(moe: list[dict]) -> list[str]:
    """Per-module cost of the walk and of a first query, from the smallest size to the largest."""
    if len(moe) < 2:
        return []
    lines = ["", "Growth — cost per module (µs), which stays flat when the cost is linear:", "",
             "| modules | walk | first query | first query / walk |", "|---:|---:|---:|---:|"]
    for r in moe:
        lines.append(f"| {r['modules']:,} | {r['walk_s'] / r['modules'] * 1e6:.2f} | {r['P1'] * r['walk_s'] / r['modules'] * 1e6:.2f} | {r['P1']:.2f}× |")
    small, large = moe[0], moe[-1]
    spread = (large["P1"] * large["walk_s"] / large["modules"]) / (small["P1"] * small["walk_s"] / small["modules"])
    walk_spread = (large["walk_s"] / large["modules"]) / (small["walk_s"] / small["modules"])
    lines += ["", f"From {small['modules']:,} to {large['modules']:,} modules a first query's cost per module changes {spread:.2f}× "
              f"(the walk's own: {walk_spread:.2f}×)."]
    return lines


def environment() -> str:
    import peft
    import transformers

    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), platform.processor())
    return (f"{platform.platform()}, {cpu or 'unknown CPU'}, Python {platform.python_version()}, {os.cpu_count()} cores "
            f"(shared with other work while it ran); torch {torch.__version__}, "
            f"peft {peft.__version__}, transformers {transformers.__version__}; load average {os.getloadavg()[0]:.1f} when it ended")


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:  # not Linux
        return []


def cli_section() -> str:
    """The CLI start-up timings (`/usr/bin/time`, fresh processes): benchmarks/cli_timings.py."""
    import cli_timings

    return cli_timings.table(cli_timings.measure())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--quick", action="store_true", help="the 1k size only, no real architectures, no CLI, 2 repeats")
    parser.add_argument("--no-cli", action="store_true", help="skip the CLI start-up timings")
    parser.add_argument("--out", default=None, help="where to write the results (default: benchmarks/RESULTS.md for a full run)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    full = not args.quick and args.sizes == ",".join(SIZES)
    if args.quick:
        result = run(["1k"], real=False, repeat=2, fresh=2)
    else:
        result = run(args.sizes.split(","), real=full)
    text = table(result)
    if not args.quick and not args.no_cli:
        text += "\n\n" + cli_section()
    print(text)
    out = args.out or (str(HERE / "RESULTS.md") if full else None)
    if out and not args.quick:
        Path(out).write_text(
            "# targetsel benchmark results\n\n"
            f"Measured {time.strftime('%Y-%m-%d')} on {environment()}.\n\n"
            "Reproduce: `python benchmarks/bench.py` (`--quick` for the smallest size, `--sizes 1k,63k` for some).\n"
            "Ratios are best-of-N timings against one bare `named_modules()` + `named_parameters()` walk of the\n"
            "same model, measured in the same process. Targets (set for the 63k-module model, judged ✓/✗ there):\n"
            "P1 ≤ 1.0× (best of several fresh models), P2 ≤ 0.05× for every kind of atom, P3 ≤ 200 characters and exact\n"
            "(every row), P4 ≤ 1×, patch ≤ 3×, P5 ≤ 1.02×. P3 is the compiled `target_modules` for \"routed experts of\n"
            f"layers 30–60\" (`{ROUTED_QUERY}`), next to PEFT's own condensation of the full-name list\n"
            "(`_find_minimal_target_modules`).\n\n" + text + "\n"
        )
        print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
