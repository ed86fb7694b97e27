"""The one layer that imports peft: dry runs, verify, patch, audit, checks, exports.

Imported by whatever first needs PEFT's answer; an installed PEFT outside the tested range gets one
`TargetselWarning` then (`peft_support.py`).
"""

from targetsel.bridge.peft_support import warn_if_untested as _warn_if_untested

_warn_if_untested()
