"""What the command line writes, and how: stdout for answers, stderr for notes and a spinner.

Shared by every verb (and by the modules that build models for them), so that none of them has to
import `commands.py`, which imports them.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager

# Libraries imported on the way (peft imports bitsandbytes when installed) log warnings about their
# own optional kernels ("Failed to load CPU gemm_4bit_forward …") that say nothing about the user's
# model; on the command line they would read as part of the answer.
_QUIET_LOGGERS = ("bitsandbytes",)


def quiet_libraries() -> None:
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def out(text: str) -> None:
    sys.stdout.write(text + "\n")


def note(text: str) -> None:
    """A line on stderr that is not an error: what the command did besides answering (`--freeze`)."""
    print(f"targetsel: {text}", file=sys.stderr)


def refused(exc, nothing_done: str) -> int:
    """A `PreflightError`'s findings on stderr, then what was not done (`nothing_done`); exit code 1."""
    for f in getattr(exc, "findings", []):
        print(f"{f.severity} [{f.code}] {f.message}\n", file=sys.stderr)
    print(f"targetsel: {nothing_done}: fix the errors above.", file=sys.stderr)
    return 1


def replay_warnings(caught) -> None:
    """Warnings recorded while the work ran (under the spinner), each on a stderr line of its own."""
    for w in caught:
        print(f"warning {w.message}", file=sys.stderr)


_spinning = False  # rich draws one live display at a time: an inner progress() adds none


@contextmanager
def progress(what: str):
    """rich's spinner on stderr while the work runs — only when stderr is a terminal, so a pipe, a
    log file or a test never receives spinner frames (rich alone would draw one under FORCE_COLOR)."""
    global _spinning
    if _spinning or not sys.stderr.isatty():
        yield
        return
    from rich.console import Console
    from rich.text import Text

    _spinning = True
    try:  # Text: a model path such as `./runs/[a]` is not rich markup
        with Console(stderr=True).status(Text(f"{what}…")):
            yield
    finally:
        _spinning = False


def dump(data, fmt: str) -> str:
    """`data` as stable JSON (sorted keys) or YAML."""
    import json

    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=True)
    import yaml

    return yaml.safe_dump(data, sort_keys=True, allow_unicode=True).rstrip("\n")
