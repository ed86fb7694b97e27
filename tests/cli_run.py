"""Running the command line inside the test process, as the CLI test modules share it."""

from __future__ import annotations

from targetsel import cli


def main(argv, capsys) -> tuple[int, str, str]:
    """`targetsel ARGV` in this process: (exit code, stdout, stderr)."""
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err
