"""Print the README's corpus summary: architectures × queries, each compiled form checked by PEFT.

    python benchmarks/corpus_table.py
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import corpus  # noqa: E402
from test_corpus import FORMS, exact_forms  # noqa: E402

from targetsel import select  # noqa: E402


def main() -> int:
    warnings.simplefilter("ignore")
    rows, totals = [], {"pairs": 0, "non_empty": 0, "checks": 0, "exact": 0, "refused": 0, "rewritten": 0, "wrong": 0}
    for model_type, family in corpus.ARCHS:
        model = corpus.cached(model_type)
        counts = {"non_empty": 0, "exact": 0, "refused": 0, "rewritten": 0, "wrong": 0}
        for query in corpus.QUERIES:
            totals["pairs"] += 1
            sel = select(model, query)
            if sel.is_empty():
                continue
            counts["non_empty"] += 1
            for ok in exact_forms(model, sel).values():
                key = {True: "exact", None: "refused", "rewritten": "rewritten"}.get(ok, "wrong")
                counts[key] += 1
        for k, v in counts.items():
            totals[k] += v
        totals["checks"] += counts["exact"] + counts["refused"] + counts["rewritten"] + counts["wrong"]
        rows.append((model_type, family, type(model).__name__, sum(1 for _ in model.named_modules()) - 1, counts))
    print("| architecture | family | class | modules | non-empty queries | forms exact / refused / rewritten by PEFT |")
    print("|---|---|---|---:|---:|---|")
    for model_type, family, cls, n, c in rows:
        print(f"| {model_type} | {family} | {cls} | {n} | {c['non_empty']}/{len(corpus.QUERIES)} | "
              f"{c['exact']} / {c['refused']} / {c['rewritten']}{' — WRONG: ' + str(c['wrong']) if c['wrong'] else ''} |")
    print(f"\n{len(rows)} architectures × {len(corpus.QUERIES)} queries = {totals['pairs']} pairs, {totals['non_empty']} non-empty; "
          f"{totals['checks']} compiled forms ({', '.join(FORMS)}) checked with PEFT: {totals['exact']} exact, "
          f"{totals['refused']} refused by targetsel as inexact, {totals['rewritten']} rewritten by PEFT's MoE conversion, "
          f"{totals['wrong']} wrong.")
    return 1 if totals["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
