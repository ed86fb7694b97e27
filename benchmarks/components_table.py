"""Print the README's components table: every vision-language, audio-language and omni architecture
of the installed transformers (tests/multimodal_corpus.py) × the number of modules in each
`component:` — and, with --agreement, how they compare with ms-swift's and LLaMA-Factory's own maps
(tests/trainer_maps.py).

    python benchmarks/components_table.py                # the markdown table
    python benchmarks/components_table.py --agreement    # and the comparison with the trainers
    python benchmarks/components_table.py --roots        # the root modules of each component instead of counts
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import multimodal_corpus as mc  # noqa: E402
import trainer_maps as tm  # noqa: E402
from targetsel import select  # noqa: E402
from targetsel.model.components import component_roots  # noqa: E402
from targetsel.model.index import get_index  # noqa: E402
from targetsel.query.nodes import COMPONENTS  # noqa: E402

ORDER = ("vision", "audio", "projector", "language", "head")


def rows(model_types, roots: bool = False) -> list[list[str]]:
    out = []
    for model_type in model_types:
        model, error = mc.cached(model_type)
        if model is None:
            out.append([f"`{model_type}`", "—", *["not built" if c == "vision" else "" for c in ORDER], ""])
            continue
        n = sum(1 for _ in model.named_modules()) - 1
        if roots:
            found = component_roots(get_index(model))
            cells = [", ".join(f"`{r}`" for r in found[c]) or "—" for c in ORDER]
            out.append([f"`{model_type}`", type(model).__name__, *cells, ""])
            continue
        counts = {c: len(select(model).component(c).names()) for c in COMPONENTS}
        none = n - sum(counts.values())
        out.append([f"`{model_type}`", type(model).__name__, *[str(counts[c] or "—") for c in ORDER], str(none or "—")])
    return out


def table(model_types, roots: bool = False) -> str:
    head = ["architecture", "class", *ORDER, "in none"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows(model_types, roots)]
    return "\n".join(lines)


def agreement() -> str:
    out = []
    for trainer, table_, substring in (("ms-swift", {t: k for t, (_a, k) in tm.MS_SWIFT.items()}, False),
                                       ("LLaMA-Factory", tm.LLAMA_FACTORY, True)):
        results = []
        for model_type, keys in table_.items():
            model, _error = mc.cached(model_type)
            if model is not None:
                results.append(tm.compare(model_type, model, keys, substring))
        s = tm.summary(results)
        out.append(f"{trainer}: {s['exact']} of {s['architectures']} architectures agree on every module; "
                   f"{s['agreed']} of {s['modules']} modules agree ({100 * s['agreed'] / max(s['modules'], 1):.1f}%); "
                   f"not comparable (the entry names another module layout): {', '.join(s['not_comparable']) or 'none'}")
        for (theirs, ours), cases in sorted(tm.differences(results).items(), key=str):
            where = ", ".join(f"{t} ({first}{' …' if k > 1 else ''}, {k})" for t, first, k in cases)
            out.append(f"  {trainer} says {theirs}, targetsel says {ours or 'none'}: {where}")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agreement", action="store_true", help="compare with ms-swift and LLaMA-Factory")
    parser.add_argument("--roots", action="store_true", help="root modules instead of module counts")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    start = time.perf_counter()
    types = list(mc.universe())
    print(table(types, roots=args.roots))
    built = sum(1 for t in types if mc.cached(t)[0] is not None)
    reasons: dict[str, list[str]] = {}
    for model_type, why in mc.UNBUILDABLE.items():
        reasons.setdefault(why, []).append(f"`{model_type}`")
    print(f"\n{built} of {len(types)} architectures built on the meta device in {time.perf_counter() - start:.0f} s"
          + "".join(f"; not {', '.join(ts)}: {why}" for why, ts in reasons.items()) + ".")
    if args.agreement:
        print()
        print(agreement())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
