"""The command line (`targetsel show|check|patch|export|check-adapter`) and loading models for it: the outer edge."""

from targetsel.cli.commands import main

__all__ = ["main"]
