"""`targetsel check-adapter ADAPTER_DIR --model MODEL`: will this saved adapter load onto this model?

Reads the adapter's config and the header of its weights file (no tensor data) and prints where
its keys go on MODEL (built on the meta device, as for the other verbs). Exit codes: 0 every saved
key loads, 1 weights would be dropped (or land on layers of another shape, or targeted modules
get none), 2 bad input (no adapter there, corrupt header, unknown model), as for the other verbs.
"""

from __future__ import annotations

import argparse
import json
import sys

EPILOG = """\
examples:
  targetsel check-adapter ./my-lora --model ./Qwen2-VL-2B-Instruct      a local model directory or config.json
  targetsel check-adapter ./my-lora --model llava-hf/llava-1.5-7b-hf --format json
  targetsel check-adapter ./my-lora/adapter_config.json --model demo

Exit codes: 0 every saved key loads, 1 weights would be dropped, 2 usage or bad input, 3 internal error.
"""


def register(sub) -> None:
    """Add the verb to the `targetsel` subcommands (called by cli/commands.py)."""
    p = sub.add_parser(
        "check-adapter", help="will a saved adapter load onto a model? dropped keys, shapes, renames",
        description="Will a saved PEFT adapter load onto MODEL? Reads adapter_config.json and the header of the "
        "weights file (no tensor data) and follows every saved key through PEFT's own load steps.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("adapter", metavar="ADAPTER_DIR", help="the directory save_pretrained wrote, or its adapter_config.json")
    p.add_argument("--model", "-m", required=True, metavar="MODEL")
    p.add_argument("--format", choices=("text", "json"), default="text")
    from targetsel.cli.options import add_model_options

    add_model_options(p)  # --model-class, --trust-remote-code, … as for the other verbs
    p.set_defaults(run=run)


def run(ns) -> int:
    from targetsel.cli.options import prepare_model

    model = prepare_model(ns)  # before peft is imported (options.keep_bitsandbytes_out)
    from targetsel.bridge.adapter_check import check_adapter

    report = check_adapter(model, ns.adapter)
    if ns.format == "json":
        text = json.dumps(report.to_dict(), indent=2, sort_keys=True)
    else:
        text = str(report)
    sys.stdout.write(text + "\n")
    return 0 if report.ok else 1
