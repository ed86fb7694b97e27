"""The MODEL options every verb that builds a model shares, and the model they describe.

    add_model_options(parser)   # --model-class, --trust-remote-code, --freeze QUERY, --unfreeze QUERY
    model = prepare_model(args) # built on meta, then frozen/unfrozen in command-line order

A model built from `config.json` has every parameter trainable; the model people train has its
vision tower (or embeddings, or base) frozen first. `--freeze`/`--unfreeze` replay that before
anything is selected, so `check` sees what the trainer will see (the frozen-tower incident).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from targetsel.cli.terminal import note, progress, quiet_libraries
from targetsel.errors import SelectionError, TargetselError


class _GradStep(argparse.Action):
    """Appends (`freeze` | `unfreeze`, QUERY) to `grad_steps`, keeping the order of the command line."""

    def __call__(self, parser, namespace, values, option_string=None):
        steps = list(getattr(namespace, self.dest, None) or [])
        steps.append((self.const, values))
        setattr(namespace, self.dest, steps)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model options")
    group.add_argument("--model-class", metavar="CLASS", default=None,
                       help="the class to build (a transformers class or package.module:Class; "
                            "default: the config's architectures)")
    group.add_argument("--trust-remote-code", action="store_true",
                       help="run the model's own code (its config's auto_map), as transformers' trust_remote_code=True")
    group.add_argument("--no-quantize", action="store_true",
                       help="build the float model even when config.json has a quantization_config "
                            "(default: the quantized layers its checkpoint loads with, e.g. Linear4bit)")
    group.add_argument("--freeze", metavar="QUERY", dest="grad_steps", action=_GradStep, const="freeze", default=[],
                       help="set requires_grad=False on every parameter of the modules QUERY selects, before "
                            "selecting (repeatable; e.g. --freeze under:vision_tower)")
    group.add_argument("--unfreeze", metavar="QUERY", dest="grad_steps", action=_GradStep, const="unfreeze",
                       help="set requires_grad=True there (repeatable; applied in command-line order with --freeze)")


def prepare_model(args: argparse.Namespace):
    """The model `args.model` names, built (no weights), with `--freeze`/`--unfreeze` applied."""
    from targetsel.cli.loading import load_model

    quiet_libraries()
    with progress(f"building {args.model}"):
        model = load_model(args.model, getattr(args, "model_class", None),
                           trust_remote_code=getattr(args, "trust_remote_code", False),
                           quantize=not getattr(args, "no_quantize", False))
        from targetsel.model.index import get_index  # torch: only once there is a model

        for line in apply_grad_steps(model, getattr(args, "grad_steps", None) or []):
            note(line)
        get_index(model)  # the walk, under the spinner: the verb's first query is then cheap
    if getattr(args, "own_process", False):
        keep_bitsandbytes_out()
    return model


def keep_bitsandbytes_out() -> None:
    """Once the model is built without bitsandbytes, nothing the verb does needs it — but peft imports
    it whenever it is installed (peft/helpers.py, unconditionally): seconds (it pulls in
    torch._inductor) and log lines about its CPU kernels, for a model without one quantized layer.

    A None entry in sys.modules makes `import bitsandbytes` raise ImportError and `find_spec` return
    None, which peft and transformers read as "not installed". A model that uses it (a bitsandbytes
    quantization_config, a factory that builds Linear4bit) has imported it by now and keeps it. Only
    when the command owns its process (`main()` reading sys.argv): in a caller's process the entry
    would outlive the command and hide bitsandbytes from everything after it.
    """
    if "bitsandbytes" not in sys.modules:
        sys.modules["bitsandbytes"] = None


def apply_grad_steps(model, steps: Sequence[tuple[str, str]]) -> list[str]:
    """Each (`freeze` | `unfreeze`, query) in order, on the model as the previous steps left it; a
    line per step saying what changed. A query that selects nothing, or only modules without
    parameters, is an error: a typo must not pass for "nothing needed freezing"."""
    from targetsel.selection import select
    from targetsel.views.display import human

    lines = []
    for action, query in steps:
        option = f"--{action}"
        try:
            sel = select(model, query)
            modules = sel.modules()
        except TargetselError as exc:  # the query's own message (caret, did-you-mean), said to be this option's
            exc.args = (f"{option} {query!r}: {exc.args[0] if exc.args else exc}", *exc.args[1:])
            raise
        if not modules:
            from targetsel.views.diagnose import explain_empty

            raise SelectionError(f"{option} {query!r} selects no module: {explain_empty(sel.resolution())}")
        params = {id(p): p for module in modules.values() for p in module.parameters()}
        if not params:
            raise SelectionError(
                f"{option} {query!r} selects {len(modules)} module(s) ({', '.join(list(modules)[:3])}"
                f"{', …' if len(modules) > 3 else ''}) and none of them holds a parameter: nothing to {action}. "
                "Select the modules that own the weights (e.g. under:NAME, or linear)."
            )
        want = action == "unfreeze"  # the requires_grad value this step sets
        # integer (and packed quantized) parameters cannot require grad: torch raises on them
        changeable = [p for p in params.values() if not want or p.is_floating_point() or p.is_complex()]
        changed = [p for p in changeable if p.requires_grad != want]
        for p in changed:
            p.requires_grad_(want)
        elements = sum(p.numel() for p in changed)
        lines.append(f"{option} {query!r}: {len(modules)} module(s), {len(changed)} of {len(params)} parameter "
                     f"tensors ({human(elements)} elements) set requires_grad={want}")
    return lines
