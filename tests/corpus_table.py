"""Print the README's corpus summary: architectures × queries, every compiled form judged by a real
`get_peft_model` (tests/oracle.py) as exact / refused / wrong.

    python tests/corpus_table.py              # the full product, summary tables (markdown)
    python tests/corpus_table.py --wrong      # and every wrong case, grouped by cause
    python tests/corpus_table.py --jobs 2 --json outcomes.json

Exit status 1 when any form is wrong.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # run as a script: the corpus and its judge sit beside it

import corpus  # noqa: E402
from test_corpus import JUDGED, VERDICTS, Outcome, all_cases, judge  # noqa: E402


def _judge_arch(model_type: str) -> list[Outcome]:
    warnings.simplefilter("ignore")
    return [o for t, q, frozen in all_cases() if t == model_type for o in judge(t, q, frozen)]


def run(model_types=None, jobs: int = 1) -> list[Outcome]:
    """Judge every (architecture, query, form) of the corpus; architectures in corpus order."""
    model_types = list(model_types or [t for t, _ in corpus.ARCHS])
    if jobs <= 1:
        return [o for t in model_types for o in _judge_arch(t)]
    with ProcessPoolExecutor(jobs) as pool:
        return [o for chunk in pool.map(_judge_arch, model_types) for o in chunk]


def _counts(outcomes) -> dict:
    c = collections.Counter(o.verdict for o in outcomes)
    return {v: c.get(v, 0) for v in VERDICTS}


def _cell(c: dict) -> str:
    return f"{c['exact']} / {c['refused']} / {'**%d**' % c['wrong'] if c['wrong'] else 0}"


def summarize(outcomes: list[Outcome], model_types=None) -> str:
    """Markdown: one row per family, then one per architecture, then the totals."""
    family = dict(corpus.ARCHS)
    model_types = list(model_types or dict.fromkeys(o.model_type for o in outcomes))
    by_arch = collections.defaultdict(list)
    for o in outcomes:
        by_arch[o.model_type].append(o)
    pairs = {t: {(o.query, o.frozen) for o in by_arch[t]} for t in model_types}
    n_queries = len(corpus.QUERIES) + 1
    lines = ["| family | architectures | non-empty queries | forms judged by real injection: exact / refused / wrong |",
             "|---|---:|---:|---|"]
    families = list(dict.fromkeys(family[t] for t in model_types))
    for fam in families:
        members = [t for t in model_types if family[t] == fam]
        judged = [o for t in members for o in by_arch[t]]
        lines.append(f"| {fam} | {len(members)} | {sum(len(pairs[t]) for t in members)}/{n_queries * len(members)} | "
                     f"{_cell(_counts(judged))} |")
    lines += ["", "<details><summary>per architecture</summary>", "",
              "| architecture | family | PEFT MoE conversion | class | modules | non-empty queries | exact / refused / wrong |",
              "|---|---|---|---|---:|---:|---|"]
    for t in model_types:
        model = corpus.cached(t)
        lines.append(f"| {t} | {family[t]} | {corpus.conversion(t) or '–'} | {type(model).__name__} | "
                     f"{sum(1 for _ in model.named_modules()) - 1} | {len(pairs[t])}/{n_queries} | {_cell(_counts(by_arch[t]))} |")
    lines += ["", "</details>", ""]
    total = _counts(outcomes)
    non_empty = sum(len(p) for p in pairs.values())
    per_form = {f: _counts([o for o in outcomes if o.form == f]) for f in JUDGED}
    lines.append(
        f"{len(model_types)} architectures × {n_queries} queries ({len(corpus.QUERIES)} + `{corpus.FROZEN_QUERY}` with a "
        f"tower frozen) = {n_queries * len(model_types)} pairs, {non_empty} non-empty; {len(outcomes)} forms "
        f"({', '.join(JUDGED)}) judged by a real `get_peft_model`: {total['exact']} exact, {total['refused']} refused "
        f"by targetsel with a reason, {total['wrong']} wrong."
    )
    lines.append("")
    lines.append("| form | exact / refused / wrong |")
    lines.append("|---|---|")
    lines += [f"| {f} | {_cell(c)} |" for f, c in per_form.items()]
    return "\n".join(lines)


_MOE_MLP = re.compile(r"\.(gate_proj|up_proj|down_proj|w1|w2|w3)$")
CAUSES = {
    "mamba": "PEFT's Mamba guard refuses out_proj / conv1d by name (ValueError)",
    "unfused": "PEFT's MoE conversion raises: gate_proj targeted without up_proj (an attention gate_proj)",
    "mlp": "PEFT's MoE conversion turns MLP *_proj names into fused-expert target_parameters "
           "(dense / shared-expert MLPs lose their adapter, the routed experts get one)",
    "router": "PEFT's MoE conversion turns the router `gate` into target_parameters gate.weight",
    "regex": "PEFT's MoE conversion resolves a regex to bare leaf names (the layer restriction is lost)",
    "crash": "targetsel raised a non-targetsel exception",
    "peft-error": "PEFT raised",
    "other": "PEFT adapted something else",
}


def causes(o: Outcome) -> tuple[str, ...]:
    """Why a wrong case is wrong, read off what PEFT did (names, not PEFT internals: a report aid)."""
    detail = o.detail
    if detail.startswith("targetsel raised"):
        return ("crash",)
    if "incompatible with Mamba" in detail:
        return ("mamba",)
    if "Cannot convert PEFT target" in detail:
        return ("unfused",)
    if detail.startswith("PEFT raised"):
        return ("peft-error",)
    found = []
    if any(p.endswith(("gate_up_proj", "down_proj")) for p in o.parameters) or any(_MOE_MLP.search(n) for n in o.lost):
        found.append("mlp")
    if any(p.endswith(".gate.weight") for p in o.parameters):
        found.append("router")
    if o.extra:
        found.append("regex" if o.form in ("regex", "auto", "patch") and corpus.conversion(o.model_type) else "other")
    return tuple(found) or ("other",)


def wrong_report(outcomes: list[Outcome], value_width: int = 90, compact: bool = False) -> str:
    """Every wrong case, grouped by cause, then by (architecture, query). Forms with the same result
    share a line: with their own value each, or (`compact`) with the first form's value."""
    groups = collections.defaultdict(lambda: collections.defaultdict(list))
    for o in outcomes:
        if o.verdict == "wrong":
            value = json.dumps(o.value, default=sorted)
            key = (o.model_type, o.query, o.frozen, o.detail) + (() if compact else (value,))
            groups[causes(o)][key].append((o.form, value))
    lines = []
    for cause, cases in sorted(groups.items(), key=lambda kv: -sum(len(f) for f in kv[1].values())):
        n = sum(len(f) for f in cases.values())
        lines.append(f"\n### {' + '.join(CAUSES[k] for k in cause)} — {n} form(s)\n")
        for (model_type, query, frozen, detail, *_), forms in cases.items():
            value = forms[0][1]
            value = value if len(value) <= value_width else value[: value_width - 1] + "…"
            q = f"{query}` (tower frozen)" if frozen else f"{query}`"
            lines.append(f"- {model_type} · `{q} · {', '.join(f for f, _ in forms)}: `{value}` → {detail}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1, help="processes (architectures are split between them)")
    parser.add_argument("--only", nargs="*", help="model types to run (default: the whole corpus)")
    parser.add_argument("--wrong", action="store_true", help="list every wrong case, grouped by cause")
    parser.add_argument("--compact", action="store_true", help="with --wrong: one line per (architecture, query, result)")
    parser.add_argument("--json", help="write every outcome to this file")
    parser.add_argument("--load", help="print the tables from outcomes written earlier with --json (no injection)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    start = time.perf_counter()
    if args.load:
        outcomes = [Outcome(**{k: tuple(v) if isinstance(v, list) and k in ("lost", "extra", "parameters") else v
                               for k, v in o.items()}) for o in json.loads(Path(args.load).read_text())]
    else:
        outcomes = run(args.only, jobs=args.jobs)
    elapsed = time.perf_counter() - start
    print(summarize(outcomes, args.only))
    if not args.load:
        print(f"\n({elapsed:.0f} s, {args.jobs} process(es))")
    if args.wrong:
        print(wrong_report(outcomes, compact=args.compact))
    if args.json:
        Path(args.json).write_text(json.dumps([o.__dict__ for o in outcomes], default=sorted, indent=1))
    return 1 if any(o.verdict == "wrong" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
