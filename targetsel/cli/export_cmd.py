"""`targetsel export MODEL QUERY --to TRAINER`: the trainer's own config keys for a selection.

Prints the keys (YAML by default, `--format json`) that make axolotl, LLaMA-Factory, ms-swift,
unsloth, TRL or PEFT itself adapt exactly what QUERY selects on MODEL — each replayed through that
trainer's own rewriting of the targets and checked with a real get_peft_model
(`targetsel.bridge.exports`). Exit codes: 0 written, 1 the trainer cannot express the selection
exactly (the message says why and the closest exact alternative) or the preflight checks found
errors, 2 usage or bad input, 3 internal error — as for the other verbs.
"""

from __future__ import annotations

import argparse
import sys
import warnings

EPILOG = """\
examples:
  targetsel export demo "linear & trainable - type:PLoRA - under:(type:PLoRA)" --to axolotl
  targetsel export ./llava-dir "linear & under:language_model" --to llamafactory --freeze under:vision_tower
  targetsel export ./qwen3-moe "glob:**.self_attn.{q,v}_proj" --parameters "glob:**.mlp.experts" --to unsloth
  targetsel export ./llama-dir "linear" --to peft --rank "glob:**.mlp.*=32" --format json

Exit codes: 0 keys written, 1 the trainer cannot adapt exactly this selection (or the preflight
checks found errors), 2 usage or bad input, 3 internal error (a bug: please report it).
"""


# targetsel.bridge.exports.TRAINERS, spelled out: importing the bridge imports peft (seconds), and
# registering the verb runs on every `targetsel --help` (tests/cli/test_workflows.py pins the two equal).
TRAINER_NAMES = ("axolotl", "llamafactory", "swift", "unsloth", "trl", "peft")


def register(sub) -> None:
    """Add the verb to the `targetsel` subcommands (called by cli/commands.py)."""
    from targetsel.cli.options import add_model_options

    p = sub.add_parser(
        "export", help="the config keys a trainer needs to adapt exactly a query",
        description="The keys TRAINER needs in its own config (YAML, script arguments, get_peft_model call) to put "
        "adapters on exactly what QUERY selects, replayed through the trainer's own rules and checked with PEFT.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL")
    p.add_argument("query", metavar="QUERY", nargs="?", default=None,
                   help="the modules to adapt (target_modules); may be left out with --parameters")
    p.add_argument("--to", "-t", dest="trainer", required=True, metavar="TRAINER",
                   help=f"one of {', '.join(TRAINER_NAMES)}")
    p.add_argument("--format", choices=("yaml", "json"), default="yaml")
    p.add_argument("--parameters", metavar="QUERY", default=None,
                   help="also adapt the parameters of the modules this query selects (fused MoE experts: target_parameters)")
    p.add_argument("--parameter-pattern", metavar="REGEX", default=None,
                   help="only the parameters whose full name this regex finds (with --parameters)")
    p.add_argument("--rank", metavar="QUERY=R", action="append", default=[],
                   help="rank R for the selected modules QUERY also selects (repeatable; rank_pattern keys)")
    p.add_argument("--alpha", metavar="QUERY=A", action="append", default=[],
                   help="alpha A for the selected modules QUERY also selects (repeatable; alpha_pattern keys)")
    add_model_options(p)
    p.set_defaults(run=run)


def _pairs(values: list[str], option: str, number: type) -> dict:
    from targetsel.errors import ExportError

    out = {}
    for text in values:
        query, sep, value = text.rpartition("=")
        try:
            parsed = number(value)
        except ValueError:
            parsed = None
        if not sep or not query.strip() or parsed is None:
            raise ExportError(f"{option} takes QUERY={'R' if number is int else 'A'} (e.g. {option} 'glob:**.mlp.*=32'), "
                              f"got {text!r}")
        out[query.strip()] = parsed
    return out


def run(ns) -> int:
    from targetsel.bridge.exports import export, trainer_module
    from targetsel.cli.options import prepare_model
    from targetsel.cli.terminal import dump, out, progress, refused, replay_warnings
    from targetsel.errors import ExportError, PreflightError, TargetselWarning
    from targetsel.selection import select

    module = trainer_module(ns.trainer)  # an unknown trainer fails before the model is built
    if ns.query is None and ns.parameters is None:
        raise ExportError("export needs a QUERY (the modules to adapt), --parameters QUERY, or both")
    if ns.parameter_pattern is not None and ns.parameters is None:
        raise ExportError("--parameter-pattern narrows --parameters QUERY; pass that too")
    ranks, alphas = _pairs(ns.rank, "--rank", int), _pairs(ns.alpha, "--alpha", float)
    model = prepare_model(ns)
    sel = select(model, ns.query) if ns.query is not None else None
    psel = select(model, ns.parameters).parameters(ns.parameter_pattern) if ns.parameters is not None else None
    with progress(f"exporting to {module.NAME}"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TargetselWarning)
        try:
            keys = export(sel if sel is not None else psel, module.NAME, parameters=psel if sel is not None else None,
                          ranks=ranks or None, alphas=alphas or None)
        except PreflightError as exc:
            return refused(exc, "nothing was exported")
        except ExportError as exc:
            print(f"targetsel: error: {exc}", file=sys.stderr)
            return 1
    replay_warnings(caught)
    if ns.format == "yaml":
        what = " and ".join(filter(None, (f"{ns.query!r}" if ns.query is not None else "",
                                          f"parameters of {ns.parameters!r}" if ns.parameters is not None else "")))
        out(f"# targetsel export --to {module.NAME}: {what} on {ns.model}\n# exact under {module.SOURCE}")
    out(dump(keys, ns.format))
    return 0
