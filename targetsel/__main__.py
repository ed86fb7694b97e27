"""`python -m targetsel`: the command line (with no arguments, the embedded demo)."""

import sys

from .cli import main

sys.exit(main())
