"""What the command line writes, and how: stdout for answers, stderr for notes and a spinner.

Shared by every verb (and by the modules that build models for them), so that none of them has to
import `commands.py`, which imports them.
"""

from __future__ import annotations

import logging
import sys
import threading
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


@contextmanager
def progress(what: str):
    """A spinner on stderr when the work takes more than a second and stderr is a terminal."""
    if not sys.stderr.isatty():
        yield
        return
    done = threading.Event()

    def spin():
        if done.wait(1.0):
            return
        frames = "|/-\\"
        i = 0
        while not done.wait(0.1):
            sys.stderr.write(f"\r{frames[i % 4]} {what}…")
            sys.stderr.flush()
            i += 1
        sys.stderr.write("\r" + " " * (len(what) + 4) + "\r")
        sys.stderr.flush()

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def dump(data, fmt: str) -> str:
    """`data` as stable JSON (sorted keys) or YAML."""
    import json

    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=True)
    import yaml

    return yaml.safe_dump(data, sort_keys=True, allow_unicode=True).rstrip("\n")
