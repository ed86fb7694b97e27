"""The `targetsel` command line: show, check, patch (and export, check-adapter), on any model without its weights.

Exit codes are the contract scripts rely on: 0 ok, 1 the checks found errors, 2 usage or bad
input (bad query, unknown model, unreadable config), 3 an internal error (a bug in targetsel or
in a library it drives: one line naming the exception and where it was raised, never a
traceback). Errors go to stderr, with the caret under the query column for syntax errors;
`--format json` output is stable (sorted keys, fixed fields).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

from targetsel.cli.files import config_json, is_adapter_argument, read_peft_config as _read_peft_config  # noqa: F401
from targetsel.cli.options import add_model_options, prepare_model
from targetsel.cli.terminal import dump as _dump, out as _out, progress as _progress, refused, replay_warnings
from targetsel.errors import TargetselError, TargetselWarning

DEMO_QUERY = "linear & trainable"

EPILOG = """\
examples:
  targetsel show demo                                  the demo VLM, every module, grouped
  targetsel show demo "linear & trainable"             what a LoRA should target on it
  targetsel show ./llama-dir "linear & layers:-4.." --format regex
  targetsel show Qwen/Qwen2-VL-2B-Instruct "linear & !component:vision" --rank 16
  targetsel check demo "linear"                        findings: frozen tower, PLoRA subclasses
  targetsel check demo adapter_config.json             what that PEFT config would do
  targetsel show demo ./my-adapter                     what a saved adapter targets, grouped, with the findings
  targetsel check ./llava-dir adapter_config.json --freeze under:vision_tower
                                                       check as trained: the tower frozen first
  targetsel patch adapter_config.json --model demo --query "linear & trainable" -o patched.json
  targetsel export demo "linear & trainable - type:PLoRA - under:(type:PLoRA)" --to llamafactory
                                                       the keys a trainer needs (axolotl, llamafactory, swift, unsloth, trl, peft)

