"""`python -m targetsel`: the command line (with no arguments, the embedded demo)."""

import sys

from targetsel.cli.commands import main

sys.exit(main())