MODEL is `demo`, a local model directory or config.json (built on the meta device as the class
its `architectures` names: no weights are loaded), a Hugging Face hub id (config only), or
package.module:factory; --trust-remote-code builds a model that ships its own code, and
--freeze/--unfreeze QUERY set requires_grad as your training script does before anything is
selected. Exit codes: 0 ok, 1 errors found by check/patch (or by show on an adapter config),
2 usage or bad input, 3 internal error (a bug: please report it).
"""


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:  # `python -m targetsel`: the demo, as the README's first command promises
        args = ["show", "demo", DEMO_QUERY, "--hint"]
    from targetsel.cli.terminal import quiet_libraries

    quiet_libraries()  # before anything imports them: their import-time log lines are no answer
    parser = _parser()
    ns = parser.parse_args(args)
    ns.own_process = argv is None  # the console script or `python -m`: see options.keep_bitsandbytes_out
    try:
        return ns.run(ns)
    except TargetselError as exc:
        _error(exc)
        return 2
    except BrokenPipeError:  # `targetsel show … | head`
        return 0
    except KeyboardInterrupt:
        print("targetsel: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last resort: a bug is reported in one line, not a traceback
        _internal_error(exc)
        return 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="targetsel",
        description="Choose which modules of a model get PEFT adapters — precisely, visibly and provably.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from targetsel.version import __version__

    parser.add_argument("--version", action="version", version=f"targetsel {__version__}")
    # no metavar: argparse lists every registered verb in the usage line, export and check-adapter included
    sub = parser.add_subparsers(dest="command", required=True)

    show = sub.add_parser("show", help="show a selection, grouped", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    show.add_argument("model", metavar="MODEL")
    show.add_argument("query", metavar="QUERY_OR_CONFIG", nargs="?", default="all",
                      help="a selector query (default: all), or an adapter_config.json (file or directory)")
    show.add_argument("--format", choices=("table", "list", "regex", "json", "yaml"), default="table")
    show.add_argument("--rank", "-r", type=_positive_int, default=None, help="also count the LoRA parameters at this rank")
    show.add_argument("--hint", action="store_true", help=argparse.SUPPRESS)
    add_model_options(show)
    show.set_defaults(run=_show)

    check = sub.add_parser("check", help="preflight findings for a query or a PEFT adapter config", epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("model", metavar="MODEL")
    check.add_argument("target", metavar="QUERY_OR_CONFIG", help="a query, or an adapter_config.json (file or directory)")
    check.add_argument("--format", choices=("text", "json"), default="text")
    add_model_options(check)
    check.set_defaults(run=_check)

    patch = sub.add_parser("patch", help="write a PEFT adapter config that targets exactly a query", epilog=EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    patch.add_argument("config", metavar="ADAPTER_CONFIG", help="adapter_config.json (file or directory)")
    patch.add_argument("--model", "-m", required=True, metavar="MODEL")
    patch.add_argument("--query", "-q", required=True, metavar="QUERY")
    patch.add_argument("--output", "-o", metavar="OUT", help="where to write (a .json file or a directory); default stdout")
    patch.add_argument("--form", choices=("auto", "list", "suffixes", "regex"), default="auto")
    patch.add_argument("--no-strict", dest="strict", action="store_false",
                       help="accept modules_to_save overlaps with a warning instead of failing")
    add_model_options(patch)
    patch.set_defaults(run=_patch)

    from targetsel.cli import check_adapter_cmd

    check_adapter_cmd.register(sub)
    from targetsel.cli import export_cmd

    export_cmd.register(sub)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


# ---------------------------------------------------------------------------- commands


def _show(ns) -> int:
    model = prepare_model(ns)  # first: a bad MODEL fails before torch is imported
    from targetsel.selection import select

    if is_adapter_argument(ns.query):
        from targetsel.cli.adapter_view import show_adapter

        return show_adapter(model, ns.query, ns.format, ns.rank, ns.model)
    with _progress("selecting"):
        sel = select(model, ns.query)
        names = sel.names()
    if ns.format == "list":
        if names:  # nothing selected prints nothing, not one empty name
            _out("\n".join(names))
    elif ns.format == "regex":
        if not names:
            raise _empty(sel)
        _out(sel.to_peft("regex"))
    elif ns.format in ("json", "yaml"):
        data = _show_data(ns.model, sel, names, ns.rank)
        _out(_dump(data, ns.format))
    else:
        _out_table(sel, ns.rank)
        if ns.hint:
            _demo_findings(model, sel)
    return 0


def _demo_findings(model, sel) -> None:
    """After the demo table: what `check` says about it, a line per finding — the point of the demo."""
    from targetsel.bridge.checks import check

    findings = check(model, sel)
    _out(f"\n`targetsel check demo {sel.query!r}` finds, before get_peft_model:")
    for f in findings:
        first = f.message.splitlines()[0].split(": ")[0].split(". ")[0]
        _out(f"  {f.severity:<7} [{f.code}] {first[:150]}")
    _out(
        "\nNext: `targetsel check demo 'linear & trainable'` for the full messages, "
        "`targetsel show demo 'linear & trainable - type:PLoRA - under:(type:PLoRA)'`, `targetsel --help`."
    )


def _check(ns) -> int:
    model = prepare_model(ns)  # first: a bad MODEL fails before peft is imported
    from targetsel.bridge.checks import check

    target = _read_peft_config(ns.target) if is_adapter_argument(ns.target) else ns.target
    with _progress("checking"):
        findings = check(model, target)
    errors = sum(f.severity == "error" for f in findings)
    if ns.format == "json":
        _out(_dump({"findings": [f.to_dict() for f in findings], "errors": errors,
                    "warnings": sum(f.severity == "warning" for f in findings)}, "json"))
    else:
        for f in findings:
            _out(f"{f.severity} [{f.code}] {f.message}\n")
        counts = {s: sum(f.severity == s for f in findings) for s in ("error", "warning", "info")}
        _out(", ".join(f"{n} {s}{'s' if n != 1 and s != 'info' else ''}" for s, n in counts.items()) if findings else "no findings")
    return 1 if errors else 0


def _patch(ns) -> int:
    from targetsel.errors import PreflightError
    from targetsel.bridge.patch import patch
    from targetsel.selection import select

    model = prepare_model(ns)  # first: the model says whether bitsandbytes is needed; reading the config imports peft
    config = _read_peft_config(ns.config)
    with _progress("patching"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", TargetselWarning)
        try:
            new = patch(config, select(model, ns.query), form=ns.form, strict=ns.strict)
        except PreflightError as exc:
            return refused(exc, "the config was not written")
    replay_warnings(caught)
    text = config_json(new)
    if ns.output:
        out = Path(ns.output)
        if out.is_dir() or not out.suffix:
            out.mkdir(parents=True, exist_ok=True)
            out = out / "adapter_config.json"
        out.write_text(text + "\n", encoding="utf-8")
        print(f"wrote {out} (target_modules={new.target_modules!r:.120})", file=sys.stderr)
    else:
        _out(text)
    return 0


# ---------------------------------------------------------------------------- helpers


def _show_data(model_spec: str, sel, names: list[str], rank: Optional[int]) -> dict:
    from targetsel.views.display import summary_rows

    res = sel.resolution()
    data = {
        "model": model_spec,
        "model_class": res.model_class,
        "modules_in_model": res.module_count,
        "query": sel.query,
        "count": len(names),
        "groups": summary_rows(res),  # the table's rows: pattern, count, class, shape, grad_state, params
        "names": names,
        "target_modules": sel.to_peft("auto") if names else None,
    }
    if rank is not None:
        data["rank"] = rank
        data["lora_params"] = sel.lora_params(rank)
    return data


def _out_table(sel, rank: Optional[int]) -> None:
    from targetsel.views import display

    r = rank or 16  # the table always shows what LoRA would add; --rank picks the rank
    if sys.stdout.isatty() and not os.environ.get("NO_COLOR"):
        from rich.console import Console

        Console().print(display.render_rich(sel.resolution(), r=r))
    else:
        _out(display.render_text(sel.resolution(), r=r))


def _empty(sel) -> TargetselError:
    from targetsel.views.diagnose import explain_empty
    from targetsel.errors import EmptySelectionError

    return EmptySelectionError(explain_empty(sel.resolution()))


def _error(exc: BaseException) -> None:
    print(f"targetsel: error: {exc}", file=sys.stderr)


def _internal_error(exc: BaseException) -> None:
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (raised at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    print(
        f"targetsel: internal error: {type(exc).__name__}: {exc}{where}\n"
        "This is a bug: please report it with the command line you ran.",
        file=sys.stderr,
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
